"""Triton helpers shared by the W4A16 GEMV (``w4a16_gemv.py``, ``w4a16_half2.py``) and GEMM
(``w4a16_gemm.py``): activation tiles, group scales/zeros, integer-to-float conversion and the
dequantisation of one K block of the internal layout (``gfx906_llm.quant.packing``)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """``(pid_m, pid_n)`` of program ``pid`` in the grouped order of Triton's matmul tutorial:
    ``GROUP_M`` row tiles run next to each other on each column tile, so they share its weight
    tile in L2."""
    n_m = tl.cdiv(M, BLOCK_M)
    n_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * n_n
    first_m = (pid // per_group) * GROUP_M
    size_m = tl.minimum(n_m - first_m, GROUP_M)
    return first_m + (pid % per_group) % size_m, (pid % per_group) // size_m


@triton.jit
def _x_rows(perm_ptr, offs_k, K, HAS_PERM: tl.constexpr, EVEN_K: tl.constexpr):
    """``(kx, mask_k)``: the columns of x holding internal rows ``offs_k`` (through perm) and their
    mask. EVEN_K (K a multiple of the K block) drops the K mask: no exec-mask branches on AMD."""
    if EVEN_K:
        mask_k = offs_k >= 0
    else:
        mask_k = offs_k < K
    if HAS_PERM:
        kx = tl.load(perm_ptr + offs_k, mask=mask_k, other=0)
    else:
        kx = offs_k
    return kx, mask_k


@triton.jit
def _x_tile(x_ptr, perm_ptr, offs_m, mask_m, offs_k, K, stride_xm, HAS_PERM: tl.constexpr, EVEN_K: tl.constexpr):
    """Activations ``x[m, k]`` for internal rows ``offs_k`` (gathered through perm): [BM, len(offs_k)]."""
    kx, mask_k = _x_rows(perm_ptr, offs_k, K, HAS_PERM, EVEN_K)
    return tl.load(x_ptr + offs_m[:, None] * stride_xm + kx[None, :],
                   mask=mask_m[:, None] & mask_k[None, :], other=0.0)


@triton.jit
def _x_tile_t(x_ptr, perm_ptr, offs_m, mask_m, offs_k, K, stride_xm, HAS_PERM: tl.constexpr, EVEN_K: tl.constexpr):
    """``_x_tile`` loaded transposed, ``[len(offs_k), BM]`` (the B operand of a swapped GEMM)."""
    kx, mask_k = _x_rows(perm_ptr, offs_k, K, HAS_PERM, EVEN_K)
    return tl.load(x_ptr + offs_m[None, :] * stride_xm + kx[:, None],
                   mask=mask_m[None, :] & mask_k[:, None], other=0.0)


@triton.jit
def _x_col(x_ptr, perm_ptr, offs_k, K, HAS_PERM: tl.constexpr, EVEN_K: tl.constexpr):
    """The x row at ``x_ptr`` at internal rows ``offs_k`` as a ``[len(offs_k), 1]`` column, x's dtype."""
    if HAS_PERM:
        if EVEN_K:
            kx = tl.load(perm_ptr + offs_k)
        else:
            kx = tl.load(perm_ptr + offs_k, mask=offs_k < K, other=0)
    else:
        kx = offs_k
    if EVEN_K:
        return tl.load(x_ptr + kx[:, None])
    return tl.load(x_ptr + kx[:, None], mask=(offs_k < K)[:, None], other=0.0)

@triton.jit
def _dot(a, b, acc):
    """``acc + a @ b`` with fp32 accumulation; fp32 operands stay IEEE fp32 (no TF32)."""
    if a.dtype == tl.float32:
        return tl.dot(a, b, acc, input_precision="ieee")
    return tl.dot(a, b, acc)


@triton.jit
def _group_params(s_ptr, z_ptr, grp, offs_n, mask_n, N, BITS: tl.constexpr, HAS_ZP: tl.constexpr):
    """fp32 scale and zero ``[BLOCK_N]`` of group ``grp`` (symmetric: zero = 2**(BITS-1))."""
    s = tl.load(s_ptr + grp * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    if HAS_ZP:
        z = tl.load(z_ptr + grp * N + offs_n, mask=mask_n, other=0).to(tl.float32)
    else:
        z = tl.zeros_like(s) + (1 << (BITS - 1))
    return s, z


@triton.jit
def _q_to(q, dtype: tl.constexpr, MAGIC: tl.constexpr):
    """Small non-negative int32 ``q`` (< 1024) as ``dtype``, exactly."""
    if MAGIC:
        if dtype == tl.float16:
            return (q | 0x6400).to(tl.int16).to(tl.float16, bitcast=True) - 1024.0
        return ((q | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0).to(dtype)
    return q.to(dtype)


@triton.jit
def _dequant(w, j: tl.constexpr, s, z, BITS: tl.constexpr, MAGIC: tl.constexpr, dtype: tl.constexpr):
    """Bit field ``j`` of the word tile ``w`` dequantised with the ``[BLOCK_N]`` fp32 scale and
    zero: ``[P, BLOCK_N]`` in ``dtype``."""
    q = (w >> (j * BITS)) & ((1 << BITS) - 1)
    if dtype == tl.float16:  # (q - z) is exact in fp16; one rounding, as in fp32
        return (_q_to(q, tl.float16, MAGIC) - z.to(tl.float16)[None, :]) * s.to(tl.float16)[None, :]
    return ((_q_to(q, tl.float32, MAGIC) - z[None, :]) * s[None, :]).to(dtype)


@triton.jit
def _dq_block(w, kb, s_ptr, z_ptr, offs_n, mask_n, N, BITS: tl.constexpr, GROUP: tl.constexpr,
              HAS_ZP: tl.constexpr, MAGIC: tl.constexpr, dtype: tl.constexpr):
    """The whole K block ``kb`` dequantised, rows in natural order: ``[KB, BLOCK_N]``.

    Scales and zeros are loaded at each group start only. The ``pack`` chunks are joined into
    ``[P, BN, 2, 2(, 2)]`` (chunk j = 4a + 2b + c sits at ``[..., c, b, a]``), permuted to
    ``[(a,) b, c, P, BN]`` and flattened: row ``j*P + p``."""
    P: tl.constexpr = 16
    KB: tl.constexpr = (32 // BITS) * P
    k0 = kb * KB
    s, z = _group_params(s_ptr, z_ptr, k0 // GROUP, offs_n, mask_n, N, BITS, HAS_ZP)
    c0 = _dequant(w, 0, s, z, BITS, MAGIC, dtype)
    if P % GROUP == 0:
        s, z = _group_params(s_ptr, z_ptr, (k0 + P) // GROUP, offs_n, mask_n, N, BITS, HAS_ZP)
    c1 = _dequant(w, 1, s, z, BITS, MAGIC, dtype)
    if (2 * P) % GROUP == 0:
        s, z = _group_params(s_ptr, z_ptr, (k0 + 2 * P) // GROUP, offs_n, mask_n, N, BITS, HAS_ZP)
    c2 = _dequant(w, 2, s, z, BITS, MAGIC, dtype)
    if (3 * P) % GROUP == 0:
        s, z = _group_params(s_ptr, z_ptr, (k0 + 3 * P) // GROUP, offs_n, mask_n, N, BITS, HAS_ZP)
    c3 = _dequant(w, 3, s, z, BITS, MAGIC, dtype)
    lo = tl.join(tl.join(c0, c1), tl.join(c2, c3))  # [P, BN, 2(c), 2(b)]
    if BITS == 8:
        out = tl.reshape(tl.permute(lo, (3, 2, 0, 1)), (KB, w.shape[1]))
    else:
        if (4 * P) % GROUP == 0:
            s, z = _group_params(s_ptr, z_ptr, (k0 + 4 * P) // GROUP, offs_n, mask_n, N, BITS, HAS_ZP)
        c4 = _dequant(w, 4, s, z, BITS, MAGIC, dtype)
        if (5 * P) % GROUP == 0:
            s, z = _group_params(s_ptr, z_ptr, (k0 + 5 * P) // GROUP, offs_n, mask_n, N, BITS, HAS_ZP)
        c5 = _dequant(w, 5, s, z, BITS, MAGIC, dtype)
        if (6 * P) % GROUP == 0:
            s, z = _group_params(s_ptr, z_ptr, (k0 + 6 * P) // GROUP, offs_n, mask_n, N, BITS, HAS_ZP)
        c6 = _dequant(w, 6, s, z, BITS, MAGIC, dtype)
        if (7 * P) % GROUP == 0:
            s, z = _group_params(s_ptr, z_ptr, (k0 + 7 * P) // GROUP, offs_n, mask_n, N, BITS, HAS_ZP)
        c7 = _dequant(w, 7, s, z, BITS, MAGIC, dtype)
        hi = tl.join(tl.join(c4, c5), tl.join(c6, c7))
        out = tl.reshape(tl.permute(tl.join(lo, hi), (4, 3, 2, 0, 1)), (KB, w.shape[1]))
    return out
