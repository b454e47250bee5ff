"""GPU time of one batch-1 decode step by kernel (torch profiler, eager steps); prints JSON.

    python benchmarks/profile_step.py MODEL [--steps 20] [--context 200]

The graphs replay the same kernels; the eager step only adds launch gaps, which the profiler's
device times leave out. Rows: kernel name, microseconds per step, launches per step.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.profiler import ProfilerActivity, profile

from gfx906_llm.config import EngineConfig
from gfx906_llm.engine.engine import LLMEngine
from gfx906_llm.sampling_params import SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--context", type=int, default=200)
    a = ap.parse_args()
    engine = LLMEngine(EngineConfig(model=a.model, max_model_len=2048, max_num_seqs=8, enforce_eager=True))
    sp = SamplingParams(temperature=0.0, max_tokens=a.steps + 1, ignore_eos=True)

    def start(tag):
        engine.add_request(tag, [1000 + i for i in range(a.context)], sp)
        engine.step()  # prefill (and the first token)
        torch.cuda.synchronize()

    def finish():
        while engine.has_unfinished_requests():
            engine.step()

    start("warm")
    finish()
    start("prof")
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        finish()
    rows = [(e.key[:100], e.device_time_total / a.steps, e.count / a.steps) for e in prof.key_averages()]
    rows = [r for r in rows if r[1] > 0]
    rows.sort(key=lambda r: -r[1])
    total = sum(r[1] for r in rows)
    print(json.dumps({"model": a.model, "gpu_us_per_step": round(total, 1)}))
    for n, us, c in rows[:22]:
        print(f"{us:8.1f} us {c:6.2f}x  {n}")


if __name__ == "__main__":
    main()
