"""``gfx906-llm bench throughput``: offline ``LLM.generate`` over ``--num-prompts`` random-token
prompts of ``--input-len`` tokens, each generating exactly ``--output-len`` tokens (``ignore_eos``),
all submitted at once (continuous batching decides the batches). As vLLM's
``benchmarks/benchmark_throughput.py`` (random dataset): requests/s, output tokens/s and total
(prompt + output) tokens/s over the wall time of the generate call. A warm-up pass first runs
as many prompts of the same length for 4 tokens, so that Triton's JIT compilation of the kernel
variants this batch shape needs is not timed (``--no-warmup`` skips it).
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from gfx906_llm.bench.common import check_positive, engine_info, random_token_prompts


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-prompts", type=int, default=64, help="requests (default 64)")
    p.add_argument("--input-len", type=int, default=128, help="prompt tokens per request (default 128)")
    p.add_argument("--output-len", type=int, default=128, help="generated tokens per request (default 128)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="skip the warm-up pass (the same prompts' count and length, 4 output tokens)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-able result.

    Raises:
        ValueError: a count < 1, or ``input_len + output_len`` beyond the engine's context length.
    """
    check_positive(num_prompts=args.num_prompts, input_len=args.input_len, output_len=args.output_len)
    from gfx906_llm.config import EngineConfig
    from gfx906_llm.llm import LLM
    from gfx906_llm.sampling_params import SamplingParams

    llm = LLM.from_engine_config(EngineConfig.from_cli_args(args))
    engine = llm.engine
    if args.input_len + args.output_len > engine.max_model_len:
        raise ValueError(f"--input-len {args.input_len} + --output-len {args.output_len} exceeds the context "
                         f"length {engine.max_model_len}")
    vocab = min(engine.model_config.vocab_size, len(engine.tokenizer))
    rng = random.Random(args.seed)
    if args.warmup:  # same batch shape, 4 tokens: Triton compiles every variant the run will need
        llm.generate(random_token_prompts(rng, args.num_prompts, args.input_len, vocab),
                     SamplingParams(temperature=0.0, max_tokens=min(4, args.output_len), ignore_eos=True))
    prompts = random_token_prompts(rng, args.num_prompts, args.input_len, vocab)
    sp = SamplingParams(temperature=args.temperature, max_tokens=args.output_len, ignore_eos=True,
                        seed=args.seed if args.temperature > 0 else None)
    t0 = time.perf_counter()
    outs = llm.generate(prompts, sp)
    elapsed = time.perf_counter() - t0
    prompt_tokens = sum(len(o.prompt_token_ids) for o in outs)
    output_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return {
        "benchmark": "throughput", **engine_info(engine),
        "num_prompts": args.num_prompts, "input_len": args.input_len, "output_len": args.output_len,
        "max_num_seqs": engine.config.max_num_seqs,
        "elapsed_s": elapsed,
        "prompt_tokens": prompt_tokens, "output_tokens": output_tokens,
        "requests_per_s": len(outs) / elapsed,
        "output_tokens_per_s": output_tokens / elapsed,
        "total_tokens_per_s": (prompt_tokens + output_tokens) / elapsed,
    }
