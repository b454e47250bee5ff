"""The HALF2 decode path of the W4A16 GEMV (``w4a16_gemv.py``, M <= 4 rows, 4-bit, fp16): two weights
per 32-bit instruction, products summed in half2 over short runs (exllama's dot22_8), then fp32.
The PTX (``ASM=True``) is CUDA-only; the same arithmetic in portable Triton runs elsewhere and in
the CPU interpreter."""

from __future__ import annotations

import triton
import triton.language as tl

from gfx906_llm.kernels.gfx906.w4a16_common import _group_params, _x_col


# PTX for the HALF2 path (CUDA only, ASM=True), the FasterTransformer / exllama trick: lop3 puts
# two nibbles (bits 0-3 and 16-19) under the fp16 exponent of 1024 (0x6400): two halves 1024 + q in
# one instruction; mask 0x00f0 gives 1024 + 16 q, scaled back by an fma with 1/16 (0x2c00).
# The subtraction of 1024 + zero (resp. 64 + zero) is exact, so t = q - zero exactly in fp16.
_UNPACK_PTX: tl.constexpr = tl.constexpr("""{
.reg .b32 w8, k16, t0, t1, t2, t3;
mov.b32 k16, 0x2c002c00;
lop3.b32 t0, $4, 0x000f000f, 0x64006400, 0xea;
lop3.b32 t1, $4, 0x00f000f0, 0x64006400, 0xea;
shr.u32 w8, $4, 8;
lop3.b32 t2, w8, 0x000f000f, 0x64006400, 0xea;
lop3.b32 t3, w8, 0x00f000f0, 0x64006400, 0xea;
sub.f16x2 $0, t0, $5;
fma.rn.f16x2 $1, t1, k16, $6;
sub.f16x2 $2, t2, $7;
fma.rn.f16x2 $3, t3, k16, $8;
}""")
# 4 (resp. 2) pairs of products accumulated in half2 (as exllama's dot22_8), each lane to fp32
_DOT4_PTX: tl.constexpr = tl.constexpr("""{
.reg .b32 a;
.reg .f16 l, h;
mul.rn.f16x2 a, $2, $6;
fma.rn.f16x2 a, $3, $7, a;
fma.rn.f16x2 a, $4, $8, a;
fma.rn.f16x2 a, $5, $9, a;
mov.b32 {l, h}, a;
cvt.f32.f16 $0, l;
cvt.f32.f16 $1, h;
}""")
# the same, lanes added in fp16 (one scale for both halves: GROUP >= 128): one cvt instead of two + add
_DOT4S_PTX: tl.constexpr = tl.constexpr("""{
.reg .b32 a;
.reg .f16 l, h;
mul.rn.f16x2 a, $1, $5;
fma.rn.f16x2 a, $2, $6, a;
fma.rn.f16x2 a, $3, $7, a;
fma.rn.f16x2 a, $4, $8, a;
mov.b32 {l, h}, a;
add.rn.f16 l, l, h;
cvt.f32.f16 $0, l;
}""")
_DOT2_PTX: tl.constexpr = tl.constexpr("""{
.reg .b32 a;
.reg .f16 l, h;
mul.rn.f16x2 a, $2, $4;
fma.rn.f16x2 a, $3, $5, a;
mov.b32 {l, h}, a;
cvt.f32.f16 $0, l;
cvt.f32.f16 $1, h;
}""")


@triton.jit
def _h2(lo, hi, ASM: tl.constexpr):
    """Two fp16 tensors as the int32 bits of a half2 (``lo`` in bits 0-15)."""
    if ASM:
        return tl.inline_asm_elementwise("mov.b32 $0, {$1, $2};", "=r,h,h", [lo, hi], dtype=tl.int32,
                                         is_pure=True, pack=1)
    return ((lo.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF)
            | (hi.to(tl.int16, bitcast=True).to(tl.int32) << 16))


@triton.jit
def _lo(v):
    return (v & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _hi(v):
    return ((v >> 16) & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _unpack_q4(w, za1, za16, zb1, zb16, ASM: tl.constexpr):
    """int32 word tile -> four half2 tiles ``t_i = (q_i - z, q_{i+4} - z')`` (nibble i in the low
    half, i + 4 in the high half); ``z*1`` hold ``1024 + zero`` and ``z*16`` hold ``-(64 + zero)``
    (a: pairs 0-1, b: pairs 2-3). The portable branch computes the PTX's arithmetic step by step."""
    if ASM:
        return tl.inline_asm_elementwise(_UNPACK_PTX, "=r,=r,=r,=r,r,r,r,r,r", [w, za1, za16, zb1, zb16],
                                         dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=True, pack=1)
    return (_t_pair(w, 0, za1, za16), _t_pair(w, 1, za1, za16), _t_pair(w, 2, zb1, zb16),
            _t_pair(w, 3, zb1, zb16))


@triton.jit
def _t_pair(w, i: tl.constexpr, z1, z16):
    """Portable pair ``i`` of ``_unpack_q4`` (the PTX's steps in fp32, exact, then fp16)."""
    qlo = ((w >> (4 * i)) & 15).to(tl.float32)
    qhi = ((w >> (4 * i + 16)) & 15).to(tl.float32)
    if i % 2 == 0:
        tlo = (qlo + 1024.0) - _lo(z1)
        thi = (qhi + 1024.0) - _hi(z1)
    else:
        tlo = (qlo * 16.0 + 1024.0) * 0.0625 + _lo(z16)
        thi = (qhi * 16.0 + 1024.0) * 0.0625 + _hi(z16)
    return _h2(tlo.to(tl.float16), thi.to(tl.float16), False)


@triton.jit
def _hdot(t0, t1, t2, t3, x0, x1, x2, x3, NPAIR: tl.constexpr, ASM: tl.constexpr):
    """``sum_i t_i * x_i`` over the first NPAIR half2 pairs, accumulated in half2, as fp32 (lo, hi)."""
    if ASM:
        if NPAIR == 4:
            return tl.inline_asm_elementwise(_DOT4_PTX, "=r,=r,r,r,r,r,r,r,r,r", [t0, t1, t2, t3, x0, x1, x2, x3],
                                             dtype=(tl.float32, tl.float32), is_pure=True, pack=1)
        return tl.inline_asm_elementwise(_DOT2_PTX, "=r,=r,r,r,r,r", [t0, t1, x0, x1],
                                         dtype=(tl.float32, tl.float32), is_pure=True, pack=1)
    alo = (_lo(t0) * _lo(x0)).to(tl.float16)  # fp16 x fp16 products are exact in fp32
    ahi = (_hi(t0) * _hi(x0)).to(tl.float16)
    alo = (_lo(t1) * _lo(x1) + alo.to(tl.float32)).to(tl.float16)
    ahi = (_hi(t1) * _hi(x1) + ahi.to(tl.float32)).to(tl.float16)
    if NPAIR == 4:
        alo = (_lo(t2) * _lo(x2) + alo.to(tl.float32)).to(tl.float16)
        ahi = (_hi(t2) * _hi(x2) + ahi.to(tl.float32)).to(tl.float16)
        alo = (_lo(t3) * _lo(x3) + alo.to(tl.float32)).to(tl.float16)
        ahi = (_hi(t3) * _hi(x3) + ahi.to(tl.float32)).to(tl.float16)
    return alo.to(tl.float32), ahi.to(tl.float32)


@triton.jit
def _x_pair(x_ptr, perm_ptr, offs_k, K, HAS_PERM: tl.constexpr, EVEN_K: tl.constexpr, ASM: tl.constexpr):
    """x at rows ``offs_k`` (low half) and ``offs_k + 64`` (high half) as half2 bits ``[P, 1]``."""
    return _h2(_x_col(x_ptr, perm_ptr, offs_k, K, HAS_PERM, EVEN_K),
               _x_col(x_ptr, perm_ptr, offs_k + 64, K, HAS_PERM, EVEN_K), ASM)


@triton.jit
def _sz(s_ptr, z_ptr, grp, offs, msk, N, HAS_ZP: tl.constexpr, EVEN_N: tl.constexpr):
    """fp32 scale and zero of group ``grp`` at columns ``offs`` (any shape; 4-bit: zero 8 when symmetric)."""
    if EVEN_N:
        s = tl.load(s_ptr + grp * N + offs).to(tl.float32)
        if HAS_ZP:
            z = tl.load(z_ptr + grp * N + offs).to(tl.float32)
        else:
            z = tl.zeros_like(s) + 8.0
    else:
        s, z = _group_params(s_ptr, z_ptr, grp, offs, msk, N, 4, HAS_ZP)
    return s, z


@triton.jit
def _half2_prep(w, kb, s_ptr, z_ptr, offs_n, mask_n, N, GROUP: tl.constexpr, HAS_ZP: tl.constexpr,
                ASM: tl.constexpr, TILE_S: tl.constexpr = False, EVEN_N: tl.constexpr = False,
                PIN: tl.constexpr = False):
    """4-bit K block ``kb``: the half2 tiles ``t0..t3 = q - zero`` of ``_unpack_q4`` and the fp32
    ``[1, BLOCK_N]`` scales of chunks 0, 2, 4, 6 (the groups of the pairs' two halves).

    Pair i holds chunks i (low half) and i + 4 (high half); one group covers both halves when
    GROUP >= 128, the two halves when GROUP = 64, and chunk pairs {0,1}/{2,3} when GROUP = 32
    (GROUP % 32 == 0 is the caller's condition). ``TILE_S``: scales and zeros are loaded as
    ``[P, BLOCK_N]`` tiles (rows equal) in the weight tile's layout, so no layout conversion; the
    scales are then ``[P, BLOCK_N]`` instead of ``[1, BLOCK_N]``. ``EVEN_N``: no column masks.
    ``PIN``: a CTA barrier after the loads, keeping the block's loads in flight together."""
    za1, za16, zb1, zb16, s0, s2, s4, s6 = _half2_scales(kb, s_ptr, z_ptr, offs_n, mask_n, N, GROUP, HAS_ZP,
                                                         TILE_S, EVEN_N, PIN)
    t0, t1, t2, t3 = _unpack_q4(w, za1, za16, zb1, zb16, ASM)
    return t0, t1, t2, t3, s0, s2, s4, s6


@triton.jit
def _half2_scales(kb, s_ptr, z_ptr, offs_n, mask_n, N, GROUP: tl.constexpr, HAS_ZP: tl.constexpr,
                  TILE_S: tl.constexpr, EVEN_N: tl.constexpr, PIN: tl.constexpr):
    """The loads of ``_half2_prep``: the half2 zero offsets ``za1, za16, zb1, zb16`` of
    ``_unpack_q4`` and the scales ``s0, s2, s4, s6`` of K block ``kb``."""
    P: tl.constexpr = 16
    k0 = kb * 8 * P
    if TILE_S:  # [P, BLOCK_N] loads in the weight tile's own layout: no layout conversion per block
        offs = (((offs_n // 4) * 4 + offs_n % 4)[None, :] + tl.arange(0, P)[:, None] * 0)  # contiguity 4
        msk = mask_n[None, :] & (tl.arange(0, P)[:, None] >= 0)
    else:
        offs, msk = offs_n, mask_n
    s0, z0 = _sz(s_ptr, z_ptr, k0 // GROUP, offs, msk, N, HAS_ZP, EVEN_N)
    if GROUP >= 8 * P:
        s4, z4 = s0, z0
    else:
        s4, z4 = _sz(s_ptr, z_ptr, (k0 + 4 * P) // GROUP, offs, msk, N, HAS_ZP, EVEN_N)
    za1 = _h2((z0 + 1024.0).to(tl.float16), (z4 + 1024.0).to(tl.float16), False)
    za16 = _h2((-64.0 - z0).to(tl.float16), (-64.0 - z4).to(tl.float16), False)
    if GROUP >= 4 * P:
        s2, s6, zb1, zb16 = s0, s4, za1, za16
    else:
        s2, z2 = _sz(s_ptr, z_ptr, (k0 + 2 * P) // GROUP, offs, msk, N, HAS_ZP, EVEN_N)
        s6, z6 = _sz(s_ptr, z_ptr, (k0 + 6 * P) // GROUP, offs, msk, N, HAS_ZP, EVEN_N)
        zb1 = _h2((z2 + 1024.0).to(tl.float16), (z6 + 1024.0).to(tl.float16), False)
        zb16 = _h2((-64.0 - z2).to(tl.float16), (-64.0 - z6).to(tl.float16), False)
    if not TILE_S:
        za1, za16, zb1, zb16 = za1[None, :], za16[None, :], zb1[None, :], zb16[None, :]
        s0, s2, s4, s6 = s0[None, :], s2[None, :], s4[None, :], s6[None, :]
    if PIN:  # a barrier after the block's loads: ptxas otherwise sinks each 128-bit load to its use
        tl.debug_barrier()
    return za1, za16, zb1, zb16, s0, s2, s4, s6


@triton.jit
def _x_pairs(x_row_ptr, perm_ptr, k0, offs_p, K, HAS_PERM: tl.constexpr, EVEN_K: tl.constexpr, ASM: tl.constexpr):
    """The half2 activation pairs ``x_i = (x[k0 + i*P + p], x[k0 + (i+4)*P + p])``, i = 0..3, of one
    fp16 row of x for the K block starting at internal row ``k0``: four int32 ``[P, 1]``."""
    P: tl.constexpr = 16
    x0 = _x_pair(x_row_ptr, perm_ptr, k0 + offs_p, K, HAS_PERM, EVEN_K, ASM)  # [P, 1] int32 (half2)
    x1 = _x_pair(x_row_ptr, perm_ptr, k0 + P + offs_p, K, HAS_PERM, EVEN_K, ASM)
    x2 = _x_pair(x_row_ptr, perm_ptr, k0 + 2 * P + offs_p, K, HAS_PERM, EVEN_K, ASM)
    x3 = _x_pair(x_row_ptr, perm_ptr, k0 + 3 * P + offs_p, K, HAS_PERM, EVEN_K, ASM)
    return x0, x1, x2, x3


@triton.jit
def _half2_dot(t0, t1, t2, t3, s0, s2, s4, s6, x0, x1, x2, x3, GROUP: tl.constexpr, ASM: tl.constexpr):
    """One fp16 row of x (its pairs from ``_x_pairs``) times the block of ``_half2_prep``: fp32
    ``[P, BLOCK_N]``, scaled; the caller reduces over P after the K loop. The products and their
    half2 sums of 4 (2) are exact up to fp16 rounding; |x| below ~1000 keeps them finite
    (exllama's dot22_8 has the same bound)."""
    P: tl.constexpr = 16
    if GROUP >= 4 * P:
        if GROUP >= 8 * P:
            if ASM:
                v = tl.inline_asm_elementwise(_DOT4S_PTX, "=r,r,r,r,r,r,r,r,r", [t0, t1, t2, t3, x0, x1, x2, x3],
                                              dtype=tl.float32, is_pure=True, pack=1)
            else:
                lo, hi = _hdot(t0, t1, t2, t3, x0, x1, x2, x3, 4, ASM)
                v = (lo + hi).to(tl.float16).to(tl.float32)
            part = v * s0
        else:
            lo, hi = _hdot(t0, t1, t2, t3, x0, x1, x2, x3, 4, ASM)
            part = lo * s0 + hi * s4
    else:
        lo, hi = _hdot(t0, t1, t0, t1, x0, x1, x0, x1, 2, ASM)
        lo2, hi2 = _hdot(t2, t3, t2, t3, x2, x3, x2, x3, 2, ASM)
        part = lo * s0 + hi * s4 + lo2 * s2 + hi2 * s6
    return part
