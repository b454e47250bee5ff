"""Fused GGUF dequantise + GEMV for decode-sized batches (M <= 4): ``out = x @ W.T (+ bias)``.

``W`` is one GGUF tensor in the kernel layout of ``gfx906_llm.quant.gguf_torch.pack_planes``
(``[N, K]`` logical, same bytes per weight as the file). Each program owns ``BLOCK_N`` output
rows and ``BLOCK_M`` (1, 2 or 4) activation rows; it streams its rows' planes over K in steps of
``BLOCK_G`` 32-element groups. Every type is decoded in affine form, integer code ``q`` and
per-group ``a``, ``b`` with ``w = a * q + b``, so the inner loop costs one FMA per weight and row:
``sum_j w_j x_j = a * sum_j q_j x_j + b * sum_j x_j`` (fp32 throughout). The decoded tile is
shared by the ``BLOCK_M`` rows; partial sums stay in a ``[BLOCK_N, BLOCK_G, 1]`` fp32 register
tile per row and are reduced once at the end.

``gguf_gemv`` sends Q4_0/Q4_K/Q6_K/Q8_0 to the integer-dot kernel of ``gguf_mmvq`` (q8_1
activations, llama.cpp's MMVQ scheme; ``CONFIGS[arch]["MMVQ"]``) and every other type to the
float kernel above, 4 rows per launch; ``gemv_max_m`` is 8 (above: ``gguf_gemm``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gfx906_llm.kernels.gfx906.gguf_dequant import (PLANE_DIV16, _ex, Q4_0, Q4_K, Q6_K, Q8_0, check_planes,
                                                     plane_args, plane_signature)
from gfx906_llm.kernels.gfx906 import gguf_mmvq
from gfx906_llm.platform import detect_platform


@triton.jit
def gguf_decode_affine(q_ptr, h_ptr, s_ptr, d_ptr, m_ptr, kv_ptr, q_rs, h_rs, s_rs, d_rs,
                       r, grp, j, rs, gs, QT: tl.constexpr, EXPAND: tl.constexpr):
    """Integer codes and per-group affine terms of 32-element groups: ``w = a * q + b``.

    ``r``/``grp``/``j``: ``[BN, 1, 1]``, ``[1, BG, 1]``, ``[1, 1, 16]``; ``rs``/``gs``: the
    per-group indices (here the same 3-D ``r``/``grp``, ``EXPAND = 0``: per-group values come out
    ``[BN, BG, 1]``, which keeps the loads in the tile's own register layout). Returns ``q0, q1``
    (fp32 codes ``[BN, BG, 16]`` of elements ``32g+j`` and ``32g+16+j``) and ``a0, b0, a1, b1``
    (fp32, per group; ``b*`` unused where HAS_OFFSET is false). The GEMV then needs one FMA per weight: ``sum(w x) = a sum(q x) + b sum(x)``.
    """
    f32: tl.constexpr = tl.float32
    if QT == 8:  # Q8_0
        qp = q_ptr + r * q_rs + grp * 32 + j
        q0 = tl.load(qp).to(f32)
        q1 = tl.load(qp + 16).to(f32)
        a0 = tl.load(d_ptr + rs * d_rs + gs).to(f32)
        a1 = a0
        b0 = a0
        b1 = a0
    elif QT == 10 or QT == 11:  # Q2_K / Q3_K
        wp = q_ptr + rs * q_rs + gs * 2
        c0 = (_ex(tl.load(wp), EXPAND) >> (2 * j)) & 3
        c1 = (_ex(tl.load(wp + 1), EXPAND) >> (2 * j)) & 3
        d = tl.load(d_ptr + rs * d_rs + gs // 8).to(f32)
        if QT == 10:
            dmin = tl.load(m_ptr + rs * d_rs + gs // 8).to(f32)
            sp = s_ptr + rs * s_rs + gs * 2
            sc0 = tl.load(sp).to(tl.int32)
            sc1 = tl.load(sp + 1).to(tl.int32)
            q0 = c0.to(f32)
            q1 = c1.to(f32)
            a0 = d * (sc0 & 15).to(f32)
            a1 = d * (sc1 & 15).to(f32)
            b0 = -(dmin * (sc0 >> 4).to(f32))
            b1 = -(dmin * (sc1 >> 4).to(f32))
        else:  # q = c - 4 (1 - h) = (c | h << 2) - 4
            hw = _ex(tl.load(h_ptr + rs * h_rs + gs), EXPAND)
            q0 = (c0 | (((hw >> j) & 1) << 2)).to(f32)
            q1 = (c1 | (((hw >> (j + 16)) & 1) << 2)).to(f32)
            sb = s_ptr + rs * s_rs + (gs // 8) * 12
            t0 = (gs % 8) * 2
            t1 = t0 + 1
            l0 = (tl.load(sb + t0 % 8).to(tl.int32) >> (4 * (t0 // 8))) & 15
            l1 = (tl.load(sb + t1 % 8).to(tl.int32) >> (4 * (t1 // 8))) & 15
            g0 = (tl.load(sb + 8 + t0 % 4).to(tl.int32) >> (2 * (t0 // 4))) & 3
            g1 = (tl.load(sb + 8 + t1 % 4).to(tl.int32) >> (2 * (t1 // 4))) & 3
            a0 = d * ((l0 | (g0 << 4)) - 32).to(f32)
            a1 = d * ((l1 | (g1 << 4)) - 32).to(f32)
            b0 = -4.0 * a0
            b1 = -4.0 * a1
    else:  # nibble plane types
        b = tl.load(q_ptr + r * q_rs + grp * 16 + j).to(tl.int32)
        lo = b & 15
        hi = b >> 4
        if QT == 6 or QT == 7 or QT == 13:
            hw = _ex(tl.load(h_ptr + rs * h_rs + gs), EXPAND)
            lo = lo | (((hw >> j) & 1) << 4)
            hi = hi | (((hw >> (j + 16)) & 1) << 4)
        if QT == 14:
            hp = h_ptr + rs * h_rs + gs * 2
            lo = lo | (((_ex(tl.load(hp), EXPAND) >> (2 * j)) & 3) << 4)
            hi = hi | (((_ex(tl.load(hp + 1), EXPAND) >> (2 * j)) & 3) << 4)
        if QT == 20 or QT == 23:
            q0 = tl.load(kv_ptr + lo).to(f32)
            q1 = tl.load(kv_ptr + hi).to(f32)
        else:
            q0 = lo.to(f32)
            q1 = hi.to(f32)
        if QT == 2 or QT == 3 or QT == 6 or QT == 7 or QT == 20:
            a0 = tl.load(d_ptr + rs * d_rs + gs).to(f32)
            a1 = a0
            if QT == 2:
                b0 = -8.0 * a0
            elif QT == 6:
                b0 = -16.0 * a0
            elif QT == 20:
                b0 = a0
            else:
                b0 = tl.load(m_ptr + rs * d_rs + gs).to(f32)
            b1 = b0
        elif QT == 12 or QT == 13:
            sb = s_ptr + rs * s_rs + (gs // 8) * 12
            t = gs % 8
            aa = tl.load(sb + t).to(tl.int32)
            bb = tl.load(sb + t + 4).to(tl.int32)
            c = tl.load(sb + tl.where(t >= 4, t - 4, t)).to(tl.int32)
            sc = tl.where(t < 4, aa & 63, (bb & 15) | ((c >> 2) & 0x30))
            mn = tl.where(t < 4, bb & 63, (bb >> 4) | ((aa >> 2) & 0x30))
            a0 = tl.load(d_ptr + rs * d_rs + gs // 8).to(f32) * sc.to(f32)
            b0 = -(tl.load(m_ptr + rs * d_rs + gs // 8).to(f32) * mn.to(f32))
            a1 = a0
            b1 = b0
        elif QT == 14:
            d = tl.load(d_ptr + rs * d_rs + gs // 8).to(f32)
            sp = s_ptr + rs * s_rs + gs * 2
            a0 = d * tl.load(sp).to(f32)
            a1 = d * tl.load(sp + 1).to(f32)
            b0 = -32.0 * a0
            b1 = -32.0 * a1
        else:  # IQ4_XS
            sb = s_ptr + rs * s_rs + (gs // 8) * 6
            t = gs % 8
            sh = (tl.load(sb + t // 4).to(tl.int32) >> (2 * (t % 4))) & 3
            sl = (tl.load(sb + 2 + t // 2).to(tl.int32) >> (4 * (t % 2))) & 15
            a0 = tl.load(d_ptr + rs * d_rs + gs // 8).to(f32) * ((sl | (sh << 4)) - 32).to(f32)
            a1 = a0
            b0 = a0
            b1 = a0
    return q0, q1, a0, b0, a1, b1


@triton.jit
def _row_dot(x_row, grp, j, gmask, q0, q1, a0, b0, a1, b1, HAS_OFFSET: tl.constexpr, EVEN_G: tl.constexpr):
    """``[BN, BG, 1]`` partial dot products of one activation row with the decoded tile."""
    if EVEN_G:
        x0 = tl.load(x_row + grp * 32 + j).to(tl.float32)  # [1, BG, 16]
        x1 = tl.load(x_row + grp * 32 + 16 + j).to(tl.float32)
    else:
        x0 = tl.load(x_row + grp * 32 + j, mask=gmask, other=0.0).to(tl.float32)
        x1 = tl.load(x_row + grp * 32 + 16 + j, mask=gmask, other=0.0).to(tl.float32)
    t = a0 * tl.sum(q0 * x0, axis=2, keep_dims=True) + a1 * tl.sum(q1 * x1, axis=2, keep_dims=True)
    if HAS_OFFSET:
        t += b0 * tl.sum(x0, axis=2, keep_dims=True) + b1 * tl.sum(x1, axis=2, keep_dims=True)
    return t


@triton.jit
def gguf_gemv_kernel(x_ptr, out_ptr, bias_ptr, q_ptr, h_ptr, s_ptr, d_ptr, m_ptr, kv_ptr,
                     q_rs, h_rs, s_rs, d_rs, M, N, G, stride_xm, stride_om,
                     QT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_G: tl.constexpr, EVEN_G: tl.constexpr, HAS_BIAS: tl.constexpr):
    HAS_OFFSET: tl.constexpr = (QT == 2 or QT == 3 or QT == 6 or QT == 7 or QT == 10 or QT == 11
                                or QT == 12 or QT == 13 or QT == 14)
    q_rs = tl.multiple_of(q_rs, 16)
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    pid_m = pid % num_m
    pid_n = pid // num_m
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    rs = tl.minimum(rn, N - 1)[:, None]  # [BN, 1] clamped: no masks on weight loads
    r = rs[:, :, None]  # [BN, 1, 1]
    g = tl.arange(0, BLOCK_G)[None, :, None]  # [1, BG, 1]
    # j = 0..15 written so that the compiler sees runs of 8: nibble bytes (8 B) and fp16
    # activations (16 B) then share one register layout (8 per lane): no LDS round trip
    jj = tl.arange(0, 16)
    j = ((jj % 8) + (jj // 8) * 8)[None, None, :]  # [1, 1, 16]
    m0 = pid_m * BLOCK_M
    x0_row = x_ptr + m0.to(tl.int64) * stride_xm
    x1_row = x_ptr + tl.minimum(m0 + 1, M - 1).to(tl.int64) * stride_xm
    x2_row = x_ptr + tl.minimum(m0 + 2, M - 1).to(tl.int64) * stride_xm
    x3_row = x_ptr + tl.minimum(m0 + 3, M - 1).to(tl.int64) * stride_xm
    acc0 = tl.zeros([BLOCK_N, BLOCK_G, 1], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_N, BLOCK_G, 1], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_N, BLOCK_G, 1], dtype=tl.float32)
    acc3 = tl.zeros([BLOCK_N, BLOCK_G, 1], dtype=tl.float32)
    for g0 in range(0, G, BLOCK_G):
        grp = g0 + g  # [1, BG, 1]
        gmask = grp < G
        gl = grp if EVEN_G else tl.minimum(grp, G - 1)
        q0, q1, a0, b0, a1, b1 = gguf_decode_affine(q_ptr, h_ptr, s_ptr, d_ptr, m_ptr, kv_ptr, q_rs, h_rs,
                                                    s_rs, d_rs, r, gl, j, r, gl, QT, 0)
        acc0 += _row_dot(x0_row, grp, j, gmask, q0, q1, a0, b0, a1, b1, HAS_OFFSET, EVEN_G)
        if BLOCK_M > 1:
            acc1 += _row_dot(x1_row, grp, j, gmask, q0, q1, a0, b0, a1, b1, HAS_OFFSET, EVEN_G)
        if BLOCK_M > 2:
            acc2 += _row_dot(x2_row, grp, j, gmask, q0, q1, a0, b0, a1, b1, HAS_OFFSET, EVEN_G)
            acc3 += _row_dot(x3_row, grp, j, gmask, q0, q1, a0, b0, a1, b1, HAS_OFFSET, EVEN_G)
    bias = tl.zeros([BLOCK_N], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
    o = out_ptr + m0.to(tl.int64) * stride_om + rn  # [BN]
    ty = out_ptr.dtype.element_ty
    mrow = rn * 0 + m0  # [BN] row index as a tensor (masks of the extra rows)
    tl.store(o, (tl.sum(tl.sum(acc0, axis=2), axis=1) + bias).to(ty), mask=rn < N)
    if BLOCK_M > 1:
        tl.store(o + stride_om, (tl.sum(tl.sum(acc1, axis=2), axis=1) + bias).to(ty), mask=(rn < N) & (mrow + 1 < M))
    if BLOCK_M > 2:
        tl.store(o + 2 * stride_om, (tl.sum(tl.sum(acc2, axis=2), axis=1) + bias).to(ty), mask=(rn < N) & (mrow + 2 < M))
        tl.store(o + 3 * stride_om, (tl.sum(tl.sum(acc3, axis=2), axis=1) + bias).to(ty), mask=(rn < N) & (mrow + 3 < M))


# Launch settings per arch. LANES = lanes of one program (num_warps * warp size); each lane
# owns POS tile positions of 16 elements (a group half-pair: 16 nibble bytes, 32 weights), so a
# program tile is BLOCK_N * BLOCK_G = LANES * POS positions (``launch_params``).
# gfx906: wave64, 4 waves = 256 lanes per program; POS = 1 keeps the ISA at 47 (Q8_0), 62
#   (Q4_0), 67 (Q4_K) and 81 (Q6_K) VGPRs, no scratch: 3-4 waves per SIMD (256 // VGPRs) to
#   hide HBM latency; the loop issues global_load_dwordx2 (nibbles, 8 B/lane) and
#   global_load_dwordx4 (fp16 activations), one ushort per group for d, and converts codes
#   with v_bfe_u32 + v_cvt_f32_ubyte0 and accumulates with v_fma_mix_f32 (fp16 x folded in):
#   about 5 VALU per 4-bit weight, so at 60 CUs x 64 lanes x 1.7 GHz the decode, not HBM, is
#   the limit for Q4_* (about 3.7 VALU per weight would match 880 GB/s). MIN_PROGRAMS =
#   4 x 60 CUs: BLOCK_N shrinks for narrow layers so every CU has work (no split-K, which would
#   need an fp32 workspace and a second kernel). No matrix cores: tl.dot buys nothing here.
# gfx90a/gfx942: same wave64 reasoning, more CUs (104 / 304). gfx1100: wave32 (128 lanes).
# cuda: 4 warps, POS = 4 measured best on H200 among POS 1/2/4 x 4/8 warps (4096 -> 14336,
#   M = 1: Q4_0 22.1 us vs 24.4 (POS 2) and 25.8 (POS 1); 8 warps slower).
# MMVQ: Q4_0/Q4_K/Q6_K/Q8_0 go to the integer-dot kernel (gguf_mmvq; its own CONFIGS) for
#   M <= gemv_max_m = 8. Measured on H200 (benchmarks/NOTES_gguf.md): at M = 1 it streams
#   0.47-1.33 of the copy bandwidth (q8_1 launch included) where this float kernel reaches
#   0.34-0.59 (e.g. Q4_K 4096 -> 14336: 0.77 vs 0.43; 4096 -> 1024, launch bound: 0.18-0.31
#   vs 0.21-0.38); at M = 8 it beats the 16-row GEMM on 15 of 20 type/shape pairs (mean 0.24
#   vs 0.20). gfx906: v_dot4_i32_i8 makes the dot ~1 instruction per weight
#   byte (ISA in gguf_mmvq), where this kernel's ~5 VALU per 4-bit weight is above the ~3.7
#   that 880 GB/s allows. gfx1100 and unknown arches keep this float kernel (no dot4 asm
#   there), gemv_max_m = 4 as measured before (M = 4 GEMV beats the 16-row GEMM on 3 of 4
#   shapes on H200, e.g. Q4_0 14336 -> 4096: 39.8 us vs 122.9 us).
CONFIGS = {
    "gfx906": {"LANES": 256, "POS": 1, "num_warps": 4, "num_stages": 1, "MIN_PROGRAMS": 240, "gemv_max_m": 8, "MMVQ": True},
    "gfx90a": {"LANES": 256, "POS": 2, "num_warps": 4, "num_stages": 1, "MIN_PROGRAMS": 416, "gemv_max_m": 8, "MMVQ": True},
    "gfx942": {"LANES": 256, "POS": 2, "num_warps": 4, "num_stages": 1, "MIN_PROGRAMS": 1216, "gemv_max_m": 8, "MMVQ": True},
    "gfx1100": {"LANES": 128, "POS": 2, "num_warps": 4, "num_stages": 1, "MIN_PROGRAMS": 192, "gemv_max_m": 4, "MMVQ": False},
    "cuda": {"LANES": 128, "POS": 4, "num_warps": 4, "num_stages": 1, "MIN_PROGRAMS": 528, "gemv_max_m": 8, "MMVQ": True},
    "default": {"LANES": 128, "POS": 2, "num_warps": 4, "num_stages": 1, "MIN_PROGRAMS": 256, "gemv_max_m": 4, "MMVQ": False},
}


def _config() -> dict:
    return CONFIGS.get(detect_platform().config_key, CONFIGS["default"])


def uses_mmvq(planes, config: dict | None = None) -> bool:
    """Whether ``gguf_gemv`` runs ``planes`` on the integer-dot kernel (then a caller with several
    weights can quantise the activations once: ``gguf_mmvq.quantize_q8_1(x)`` as ``xq``)."""
    return bool((config or _config()).get("MMVQ", False)) and planes.qtype in gguf_mmvq.MMVQ_TYPES


def gemv_max_m() -> int:
    """Largest M that ``GGUFLinearMethod.apply`` sends to this GEMV (above: the GEMM)."""
    return _config()["gemv_max_m"]


def _pow2_floor(v: int) -> int:
    return 1 << (max(1, v).bit_length() - 1)


def launch_params(n: int, k: int, cfg: dict) -> dict:
    """BLOCK_N / BLOCK_G for an ``[n, k]`` weight: the program tile holds LANES*POS positions;
    BLOCK_G (groups per K step) is the largest power of two dividing K/32 that fits (no tail
    masks), BLOCK_N shrinks until there are MIN_PROGRAMS programs (narrow layers)."""
    G = k // 32
    tile = cfg["LANES"] * cfg["POS"]
    bg = min(_pow2_floor(G), tile)
    while bg > 1 and G % bg:
        bg //= 2
    if bg < 8:  # K/32 has a small power-of-two factor (e.g. 28 groups): mask the tail instead
        bg = min(triton.next_power_of_2(G), tile)
    bn = max(1, tile // bg)
    while bn > 1 and triton.cdiv(n, bn) < cfg["MIN_PROGRAMS"]:
        bn //= 2
    return {"BLOCK_N": bn, "BLOCK_G": bg, "EVEN_G": G % bg == 0}


def gguf_gemv(x: torch.Tensor, planes, out: torch.Tensor, bias: torch.Tensor | None = None,
              config: dict | None = None, xq: tuple | None = None) -> torch.Tensor:
    """``out[M, N] = x[M, K] @ W.T (+ bias)`` for a GGUF weight ``planes`` (``GGUFPlanes``).

    Args:
        x: ``[M, K]`` fp16/bf16/fp32 activations, last dim contiguous.
        planes: kernel-layout GGUF tensor, logical ``[N, K]``.
        out: ``[M, N]`` output (may be a column slice of a wider tensor; last dim contiguous).
        bias: optional ``[N]``.
        config: override of this arch's CONFIGS entry (benchmark sweeps; ``MMVQ`` False forces
            the float kernel).
        xq: ``gguf_mmvq.quantize_q8_1(x)``, shared by the shards of a merged layer (used by the
            integer-dot path only).

    Raises:
        ValueError: shape mismatch, M > 8, or a type without a kernel.
    """
    check_planes(planes)
    M, K = x.shape
    if K != planes.k or tuple(out.shape) != (M, planes.n):
        raise ValueError(f"gguf_gemv: x {tuple(x.shape)}, W [{planes.n}, {planes.k}], out {tuple(out.shape)}")
    if M == 0:
        return out
    if x.stride(1) != 1 or out.stride(1) != 1:
        raise ValueError("gguf_gemv: x and out need a contiguous last dimension")
    if M > 8:
        raise ValueError(f"gguf_gemv handles M <= 8 rows, got M={M} (use gguf_gemm)")
    cfg = config or _config()
    if uses_mmvq(planes, cfg):
        return gguf_mmvq.gguf_mmvq(x, planes, out, bias, xq=xq)
    if M > 4:
        gguf_gemv(x[:4], planes, out[:4], bias, dict(cfg, MMVQ=False))
        return gguf_gemv(x[4:], planes, out[4:], bias, dict(cfg, MMVQ=False))
    p = launch_params(planes.n, K, cfg)
    block_m = 1 if M == 1 else 2 if M == 2 else 4
    grid = (triton.cdiv(planes.n, p["BLOCK_N"]) * triton.cdiv(M, block_m),)
    gguf_gemv_kernel[grid](x, out, bias if bias is not None else out, *plane_args(planes),
                           M, planes.n, K // 32, x.stride(0), out.stride(0), QT=planes.qtype,
                           BLOCK_M=block_m, HAS_BIAS=bias is not None, num_warps=cfg["num_warps"],
                           num_stages=cfg["num_stages"], **p)
    return out


def isa_specs() -> list[dict]:
    """GEMV at M = 1 for Q4_0, Q4_K, Q6_K, Q8_0 on Llama-3-8B q_proj (4096 -> 4096)."""
    specs = []
    for arch, cfg in CONFIGS.items():
        p = launch_params(4096, 4096, cfg)
        for qt in (Q4_0, Q4_K, Q6_K, Q8_0):
            sig = {"x_ptr": "*fp16", "out_ptr": "*fp16", "bias_ptr": "*fp16", **plane_signature(qt),
                   "M": "i32", "N": "i32", "G": "i32", "stride_xm": "i32", "stride_om": "i32",
                   "QT": "constexpr", "BLOCK_M": "constexpr", "BLOCK_N": "constexpr",
                   "BLOCK_G": "constexpr", "EVEN_G": "constexpr", "HAS_BIAS": "constexpr"}
            specs.append({"name": f"gguf_gemv_qt{qt}", "fn": gguf_gemv_kernel, "signature": sig,
                          "constexprs": {"QT": qt, "BLOCK_M": 1, "HAS_BIAS": False, **p},
                          "num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"], "arch": arch,
                          "divisible_by_16": ["x_ptr", "out_ptr", "bias_ptr", *PLANE_DIV16, "N",
                                              "stride_xm", "stride_om"]})
    return specs
