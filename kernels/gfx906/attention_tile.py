"""One KV tile of the unified paged attention's online softmax, and the early load of a
segment's first tile (Triton jit helpers of ``attention.unified_attention_kernel``).

Online softmax: FlashAttention-2 (Dao 2023, arXiv:2307.08691), fp32, ``exp2`` with the scale and
log2(e) folded into ``qk_scale``; the cache is paged (vLLM PagedAttention, Kwon et al. 2023):
key position ``n`` of a request lives in block ``block_table[n // BLOCK_SIZE]``, slot
``n % BLOCK_SIZE``.

Early tile (``early_tile``, with programmatic dependent launch, ``pdl.py``): the keys below
``ctx`` (the request's context before this step) were written by earlier steps, so the block
table entries and the K/V rows of a segment's first tile can be read before ``griddepcontrol.wait``
while the QKV projection and ``qkv_rope_cache`` still run; only this step's rows (keys >= ctx,
written by ``qkv_rope_cache`` just before) are loaded after the wait, and ``_tile(PRE=True)``
merges the two.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _load_v(v_ptr, v_off, offs_d, n_ok, d_ok, MASK: tl.constexpr):
    if MASK:
        return tl.load(v_ptr + v_off[:, None] + offs_d[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0)
    return tl.load(v_ptr + v_off[:, None] + offs_d[None, :])  # [N, D]


@triton.jit
def _load_k(k_ptr, k_off, offs_d, n_ok, d_ok, MASK: tl.constexpr, USE_DOT: tl.constexpr):
    """K rows at ``k_off [N]``: ``[D, N]`` (tl.dot's B operand) with USE_DOT, else ``[N, D]``."""
    if USE_DOT:
        if MASK:
            k = tl.load(k_ptr + k_off[None, :] + offs_d[:, None], mask=n_ok[None, :] & d_ok[:, None], other=0.0)
        else:
            k = tl.load(k_ptr + k_off[None, :] + offs_d[:, None])
    else:
        if MASK:
            k = tl.load(k_ptr + k_off[:, None] + offs_d[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        else:
            k = tl.load(k_ptr + k_off[:, None] + offs_d[None, :])
    return k


@triton.jit
def early_tile(k_ptr, v_ptr, bt_row, k_head, v_head, stride_kb, stride_ks, stride_vb, stride_vs, t, live, seq_len,
               ctx, HEAD: tl.constexpr, HEAD_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
               USE_DOT: tl.constexpr):
    """(block ids [N] int64, K, V) of KV tile ``t`` where ``live``: the K/V rows of keys below
    ``ctx`` (zero elsewhere), the block ids of keys below ``seq_len``. Reads no row of this step."""
    offs_n = t * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_PAD)
    d_ok = offs_d < HEAD
    n_end = tl.where(live, seq_len, 0)
    blk = tl.load(bt_row + offs_n // BLOCK_SIZE, mask=offs_n < n_end, other=0).to(tl.int64)
    slot = offs_n % BLOCK_SIZE
    old = offs_n < tl.minimum(n_end, ctx)
    k = _load_k(k_ptr, blk * stride_kb + slot * stride_ks + k_head, offs_d, old, d_ok, True, USE_DOT)
    v = _load_v(v_ptr, blk * stride_vb + slot * stride_vs + v_head, offs_d, old, d_ok, True)
    return blk, k, v


@triton.jit
def _tile(acc, m_i, l_i, q, t, k_ptr, v_ptr, bt_row, k_head, v_head,
          stride_kb, stride_ks, stride_vb, stride_vs, row_pos, seq_len, window, qk_scale, soft_cap,
          HEAD: tl.constexpr, HEAD_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr,
          BLOCK_N: tl.constexpr, MASKED: tl.constexpr, USE_WINDOW: tl.constexpr,
          USE_SOFTCAP: tl.constexpr, USE_DOT: tl.constexpr,
          PRE: tl.constexpr = False, blk_pre=None, k_pre=None, v_pre=None, ctx=None):
    """One KV tile of the online softmax; MASKED tiles check causality, window and seq end.
    ``PRE`` (MASKED only): the block ids and the rows of keys below ``ctx`` come from
    ``early_tile``; only the rows of keys >= ``ctx`` are loaded here."""
    offs_n = t * BLOCK_N + tl.arange(0, BLOCK_N)  # [N] key positions
    offs_d = tl.arange(0, HEAD_PAD)
    d_ok = offs_d < HEAD
    if MASKED:
        n_ok = offs_n < seq_len
        if PRE:
            blk = blk_pre
        else:
            blk = tl.load(bt_row + offs_n // BLOCK_SIZE, mask=n_ok, other=0).to(tl.int64)
    else:
        n_ok = offs_n >= 0
        blk = tl.load(bt_row + offs_n // BLOCK_SIZE).to(tl.int64)
    slot = offs_n % BLOCK_SIZE
    k_off = blk * stride_kb + slot * stride_ks + k_head  # [N]
    v_off = blk * stride_vb + slot * stride_vs + v_head
    if PRE:
        new = n_ok & (offs_n >= ctx)  # this step's rows
        k = _load_k(k_ptr, k_off, offs_d, new, d_ok, True, USE_DOT)
        if USE_DOT:
            k = tl.where(new[None, :], k, k_pre)
        else:
            k = tl.where(new[:, None], k, k_pre)
    else:
        k = _load_k(k_ptr, k_off, offs_d, n_ok, d_ok, MASKED or HEAD != HEAD_PAD, USE_DOT)
    if USE_DOT:
        s = tl.dot(q, k)  # [M, N] fp32 (k is [D, N])
    else:  # FMA over an [M, N, D] broadcast, D contiguous per lane: M may be < 16
        s = tl.sum(q[:, None, :] * k.to(tl.float32)[None, :, :], axis=2)
    if USE_SOFTCAP:
        x = s * (qk_scale / soft_cap)
        s = (soft_cap * LOG2E) * (1.0 - 2.0 / (tl.math.exp2(x * (2.0 * LOG2E)) + 1.0))
    else:
        s = s * qk_scale
    if MASKED:
        vis = offs_n[None, :] <= row_pos[:, None]
        if USE_WINDOW:
            vis = vis & (offs_n[None, :] > row_pos[:, None] - window)
        s = tl.where(vis, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = m_new
    p = tl.math.exp2(s - m_use[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    if PRE:
        v = tl.where(new[:, None], _load_v(v_ptr, v_off, offs_d, new, d_ok, True), v_pre)
    else:
        v = _load_v(v_ptr, v_off, offs_d, n_ok, d_ok, MASKED or HEAD != HEAD_PAD)
    acc = acc * alpha[:, None]
    if USE_DOT:
        acc = tl.dot(p.to(v.dtype), v, acc)
    else:
        acc += tl.sum(p[:, :, None] * v.to(tl.float32)[None, :, :], axis=1)
    return acc, m_new, l_i
