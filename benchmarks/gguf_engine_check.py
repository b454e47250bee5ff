"""GPU engine on GGUF blocks (fused kernels, q8_1 integer dots, merged shards, fp16) against the
CPU path (weights dequantised at load, fp32) on a random GGUF model; prints JSON. With
``--format gptq`` the same on a random GPTQ 4-bit model (W4A16 GEMV with split-K partials summed
by their consumers, fused q/k/v rotary + cache write, decode graphs).

    python benchmarks/gguf_engine_check.py [--shape tiny] [--format gguf-q4_k|gptq] [--dir /tmp/gguf_check]

Teacher-forced log-probabilities of 3 random prompts (60 tokens, in chunks 17 + 1 + 42 so that
prefill, decode-sized and chunked steps all run) and greedy continuations of 24 tokens.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys

import torch

from gfx906_llm.llm import LLM
from gfx906_llm.sampling_params import SamplingParams
from tests.helpers import engine_logits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="tiny")
    ap.add_argument("--dir", default="/tmp/gguf_check")
    ap.add_argument("--format", default="gguf-q4_k", choices=["gguf-q4_k", "gptq", "fp16"])
    a = ap.parse_args()
    subprocess.run([sys.executable, "-m", "gfx906_llm.bench.random_model", "--format", a.format, "--shape", a.shape,
                    "--out", a.dir, "--overwrite"], check=True, capture_output=True)
    rng = random.Random(0)
    prompts = [[rng.randrange(300, 500) for _ in range(60)] for _ in range(3)]
    res = {"format": a.format}
    outs = {}
    for dev in ("cuda", "cpu"):
        llm = LLM(a.dir, device=dev, max_model_len=256, gpu_memory_utilization=0.2, kv_cache_memory_bytes=1 << 26,
                  **({"dtype": "float32"} if dev == "cpu" else {}))
        lps = [torch.log_softmax(engine_logits(llm, p, [17, 1, 42]), -1) for p in prompts]
        gen = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))
        outs[dev] = (lps, [o.outputs[0].token_ids for o in gen])
        del llm
    diffs = [float((g - c).abs().max()) for g, c in zip(outs["cuda"][0], outs["cpu"][0])]
    top1 = [float((g.argmax(-1) == c.argmax(-1)).float().mean()) for g, c in zip(outs["cuda"][0], outs["cpu"][0])]
    res.update(max_abs_logprob_diff=diffs, top1_agreement=top1,
               greedy_same=[x == y for x, y in zip(outs["cuda"][1], outs["cpu"][1])])
    print(json.dumps(res))


if __name__ == "__main__":
    main()
