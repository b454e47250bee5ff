"""``gfx906-llm bench latency``: batches of random-token prompts through an in-process LLMEngine.

Each iteration adds ``--batch-size`` requests of ``--input-len`` random token ids and generates
exactly ``--output-len`` tokens (greedy, ``ignore_eos``), stepping the engine until all finish.
Measured per iteration: end-to-end latency (add to last token); per request: time to first token
(TTFT, add to the step that returned the first token) and time per output token (TPOT,
``(last - first token time) / (output_len - 1)``). Warm-up iterations are not counted. As vLLM's
``benchmarks/benchmark_latency.py``, plus TTFT/TPOT.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from typing import Any

from gfx906_llm.bench.common import check_positive, engine_info, percentile, random_token_prompts, summarize

logger = logging.getLogger(__name__)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-len", type=int, default=32, help="prompt tokens per request (default 32)")
    p.add_argument("--output-len", type=int, default=128, help="generated tokens per request (default 128)")
    p.add_argument("--batch-size", type=int, default=8, help="requests per iteration (default 8)")
    p.add_argument("--num-iters", type=int, default=10, help="measured iterations (default 10)")
    p.add_argument("--num-iters-warmup", type=int, default=2, help="unmeasured iterations first (default 2)")


def run_iteration(engine, prompts: list[list[int]], output_len: int, tag: str) -> dict[str, Any]:
    """Add ``prompts`` (greedy, ``output_len`` tokens, ignore_eos) and step the engine until they
    finish: ``{latency (s), ttft [s per request], tpot [s per request], tokens}``."""
    from gfx906_llm.sampling_params import SamplingParams

    sp = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
    t0 = time.perf_counter()
    ids = [f"{tag}-{i}" for i in range(len(prompts))]
    for rid, p in zip(ids, prompts):
        engine.add_request(rid, p, sp)
    first: dict[str, float] = {}
    done: dict[str, tuple[float, int]] = {}
    while engine.has_unfinished_requests():
        outs = engine.step()
        now = time.perf_counter()
        for o in outs:
            n = len(o.outputs[0].token_ids)
            if n and o.request_id not in first:
                first[o.request_id] = now
            if o.finished:
                done[o.request_id] = (now, n)
    end = time.perf_counter()
    ttft = [first[r] - t0 for r in ids]
    tpot = [(done[r][0] - first[r]) / (done[r][1] - 1) for r in ids if done[r][1] > 1]
    return {"latency": end - t0, "ttft": ttft, "tpot": tpot, "tokens": sum(done[r][1] for r in ids)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-able result.

    Raises:
        ValueError: a count < 1, or ``input_len + output_len`` beyond the engine's context length.
    """
    check_positive(input_len=args.input_len, output_len=args.output_len, batch_size=args.batch_size,
                   num_iters=args.num_iters)
    if args.num_iters_warmup < 0:
        raise ValueError(f"--num-iters-warmup {args.num_iters_warmup}: must be >= 0")
    from gfx906_llm.config import EngineConfig
    from gfx906_llm.engine.engine import LLMEngine

    engine = LLMEngine(EngineConfig.from_cli_args(args))
    if args.input_len + args.output_len > engine.max_model_len:
        raise ValueError(f"--input-len {args.input_len} + --output-len {args.output_len} exceeds the context "
                         f"length {engine.max_model_len}")
    vocab = min(engine.model_config.vocab_size, len(engine.tokenizer))
    rng = random.Random(args.seed)
    iters = []
    for i in range(args.num_iters_warmup + args.num_iters):
        prompts = random_token_prompts(rng, args.batch_size, args.input_len, vocab)
        res = run_iteration(engine, prompts, args.output_len, f"it{i}")
        if i >= args.num_iters_warmup:
            iters.append(res)
        logger.info("iteration %d%s: %.3f s", i, " (warm-up)" if i < args.num_iters_warmup else "", res["latency"])
    lat = [r["latency"] for r in iters]
    avg = sum(lat) / len(lat)
    return {
        "benchmark": "latency", **engine_info(engine),
        "input_len": args.input_len, "output_len": args.output_len, "batch_size": args.batch_size,
        "num_iters": args.num_iters, "num_iters_warmup": args.num_iters_warmup,
        "avg_latency_s": avg,
        "latencies_s": lat,
        "latency_percentiles_s": {str(q): percentile(lat, q) for q in (10, 25, 50, 75, 90, 99)},
        "ttft_ms": summarize([t for r in iters for t in r["ttft"]], 1e3),
        "tpot_ms": summarize([t for r in iters for t in r["tpot"]], 1e3),
        "output_tokens_per_s": sum(r["tokens"] for r in iters) / sum(lat),
    }
