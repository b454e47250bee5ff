"""Shared pieces of the bench commands: percentile summaries, random prompts, JSON output."""

from __future__ import annotations

import json
import math
import os
import random
import sys
from typing import Any, Sequence

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of a non-empty sequence."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of an empty sequence")
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values: Sequence[float], scale: float = 1.0) -> dict[str, float | int | None]:
    """``{"count", "mean", "min", "max", "p50", "p90", "p99"}`` of ``values * scale`` (None when empty)."""
    vals = [v * scale for v in values]
    if not vals:
        return {"count": 0, "mean": None, "min": None, "max": None, **{f"p{q}": None for q in PERCENTILES}}
    return {"count": len(vals), "mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals),
            **{f"p{q}": percentile(vals, q) for q in PERCENTILES}}


def random_token_prompts(rng: random.Random, n: int, length: int, vocab: int) -> list[list[int]]:
    """``n`` prompts of ``length`` token ids drawn uniformly from ``[0, vocab)`` (vLLM's random dataset)."""
    return [[rng.randrange(vocab) for _ in range(length)] for _ in range(n)]


_WORDS = ("the of and to in is was for on that with as by at from his her an which or this be are "
          "have not had one were all we when there can more would so what their time if about into "
          "than them only some could new these two may first then do any like my now over such our").split()


def random_text_prompt(rng: random.Random, words: int) -> str:
    """A prompt of ``words`` common English words (about one token each in BPE vocabularies)."""
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def check_positive(**kw: int) -> None:
    """Raises ValueError naming the first argument that is not >= 1."""
    for name, v in kw.items():
        if v is None or v < 1:
            raise ValueError(f"--{name.replace('_', '-')} {v}: must be >= 1")


def emit(result: dict[str, Any], output_json: str | None) -> None:
    """Print ``result`` as JSON on stdout and write it to ``output_json`` when given."""
    text = json.dumps(result, indent=2)
    if output_json:
        os.makedirs(os.path.dirname(os.path.abspath(output_json)), exist_ok=True)
        with open(output_json, "w") as f:
            f.write(text + "\n")
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def engine_info(engine) -> dict[str, Any]:
    """Model, platform and dtype of an ``LLMEngine`` for the JSON header."""
    return {"model": engine.model_name, "platform": engine.platform.kind, "arch": engine.platform.arch,
            "dtype": str(engine.loaded.dtype).replace("torch.", ""), "max_model_len": engine.max_model_len}
