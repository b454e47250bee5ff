"""The paged attention layer: writes this step's K/V into the cache, then attends over it.

The kernels come from the platform's kernel table (``gfx906_llm.platform.get_op``): Triton on
GPUs, the plain-torch reference on the CPU.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from gfx906_llm.attention.metadata import get_attention_metadata
from gfx906_llm.platform import Platform, get_op


class Attention(nn.Module):
    """Multi-head / grouped-query attention over the paged KV cache.

    ``forward(q [T, Hq*D], k [T, Hkv*D], v [T, Hkv*D]) -> [T, Hq*D]``. The engine binds the
    layer's cache with ``bind_kv_cache(k_cache, v_cache, platform)`` before the first step.
    """

    def __init__(self, num_heads: int, head_dim: int, num_kv_heads: int, scale: float,
                 sliding_window: int | None = None, soft_cap: float | None = None):
        super().__init__()
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}")
        self.num_heads, self.head_dim, self.num_kv_heads = num_heads, head_dim, num_kv_heads
        self.scale = scale
        self.sliding_window = sliding_window
        self.soft_cap = soft_cap
        self.k_cache: torch.Tensor | None = None
        self.v_cache: torch.Tensor | None = None

    def bind_kv_cache(self, k_cache: torch.Tensor, v_cache: torch.Tensor, platform: Platform) -> None:
        self.k_cache, self.v_cache = k_cache, v_cache
        self._write = get_op("reshape_and_cache", platform)
        self._attend = get_op("paged_attention", platform)
        # the Triton kernel takes the step's host-known maxima (no device sync, graph-capturable)
        self._pass_max = "max_seq_len" in inspect.signature(self._attend).parameters

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        meta = get_attention_metadata()
        T = q.shape[0]
        q = q.view(T, self.num_heads, self.head_dim)
        k = k.view(T, self.num_kv_heads, self.head_dim)
        v = v.view(T, self.num_kv_heads, self.head_dim)
        self._write(k, v, self.k_cache, self.v_cache, meta.slot_mapping)
        extra = {"max_query_len": meta.max_query_len, "max_seq_len": meta.max_seq_len} if self._pass_max else {}
        out = self._attend(q, self.k_cache, self.v_cache, meta.query_start_loc, meta.seq_lens, meta.block_table,
                           self.scale, sliding_window=self.sliding_window, soft_cap=self.soft_cap, **extra)
        return out.view(T, self.num_heads * self.head_dim)
