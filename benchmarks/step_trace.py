"""Per-step trace of the engine at a few batch sizes: which steps replay a graph, how many
requests each step schedules, and the wall time of each kind per quarter of the run (q0..q3);
prints JSON.

    python benchmarks/step_trace.py MODEL [--batch-sizes 24 32 48] [--input-len 128] [--output-len 64]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict

from gfx906_llm.config import EngineConfig
from gfx906_llm.engine.engine import LLMEngine
from gfx906_llm.sampling_params import SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[24, 32, 48])
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    a = ap.parse_args()
    # synchronous steps: the trace wraps ModelRunner.execute, which async scheduling bypasses
    engine = LLMEngine(EngineConfig(model=a.model, max_model_len=2048, max_num_seqs=max(a.batch_sizes),
                                    async_scheduling=False))
    runner = engine.runner
    last = {}
    run, execute = runner.graphs.run, runner.execute
    runner.graphs.run = lambda sched: last.__setitem__("graph", True) or run(sched)

    def traced(sched):
        last.update(graph=False, n=len(sched.scheduled), tokens=sched.total_num_scheduled_tokens)
        t0 = time.perf_counter()
        out = execute(sched)
        last["execute_ms"] = 1e3 * (time.perf_counter() - t0)
        return out

    runner.execute = traced
    res = {}
    vocab = min(engine.model_config.vocab_size, len(engine.tokenizer))
    for b in [a.batch_sizes[0]] + a.batch_sizes:  # the first size twice: warm-up
        rng = random.Random(b)
        sp = SamplingParams(temperature=0.0, max_tokens=a.output_len, ignore_eos=True)
        for i in range(b):
            engine.add_request(f"{b}-{i}-{time.monotonic()}", [rng.randrange(vocab) for _ in range(a.input_len)], sp)
        kinds = defaultdict(lambda: [0, 0.0, 0.0])
        step = 0
        while engine.has_unfinished_requests():
            step += 1
            last.clear()
            t0 = time.perf_counter()
            engine.step()
            wall = 1e3 * (time.perf_counter() - t0)
            if not last:
                continue
            k = f"n{last['n']}_t{last['tokens']}_{'graph' if last['graph'] else 'eager'}_q{4 * step // (a.output_len + 4)}"
            kinds[k][0] += 1
            kinds[k][1] += wall
            kinds[k][2] += last["execute_ms"]
        res[b] = {k: {"steps": v[0], "wall_ms": round(v[1] / v[0], 3), "execute_ms": round(v[2] / v[0], 3)}
                  for k, v in sorted(kinds.items(), key=lambda kv: -kv[1][0])[:10]}
        print(b, json.dumps(res[b]), flush=True)


if __name__ == "__main__":
    main()
