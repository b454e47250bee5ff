"""GPU check of decode-graph replay on a random mid-sized Llama; prints JSON.

    python benchmarks/graph_check.py [--dir /tmp/graph_check_model]

Writes a random-weight Llama (``bench_fused_ops.make_model``: 16 layers of 2048, fp16), then: greedy tokens and log-probs with graphs vs ``enforce_eager`` for 6 requests of
different prompt and output lengths (the batch shrinks through several captured sizes); the
capture time; and batch-1 decode time per token with and without graphs.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from bench_fused_ops import make_model
from e2e_decode import replay_ms
from gfx906_llm.llm import LLM
from gfx906_llm.sampling_params import SamplingParams


def greedy(llm: LLM, prompts, lens):
    """Per request: (token ids, their log-probs, the gap between the best two log-probs)."""
    params = [SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True, logprobs=2) for n in lens]
    outs = llm.generate(prompts, params)
    res = []
    for o in outs:
        c = o.outputs[0]
        gaps = [sorted((x.logprob for x in lp.values()), reverse=True)[:2] for lp in c.logprobs]
        res.append((c.token_ids, [lp[t].logprob for lp, t in zip(c.logprobs, c.token_ids)],
                    [g[0] - g[1] if len(g) > 1 else 99.0 for g in gaps]))
    return res


def divergence(got, ref) -> list[dict]:
    """Where each graph run first differs from eager: the step, and eager's top-2 gap there
    (a near-tie if small), and the largest log-prob difference before it."""
    out = []
    for (ga, gl, _), (ra, rl, rg) in zip(got, ref):
        i = next((k for k, (x, y) in enumerate(zip(ga, ra)) if x != y), None)
        before = max((abs(a - b) for a, b in zip(gl[:i], rl[:i])), default=0.0)
        out.append({"first_diff": i, "eager_top2_gap_there": None if i is None else rg[i],
                    "max_lp_diff_before": before})
    return out


def profile_step(llm: LLM, n: int = 20) -> list[tuple[str, float]]:
    """GPU microseconds per eager batch-1 decode step, by kernel name (top 15)."""
    from torch.profiler import ProfilerActivity, profile

    graphs, llm.engine.runner.graphs = llm.engine.runner.graphs, None
    sp = SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
    llm.generate([[9] * 200], sp)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        llm.generate([[9] * 200], sp)
    llm.engine.runner.graphs = graphs
    rows = [(e.key[:90], e.device_time_total / n, e.count // n) for e in prof.key_averages()]
    rows.sort(key=lambda r: -r[1])
    return rows[:15]


def tpot(llm: LLM, n: int = 128) -> float:
    sp = SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
    llm.generate([[5] * 64], sp)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    llm.generate([[7] * 64], sp)
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/graph_check_model")
    args = ap.parse_args()
    make_model(args.dir)
    rng = random.Random(0)
    prompts = [[rng.randrange(3, 32000) for _ in range(rng.randrange(5, 300))] for _ in range(6)]
    lens = [40, 33, 17, 9, 5, 2]
    res = {}
    eager = LLM(args.dir, max_model_len=2048, enforce_eager=True, gpu_memory_utilization=0.4)
    ref = greedy(eager, prompts, lens)
    res["eager_tpot_ms"] = 1e3 * tpot(eager)
    del eager
    torch.cuda.empty_cache()
    t0 = time.perf_counter()
    llm = LLM(args.dir, max_model_len=2048, gpu_memory_utilization=0.4, max_num_seqs=64)
    res["start_with_capture_s"] = time.perf_counter() - t0
    got = greedy(llm, prompts, lens)
    res["same_tokens"] = [g[0] == r[0] for g, r in zip(got, ref)]
    res["divergence"] = divergence(got, ref)
    res["graph_tpot_ms"] = 1e3 * tpot(llm)
    for b in (1, 8, 32, 64):  # the replay alone: what the GPU spends per step of b requests
        res[f"replay_only_ms_b{b}"] = replay_ms(llm.engine.runner.graphs.graphs[b], 50)
    res["replay_only_ms"] = res["replay_only_ms_b1"]
    res["host_overhead_ms"] = res["graph_tpot_ms"] - res["replay_only_ms"]
    res["profile_us_per_step"] = profile_step(llm)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
