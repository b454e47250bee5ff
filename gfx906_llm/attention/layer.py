"""The paged attention layer: from the QKV projection's output, writes this step's rotated K and V
into the cache, then attends over it.

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

    ``forward(qkv [T, (Hq + 2 Hkv) * D], positions [T], cos_sin_cache) -> [T, Hq * D]``: q/k norms
    (optional), rotary, the K/V cache write and attention. The engine binds the layer's cache with
    ``bind_kv_cache(k_cache, v_cache, platform)`` before the first step.
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
        self._qkv_rope_cache = get_op("qkv_rope_cache", platform)
        self._attend = get_op("paged_attention", platform)
        # the Triton kernel takes the step's host-known maxima (no device sync, graph-capturable)
        self._pass_max = "max_seq_len" in inspect.signature(self._attend).parameters

    def forward(self, qkv, positions: torch.Tensor, cos_sin_cache: torch.Tensor,
                q_norm_weight: torch.Tensor | None = None, k_norm_weight: torch.Tensor | None = None,
                norm_eps: float = 1e-6, norm_offset: float = 0.0) -> torch.Tensor:
        """The whole block after the QKV projection: ``qkv [T, (Hq + 2 Hkv) * D]`` (a tensor or the
        projection's ``SplitKPartials``) -> optional per-head q/k RMSNorm (weights ``[D]``, Gemma's
        ``norm_offset=1.0``) -> rotary at ``positions [T]`` (``cos_sin_cache [max_position, D]``
        fp32) -> k, v into the cache -> attention. One fused launch before attention on GPUs
        (``kernels/gfx906/qkv_rope_cache.py``). Returns ``[T, Hq * D]``."""
        meta = get_attention_metadata()
        q = self._qkv_rope_cache(qkv, positions, cos_sin_cache, self.k_cache, self.v_cache, meta.slot_mapping,
                                 self.num_heads, self.num_kv_heads, self.head_dim, q_norm_weight=q_norm_weight,
                                 k_norm_weight=k_norm_weight, norm_eps=norm_eps, norm_offset=norm_offset)
        T = q.shape[0]
        extra = {"max_query_len": meta.max_query_len, "max_seq_len": meta.max_seq_len} if self._pass_max else {}
        # an uninitialised output: every row belongs to a request here (graph padding rows are dummy
        # requests), so the kernel's zero-fill of rows past query_start_loc[-1] would be a wasted launch
        out = self._attend(q, self.k_cache, self.v_cache, meta.query_start_loc, meta.seq_lens, meta.block_table,
                           self.scale, sliding_window=self.sliding_window, soft_cap=self.soft_cap,
                           out=torch.empty_like(q), **extra)
        return out.view(T, self.num_heads * self.head_dim)
