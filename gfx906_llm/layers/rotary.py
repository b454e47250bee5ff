"""Rotary position embedding (RoFormer, Su et al. 2021), NeoX / Hugging Face rotate-half style.

Scaling types: ``default``, ``linear`` (position interpolation) and ``llama3`` (Meta's
frequency-dependent scaling, as in transformers' ``_compute_llama3_parameters``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn



def _inv_freq(rotary_dim: int, base: float, scaling: dict[str, Any] | None) -> torch.Tensor:
    inv = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim))
    if not scaling:
        return inv
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        return inv / float(scaling["factor"])
    if kind == "llama3":
        factor = float(scaling["factor"])
        low = float(scaling.get("low_freq_factor", 1.0))
        high = float(scaling.get("high_freq_factor", 4.0))
        old_len = float(scaling["original_max_position_embeddings"])
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(medium, smoothed, scaled)
    raise ValueError(f"unsupported rope scaling type {kind!r}; supported: default, linear, llama3")


class RotaryEmbedding(nn.Module):
    """The rotary tables of one setting: the ``cos_sin_cache`` buffer, ``[max_position, head_dim]``
    fp32 (cos | sin halves), which the attention layer's fused q/k rotary + KV-cache write
    (``kernels/gfx906/qkv_rope_cache.py``, ``kernels.reference.qkv_rope_cache``) reads at each
    token's position."""

    def __init__(self, head_dim: int, max_position: int, base: float, scaling: dict[str, Any] | None = None):
        super().__init__()
        self.head_dim = head_dim
        inv = _inv_freq(head_dim, base, scaling)
        t = torch.arange(max_position, dtype=torch.float64)
        freqs = torch.outer(t, inv)
        cache = torch.cat([freqs.cos(), freqs.sin()], dim=-1).float()
        self.register_buffer("cos_sin_cache", cache, persistent=False)


_ROPE_CACHE: dict[tuple, RotaryEmbedding] = {}


def get_rope(head_dim: int, max_position: int, base: float, scaling: dict[str, Any] | None = None) -> RotaryEmbedding:
    """A shared RotaryEmbedding per distinct setting (one cos/sin table for all layers, on the
    current default device)."""
    key = (head_dim, max_position, base, tuple(sorted((scaling or {}).items())), str(torch.get_default_device()))
    rope = _ROPE_CACHE.get(key)
    if rope is None:
        rope = _ROPE_CACHE[key] = RotaryEmbedding(head_dim, max_position, base, scaling)
    return rope
