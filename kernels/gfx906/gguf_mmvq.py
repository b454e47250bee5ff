"""GGUF GEMV on integer dot products (llama.cpp's MMVQ scheme) for decode batches (M <= 8).

The activations are quantised once per call to q8_1 blocks (``quantize_q8_1``: per 32 values
``d = max|x| / 127``, ``q = round(x / d)`` in int8, plus the integer sum of each 16-value half),
then every 4 weight codes meet 4 activation codes in one 4-way int8 dot product
(``dp4a.s32.s32`` on NVIDIA, ``v_dot4_i32_i8`` on gfx906), so the inner loop costs about one
instruction per weight byte instead of a float FMA plus a conversion per weight.

Per 32-element group ``g`` of a weight row (kernel layout of ``gfx906_llm.quant.gguf_torch``;
``sumi`` = integer dot of codes with ``xq``, ``sx`` = sum of ``xq``, ``dx`` = activation scale),
the same formulas as llama.cpp ``ggml-cuda/vecdotq.cuh`` (``vec_dot_q4_0_q8_1_impl``,
``vec_dot_q4_K_q8_1_impl_vmmq``, ``vec_dot_q6_K_q8_1_impl_mmvq``, ``vec_dot_q8_0_q8_1_impl``):

    Q4_0: d dx (sumi - 8 sx)              Q8_0: d dx sumi
    Q4_K: dx ((d sc) sumi - (dmin m) sx)  Q6_K: d dx (sc0 sumi0 + sc1 sumi1), codes q - 32

(Q6_K per 16-element half; the -32 is applied to the codes bytewise before the dots.)
Unlike llama.cpp, ``d`` of the activations is kept in fp32 and the sums as exact integers.
The quantiser and its plain-torch oracle live in ``gguf_q8_1`` (re-exported here).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from gfx906_llm.kernels.gfx906.gguf_dequant import PLANE_DIV16, Q4_0, Q4_K, Q6_K, Q8_0, plane_signature
from gfx906_llm.kernels.gfx906.gguf_q8_1 import (dequantize_q8_1_reference, quantize_q8_1,  # noqa: F401
                                                 quantize_q8_1_reference)
from gfx906_llm.platform import detect_platform

#: GGML types with an integer-dot kernel
MMVQ_TYPES = (Q4_0, Q4_K, Q6_K, Q8_0)


@triton.jit
def _dot4(a, b, c, DOT: tl.constexpr):
    """Sum of the 4 signed byte products of int32 words ``a``, ``b``, plus ``c`` (int32).

    DOT 1: PTX ``dp4a.s32.s32`` (NVIDIA sm_61+); 2: ``v_dot4_i32_i8`` (gfx906/gfx90a/gfx942);
    0: shifts and multiplies (any target, the Triton interpreter)."""
    if DOT == 1:
        return tl.inline_asm_elementwise("dp4a.s32.s32 $0, $1, $2, $3;", "=r,r,r,r", [a, b, c],
                                         dtype=tl.int32, is_pure=True, pack=1)
    elif DOT == 2:
        return tl.inline_asm_elementwise("v_dot4_i32_i8 $0, $1, $2, $3", "=v,v,v,v", [a, b, c],
                                         dtype=tl.int32, is_pure=True, pack=1)
    else:
        s = c + ((a << 24) >> 24) * ((b << 24) >> 24)
        s += ((a << 16) >> 24) * ((b << 16) >> 24)
        s += ((a << 8) >> 24) * ((b << 8) >> 24)
        s += (a >> 24) * (b >> 24)
        return s


@triton.jit
def _spread6(hw, i):
    """Q6_K high bits: 2-bit fields of elements 4i..4i+3 (bits 8i.. of ``hw``) -> bits 4-5 of
    the 4 bytes of a word (exact multiplies: the shifted copies never overlap)."""
    x = (hw >> (8 * i)) & 0xFF
    return (((x & 0x33) * 0x10010) | ((x & 0xCC) * 0x400400)) & 0x30303030


@triton.jit
def _sext6(c):
    """Bytes ``c`` in 0..63 -> int8 bytes ``c - 32`` (flip bit 5, copy it into bits 6 and 7)."""
    v = c ^ 0x20202020
    m = v & 0x20202020
    return v | (m << 1) | (m << 2)


@triton.jit
def _ld(ptr, gmask, EVEN_G: tl.constexpr):
    if EVEN_G:
        return tl.load(ptr)
    else:
        return tl.load(ptr, mask=gmask, other=0)


@triton.jit
def _pick(v, i4, k: tl.constexpr):
    """Element ``k`` of the in-thread last axis of ``v`` ``[.., 4]`` -> ``[.., 1]`` (selects
    that fold to a register pick)."""
    return tl.sum(tl.where(i4 == k, v, 0), axis=2, keep_dims=True)


@triton.jit
def _row_dot(xq_ptr, meta_ptr, zr, grp, gmask, i4, c0, c1, f0, f1, f2, mi, M, G,
             QT: tl.constexpr, EVEN_G: tl.constexpr, DOT: tl.constexpr):
    """``[BN, BG, 1]`` fp32 partial sums of one activation row against the code words.

    ``c0``/``c1``: int32 code words ``[BN, BG, 4]`` of the group's halves; per-group factors
    ``f0, f1, f2`` ``[BN, BG, 1]``: Q4_0/Q8_0 ``d``; Q4_K ``d sc``, ``dmin m`` (fp32); Q6_K
    ``sc0``, ``sc1`` (int32), ``d``."""
    # rows past M read row M-1 (their stores are masked). X_BCAST: ``zr`` ([BN, 1, 1] zeros)
    # gives the activation loads the weight tile's shape and register layout (AMD: no LDS)
    row = tl.minimum(mi, M - 1) * G + zr
    xq_row = xq_ptr + row * 8  # int32 words: [G*4 first halves | G*4 second halves]
    xl = _ld(xq_row + grp * 4 + i4, gmask, EVEN_G)  # [., BG, 4] words of elements 32g + 4i ..
    xh = _ld(xq_row + G * 4 + grp * 4 + i4, gmask, EVEN_G)  # .. and 32g + 16 + 4i
    meta = _ld(meta_ptr + (row + grp) * 4 + i4, gmask, EVEN_G)  # [., BG, 4]: d, sx0, sx1, sx
    dx = _pick(meta, i4, 0).to(tl.float32, bitcast=True)
    z = c0 * 0
    if QT == 14:
        s0 = tl.sum(_dot4(c0, xl + z, z, DOT), axis=2, keep_dims=True)
        s1 = tl.sum(_dot4(c1, xh + z, z, DOT), axis=2, keep_dims=True)
        t = f0 * s0 + f1 * s1  # int32, exact (codes already hold the -32)
        return (f2 * dx) * t.to(tl.float32)
    sumi = tl.sum(_dot4(c1, xh + z, _dot4(c0, xl + z, z, DOT), DOT), axis=2, keep_dims=True)
    if QT == 8:
        return (f0 * dx) * sumi.to(tl.float32)
    elif QT == 2:
        return (f0 * dx) * (sumi - 8 * _pick(meta, i4, 3)).to(tl.float32)
    else:  # Q4_K
        return dx * (f0 * sumi.to(tl.float32) - f1 * _pick(meta, i4, 3).to(tl.float32))


@triton.jit
def gguf_mmvq_kernel(xq_ptr, meta_ptr, out_ptr, bias_ptr, q_ptr, h_ptr, s_ptr, d_ptr, m_ptr,
                     q_rs, h_rs, s_rs, d_rs, M, N, G, stride_om,
                     QT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_G: tl.constexpr, EVEN_G: tl.constexpr, HAS_BIAS: tl.constexpr,
                     DOT: tl.constexpr, X_BCAST: tl.constexpr, EVICT: tl.constexpr = ""):
    """``out[M, N] = dequant(q8_1 x) @ W.T``: ``q_ptr`` is the code plane viewed as int32 words
    (``q_rs`` in words), ``xq_ptr`` the q8_1 codes as int32 words (``G * 8`` per row, split-half
    order), ``meta_ptr`` the ``[M, G, 4]`` int32 group records (``quantize_q8_1``).

    Launched without PDL (``pdl.py``): with it (waiting first; or the first wave reading its first
    weight block before ``griddepcontrol.wait``; dependents released at the top or after the loop)
    a chain of 8B layers ran up to 35% slower on an H200 (Q4_0; Q6_K equal) and the batch-1
    decode step 15% slower (NOTES_gguf.md, session 8). The q8_1 quantiser before it uses PDL."""
    q_rs = tl.multiple_of(q_rs, 4)
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    pid_m = pid % num_m
    pid_n = pid // num_m
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    r = tl.minimum(rn, N - 1)[:, None, None]  # [BN, 1, 1] clamped: no masks on weight loads
    if X_BCAST:
        zr = r * 0  # [BN, 1, 1]
    else:
        zr = 0
    g = tl.arange(0, BLOCK_G)[None, :, None]  # [1, BG, 1]
    i4 = tl.arange(0, 4)[None, None, :]  # [1, 1, 4] words of a half-group
    m0 = pid_m * BLOCK_M
    acc0 = tl.zeros([BLOCK_N, BLOCK_G, 1], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_N, BLOCK_G, 1], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_N, BLOCK_G, 1], dtype=tl.float32)
    acc3 = tl.zeros([BLOCK_N, BLOCK_G, 1], dtype=tl.float32)
    acc4 = tl.zeros([BLOCK_N, BLOCK_G, 1], dtype=tl.float32)
    acc5 = tl.zeros([BLOCK_N, BLOCK_G, 1], dtype=tl.float32)
    acc6 = tl.zeros([BLOCK_N, BLOCK_G, 1], dtype=tl.float32)
    acc7 = tl.zeros([BLOCK_N, BLOCK_G, 1], dtype=tl.float32)
    for g0 in range(0, G, BLOCK_G):
        grp = g0 + g  # [1, BG, 1]
        gmask = grp < G
        gl = grp if EVEN_G else tl.minimum(grp, G - 1)
        f1 = 0.0
        f2 = 0.0
        if QT == 8:
            # [BN, BG, 4] int8 codes of 32g + 4i .. and of 32g + 16 + 4i
            c0 = tl.load(q_ptr + r * q_rs + gl * 8 + i4, eviction_policy=EVICT)
            c1 = tl.load(q_ptr + r * q_rs + gl * 8 + 4 + i4, eviction_policy=EVICT)
            f0 = tl.load(d_ptr + r * d_rs + gl).to(tl.float32)
        else:
            w = tl.load(q_ptr + r * q_rs + gl * 4 + i4, eviction_policy=EVICT)  # [BN, BG, 4]: 16 nibbles
            c0 = w & 0x0F0F0F0F  # codes of elements 32g + 4i + b
            c1 = (w >> 4) & 0x0F0F0F0F  # 32g + 16 + 4i + b
            if QT == 2:
                f0 = tl.load(d_ptr + r * d_rs + gl).to(tl.float32)
            elif QT == 12:
                sb = s_ptr + r * s_rs + (gl // 8) * 12
                t = gl % 8
                aa = tl.load(sb + t).to(tl.int32)
                bb = tl.load(sb + t + 4).to(tl.int32)
                cc = tl.load(sb + tl.where(t >= 4, t - 4, t)).to(tl.int32)
                sc = tl.where(t < 4, aa & 63, (bb & 15) | ((cc >> 2) & 0x30))
                mn = tl.where(t < 4, bb & 63, (bb >> 4) | ((aa >> 2) & 0x30))
                f0 = tl.load(d_ptr + r * d_rs + gl // 8).to(tl.float32) * sc.to(tl.float32)
                f1 = tl.load(m_ptr + r * d_rs + gl // 8).to(tl.float32) * mn.to(tl.float32)
            else:  # Q6_K: + 2 high bits per element from the 2-bit words, int8 scale per 16
                hp = h_ptr + r * h_rs + gl * 2
                c0 = _sext6(c0 | _spread6(tl.load(hp, eviction_policy=EVICT), i4))
                c1 = _sext6(c1 | _spread6(tl.load(hp + 1, eviction_policy=EVICT), i4))
                sp = s_ptr + r * s_rs + gl * 2
                f0 = tl.load(sp).to(tl.int32)
                f1 = tl.load(sp + 1).to(tl.int32)
                f2 = tl.load(d_ptr + r * d_rs + gl // 8).to(tl.float32)
        acc0 += _row_dot(xq_ptr, meta_ptr, zr, grp, gmask, i4, c0, c1, f0, f1, f2, m0, M, G, QT, EVEN_G, DOT)
        if BLOCK_M > 1:
            acc1 += _row_dot(xq_ptr, meta_ptr, zr, grp, gmask, i4, c0, c1, f0, f1, f2, m0 + 1, M, G, QT, EVEN_G, DOT)
        if BLOCK_M > 2:
            acc2 += _row_dot(xq_ptr, meta_ptr, zr, grp, gmask, i4, c0, c1, f0, f1, f2, m0 + 2, M, G, QT, EVEN_G, DOT)
            acc3 += _row_dot(xq_ptr, meta_ptr, zr, grp, gmask, i4, c0, c1, f0, f1, f2, m0 + 3, M, G, QT, EVEN_G, DOT)
        if BLOCK_M > 4:
            acc4 += _row_dot(xq_ptr, meta_ptr, zr, grp, gmask, i4, c0, c1, f0, f1, f2, m0 + 4, M, G, QT, EVEN_G, DOT)
            acc5 += _row_dot(xq_ptr, meta_ptr, zr, grp, gmask, i4, c0, c1, f0, f1, f2, m0 + 5, M, G, QT, EVEN_G, DOT)
            acc6 += _row_dot(xq_ptr, meta_ptr, zr, grp, gmask, i4, c0, c1, f0, f1, f2, m0 + 6, M, G, QT, EVEN_G, DOT)
            acc7 += _row_dot(xq_ptr, meta_ptr, zr, grp, gmask, i4, c0, c1, f0, f1, f2, m0 + 7, M, G, QT, EVEN_G, DOT)
    bias = tl.zeros([BLOCK_N], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
    _store(out_ptr, acc0, bias, rn, m0, N, M, stride_om)
    if BLOCK_M > 1:
        _store(out_ptr, acc1, bias, rn, m0 + 1, N, M, stride_om)
    if BLOCK_M > 2:
        _store(out_ptr, acc2, bias, rn, m0 + 2, N, M, stride_om)
        _store(out_ptr, acc3, bias, rn, m0 + 3, N, M, stride_om)
    if BLOCK_M > 4:
        _store(out_ptr, acc4, bias, rn, m0 + 4, N, M, stride_om)
        _store(out_ptr, acc5, bias, rn, m0 + 5, N, M, stride_om)
        _store(out_ptr, acc6, bias, rn, m0 + 6, N, M, stride_om)
        _store(out_ptr, acc7, bias, rn, m0 + 7, N, M, stride_om)


@triton.jit
def _store(out_ptr, acc, bias, rn, mi, N, M, stride_om):
    o = out_ptr + mi.to(tl.int64) * stride_om + rn  # [BN]
    res = tl.sum(tl.sum(acc, axis=2), axis=1) + bias
    tl.store(o, res.to(out_ptr.dtype.element_ty), mask=(rn < N) & (rn * 0 + mi < M))


# Launch settings per arch, the tile model of gguf_gemv.launch_params: a program has LANES lanes
# (num_warps x warp size), each lane POS positions (one 32-weight group of one row: 16 B of
# nibbles, 4 dot4 per half), MIN_PROGRAMS programs at least; DOT selects the dot4 (see _dot4);
# X_BCAST 1 gives the activation loads the weight tile's shape (needed when the rows of a
# program are split over warps, i.e. BLOCK_G < LANES: else Triton converts layouts through
# shared memory / LDS inside the loop). POS_WIDE (optional): POS and X_BCAST = 1 used instead
# when M > 1 or BLOCK_G < LANES (``launch``).
# gfx906: 4 wave64 = 256 lanes, POS 1, X_BCAST 1, DOT 2 (v_dot4_i32_i8 by inline asm: LLVM does
#   not form it from the shift/multiply fallback, which costs v_bfe_i32 + quarter-rate
#   v_mul_lo_u32 per byte). ISA at M = 1 (4096 -> 4096): 24 / 31 / 33 / 28 VGPRs (Q4_0 / Q4_K /
#   Q6_K / Q8_0), 10 / 8 / 7 / 9 waves per SIMD, no scratch; weight and activation loads all
#   global_load_dwordx4, no LDS in the loop (ds ops only in the final reduction). The loop
#   issues 47 / 83 / 137 / 36 VALU per 32-weight group and lane; a CU issues one wave64 VALU
#   per clock over its 4 SIMDs, so 60 CUs at 1.725 GHz could consume 2.5 / 1.4 / 1.3 / 6.3
#   TB/s of weights: HBM (880 GB/s) is the limit, with ~40 KB of loads in flight per CU (7-10
#   waves x 64 lanes x 16 B). At M = 8: 54 / 55 / 77 / 53 VGPRs (3-4 waves), 218 / 256 / 334 /
#   195 VALU per group and lane for the 8 rows: issue limits 0.55 / 0.47 / 0.52 / 1.2 TB/s,
#   i.e. ~55-60% of HBM for the 4- and 6-bit types (per-row dots and scale math dominate).
#   POS 2 would raise VGPRs to 35-50 (4-7 waves) for no fewer instructions per byte.
# gfx90a / gfx942: the same reasoning and instruction (v_dot4_i32_i8 assembles for both), more CUs.
# gfx1100: no asm variant here (RDNA3 has v_dot4_i32_iu8 instead; not wired): gguf_gemv keeps
#   the float kernel there (CONFIGS["gfx1100"]["MMVQ"] False).
# cuda: measured on H200 (benchmarks/NOTES_gguf.md, run 2), integer dots via PTX dp4a. Over the
#   5 Llama-3-8B shapes x 4 types the best M = 1 candidate for K = 4096 (BLOCK_G 128 = LANES)
#   is 128 lanes, POS 1, X_BCAST 0: mean 0.68 of copy bandwidth (with the q8_1 launch) vs 0.53
#   (POS 2), 0.52 (POS 4), 0.64 (POS 4, X_BCAST 1), 0.56 (64 lanes); for K = 14336 (BLOCK_G 64 <
#   LANES) POS 4 + X_BCAST 1: 0.81 vs 0.72 (POS 1, X_BCAST 0) and 0.67 (64 lanes). For M > 1
#   POS 4 + X_BCAST 1: best at K = 4096 for M = 8 (0.23), within 12% of the best candidate
#   elsewhere (64 lanes at K = 14336: M = 4 0.51 vs 0.44, M = 8 0.35 vs 0.31). (Those fractions
#   are of the memcpy copy, 2.77 TB/s; the SM copy is 4.17 TB/s: divide by 1.5.) EVICT
#   evict_first on the weight loads (session 3): 3-14% faster on all 20 M = 1 cells (Q4_K
#   14336x4096 0.46 -> 0.51 of the SM copy), and at M = 4 / 8.
CONFIGS = {
    "gfx906": {"LANES": 256, "POS": 1, "num_warps": 4, "num_stages": 1, "MIN_PROGRAMS": 240, "DOT": 2, "X_BCAST": 1},
    "gfx90a": {"LANES": 256, "POS": 1, "num_warps": 4, "num_stages": 1, "MIN_PROGRAMS": 416, "DOT": 2, "X_BCAST": 1},
    "gfx942": {"LANES": 256, "POS": 1, "num_warps": 4, "num_stages": 1, "MIN_PROGRAMS": 1216, "DOT": 2, "X_BCAST": 1},
    "gfx1100": {"LANES": 128, "POS": 1, "num_warps": 4, "num_stages": 1, "MIN_PROGRAMS": 192, "DOT": 0, "X_BCAST": 1},
    "cuda": {"LANES": 128, "POS": 1, "num_warps": 4, "num_stages": 1, "MIN_PROGRAMS": 528, "DOT": 1, "X_BCAST": 0,
             "POS_WIDE": 4, "EVICT": "evict_first"},
    "default": {"LANES": 128, "POS": 1, "num_warps": 4, "num_stages": 1, "MIN_PROGRAMS": 256, "DOT": 0, "X_BCAST": 1},
}


def launch(n: int, k: int, m: int, cfg: dict) -> dict:
    """BLOCK_N / BLOCK_G / EVEN_G / X_BCAST and the POS used for an ``[n, k]`` weight at ``m`` rows."""
    from gfx906_llm.kernels.gfx906.gguf_gemv import launch_params

    p = launch_params(n, k, cfg)
    if "POS_WIDE" in cfg and (m > 1 or p["BLOCK_G"] < cfg["LANES"]):
        cfg = dict(cfg, POS=cfg["POS_WIDE"], X_BCAST=1)
        p = launch_params(n, k, cfg)
    xb = 1 if p["BLOCK_G"] < cfg["LANES"] else cfg.get("X_BCAST", 1)
    return dict(p, X_BCAST=xb, POS=cfg["POS"])


def config(key: str | None = None) -> dict:
    return dict(CONFIGS.get(key or detect_platform().config_key, CONFIGS["default"]))


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() not in ("", "0", "false", "off")


def gguf_mmvq(x: torch.Tensor, planes, out: torch.Tensor, bias: torch.Tensor | None = None,
              xq: tuple | None = None, config_override: dict | None = None) -> torch.Tensor:
    """``out[M, N] = q8_1(x)[M, K] @ W.T (+ bias)`` for a GGUF weight of a type in MMVQ_TYPES.

    Args:
        x: ``[M, K]`` activations (fp16/bf16/fp32), ``M <= 8``; only its shape is used when
            ``xq`` is given.
        planes: kernel-layout ``GGUFPlanes``, logical ``[N, K]``.
        out: ``[M, N]`` output (may be a column slice of a wider tensor; last dim contiguous).
        bias: optional ``[N]``.
        xq: ``quantize_q8_1(x)`` when the caller shares it between several weights.
        config_override: replaces this arch's CONFIGS entry (benchmark sweeps).

    Raises:
        ValueError: shape mismatch, M > 8 or a type without an integer-dot kernel.
    """
    if planes.qtype not in MMVQ_TYPES:
        raise ValueError(f"gguf_mmvq: GGML type {planes.qtype} not in {MMVQ_TYPES}")
    M, K = x.shape
    if K != planes.k or tuple(out.shape) != (M, planes.n) or K % 256 and planes.qtype in (Q4_K, Q6_K):
        raise ValueError(f"gguf_mmvq: x {tuple(x.shape)}, W [{planes.n}, {planes.k}], out {tuple(out.shape)}")
    if M > 8:
        raise ValueError(f"gguf_mmvq handles M <= 8 rows per launch, got M={M}")
    if out.stride(1) != 1:
        raise ValueError("gguf_mmvq: out needs a contiguous last dimension")
    if M == 0:
        return out
    cfg = dict(config_override) if config_override else config()
    if _interpreting() or x.device.type == "cpu":
        cfg["DOT"] = 0
    xq_, meta = xq if xq is not None else quantize_q8_1(x)
    p = launch(planes.n, K, M, cfg)
    p.pop("POS")
    block_m = 1 if M == 1 else 2 if M == 2 else 4 if M <= 4 else 8
    grid = (triton.cdiv(planes.n, p["BLOCK_N"]) * triton.cdiv(M, block_m),)
    q32 = planes.q.view(torch.int32)
    h = planes.h if planes.h is not None else q32
    s = planes.s if planes.s is not None else planes.d
    m = planes.m if planes.m is not None else planes.d
    gguf_mmvq_kernel[grid](xq_.view(torch.int32), meta, out, bias if bias is not None else out,
                           q32, h, s, planes.d, m, q32.stride(0), h.stride(0), s.stride(0), planes.d.stride(0),
                           M, planes.n, K // 32, out.stride(0), QT=planes.qtype, BLOCK_M=block_m,
                           HAS_BIAS=bias is not None, DOT=cfg["DOT"], EVICT=cfg.get("EVICT", ""),
                           num_warps=cfg["num_warps"],
                           num_stages=cfg["num_stages"], **p)
    return out


def isa_specs() -> list[dict]:
    """The integer-dot GEMV at M = 1 and 8 for Q4_0/Q4_K/Q6_K/Q8_0 on
    Llama-3-8B q_proj (4096 -> 4096) and down_proj (14336 -> 4096), launch as ``gguf_mmvq``."""
    specs = []
    for arch, cfg in CONFIGS.items():
        for k in (4096, 14336):
            for bm in (1, 8):
                p = launch(4096, k, bm, cfg)
                pos = p.pop("POS")
                for qt in MMVQ_TYPES:
                    ps = plane_signature(qt)
                    sig = {"xq_ptr": "*i32", "meta_ptr": "*i32", "out_ptr": "*fp16",
                           "bias_ptr": "*fp16", "q_ptr": "*i32", "h_ptr": "*i32", "s_ptr": ps["s_ptr"],
                           "d_ptr": "*fp16", "m_ptr": "*fp16", "q_rs": "i32", "h_rs": "i32", "s_rs": "i32",
                           "d_rs": "i32", "M": "i32", "N": "i32", "G": "i32", "stride_om": "i32",
                           **{c: "constexpr" for c in ("QT", "BLOCK_M", "BLOCK_N", "BLOCK_G", "EVEN_G",
                                                       "HAS_BIAS", "DOT", "X_BCAST", "EVICT")}}
                    specs.append({"name": f"gguf_mmvq_k{k}_m{bm}_qt{qt}_pos{pos}", "fn": gguf_mmvq_kernel,
                                  "signature": sig,
                                  "constexprs": {"QT": qt, "BLOCK_M": bm, "HAS_BIAS": False, "DOT": cfg["DOT"],
                                                 "EVICT": cfg.get("EVICT", ""), **p},
                                  "num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"], "arch": arch,
                                  "divisible_by_16": ["xq_ptr", "meta_ptr", "out_ptr", "bias_ptr",
                                                      *PLANE_DIV16, "N", "stride_om"]})
    return specs
