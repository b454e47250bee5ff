"""``gfx906-llm bench serve``: streaming load against a running OpenAI-compatible server.

For each concurrency ``c`` in ``--concurrency``, ``--num-prompts`` streaming ``/v1/completions``
requests (a prompt of ``--input-len`` common words, ``--output-len`` tokens with ``ignore_eos``,
greedy) run with at most ``c`` in flight (vLLM's ``--max-concurrency``). Per request: TTFT (send
to the first streamed text), TPOT (``(last - first chunk) / (completion_tokens - 1)``), the gaps
between chunks (ITL), end-to-end latency; token counts come from the server's ``usage``
(``stream_options.include_usage``). Per level: request and token throughput over the level's wall
time, and mean/p50/p90/p99 of each latency, as vLLM's ``benchmarks/benchmark_serving.py``.
Client: httpx (asyncio), with the OpenAI SSE wire format (``data: {...}`` lines, ``[DONE]``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import time
from typing import Any

from gfx906_llm.bench.common import check_positive, random_text_prompt, summarize

logger = logging.getLogger(__name__)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="server root (default %(default)s)")
    p.add_argument("--model", default=None, help="served model name (default: the first of /v1/models)")
    p.add_argument("--api-key", default=None, help="sent as 'Authorization: Bearer KEY'")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], help="in-flight request limits")
    p.add_argument("--num-prompts", type=int, default=32, help="requests per concurrency level (default 32)")
    p.add_argument("--input-len", type=int, default=64, help="prompt length in words (~tokens) (default 64)")
    p.add_argument("--output-len", type=int, default=128, help="generated tokens per request (default 128)")
    p.add_argument("--seed", type=int, default=0, help="prompt sampling seed")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout in seconds")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="write a PNG of throughput and latency against concurrency (needs matplotlib)")


async def _request(client, url: str, headers: dict, body: dict) -> dict[str, Any]:
    t0 = time.perf_counter()
    stamps: list[float] = []
    usage: dict | None = None
    error = None
    try:
        async with client.stream("POST", url, json=body, headers=headers) as r:
            if r.status_code != 200:
                error = f"HTTP {r.status_code}: {(await r.aread()).decode(errors='replace')[:300]}"
            else:
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    if any(c.get("text") for c in chunk.get("choices") or []):
                        stamps.append(time.perf_counter())
    except Exception as e:  # a failed request is counted, not fatal
        error = f"{type(e).__name__}: {e}"
    end = time.perf_counter()
    if error is None and not stamps:
        error = "no text streamed"
    out_tokens = (usage or {}).get("completion_tokens", len(stamps))
    return {"error": error, "start": t0, "end": end, "stamps": stamps, "output_tokens": out_tokens,
            "prompt_tokens": (usage or {}).get("prompt_tokens", 0)}


async def _level(client, url, headers, model, prompts, args, concurrency: int) -> dict[str, Any]:
    sem = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> dict:
        body = {"model": model, "prompt": prompt, "max_tokens": args.output_len, "temperature": 0.0,
                "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}
        async with sem:
            return await _request(client, url, headers, body)

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(p) for p in prompts))
    duration = time.perf_counter() - t0
    ok = [r for r in results if r["error"] is None]
    out_tok = sum(r["output_tokens"] for r in ok)
    in_tok = sum(r["prompt_tokens"] for r in ok)
    ttft = [r["stamps"][0] - r["start"] for r in ok]
    tpot = [(r["stamps"][-1] - r["stamps"][0]) / (r["output_tokens"] - 1) for r in ok if r["output_tokens"] > 1]
    itl = [b - a for r in ok for a, b in zip(r["stamps"], r["stamps"][1:])]
    errors = [r["error"] for r in results if r["error"] is not None]
    return {
        "concurrency": concurrency, "completed": len(ok), "failed": len(errors), "errors": errors[:5],
        "duration_s": duration, "prompt_tokens": in_tok, "output_tokens": out_tok,
        "requests_per_s": len(ok) / duration, "output_tokens_per_s": out_tok / duration,
        "total_tokens_per_s": (in_tok + out_tok) / duration,
        "ttft_ms": summarize(ttft, 1e3), "tpot_ms": summarize(tpot, 1e3), "itl_ms": summarize(itl, 1e3),
        "e2e_ms": summarize([r["end"] - r["start"] for r in ok], 1e3),
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    base = args.base_url.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=max(args.concurrency) + 4)
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as c:
        model = args.model
        try:
            if model is None:
                r = await c.get(f"{base}/v1/models", headers=headers)
                r.raise_for_status()
                model = r.json()["data"][0]["id"]
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as e:
            raise ValueError(f"--base-url {args.base_url}: cannot list the served models ({e})") from e
        url = f"{base}/v1/completions"
        rng = random.Random(args.seed)
        warm = await _request(c, url, headers, {"model": model, "prompt": random_text_prompt(rng, 8), "max_tokens": 2,
                                                "stream": True, "temperature": 0.0})
        if warm["error"]:
            raise ValueError(f"--base-url {args.base_url}: warm-up request failed: {warm['error']}")
        levels = []
        for conc in args.concurrency:
            prompts = [random_text_prompt(rng, args.input_len) for _ in range(args.num_prompts)]
            lvl = await _level(c, url, headers, model, prompts, args, conc)
            logger.info("concurrency %d: %.1f output tok/s, TTFT p50 %.1f ms, TPOT p50 %s ms", conc,
                        lvl["output_tokens_per_s"], lvl["ttft_ms"]["p50"] or float("nan"), lvl["tpot_ms"]["p50"])
            levels.append(lvl)
    return {"benchmark": "serve", "base_url": args.base_url, "model": model, "num_prompts": args.num_prompts,
            "input_len_words": args.input_len, "output_len": args.output_len, "levels": levels}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every concurrency level; writes ``--plot`` when given. Returns the JSON-able result.

    Raises:
        ValueError: a count < 1, an unreachable server, a failed warm-up request, or ``--plot``
            without matplotlib installed.
    """
    check_positive(num_prompts=args.num_prompts, input_len=args.input_len, output_len=args.output_len,
                   concurrency=min(args.concurrency))
    if args.plot:
        from gfx906_llm.bench.plot import require_matplotlib

        require_matplotlib()
    result = asyncio.run(_run(args))
    if args.plot:
        from gfx906_llm.bench.plot import plot_serve

        plot_serve(result, args.plot)
        result["plot"] = args.plot
    return result
