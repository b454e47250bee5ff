"""Fused GGUF dequantise + GEMM for prefill (and for 4 < M <= 16): ``out = x @ W.T (+ bias)``.

``W`` is one GGUF tensor in the kernel layout of ``gfx906_llm.quant.gguf_torch.pack_planes``.
Each program computes a ``[BLOCK_M, BLOCK_N]`` output tile; per K step of ``BLOCK_G``
32-element groups it decodes the weight tile with ``gguf_decode`` directly in ``[K/2, N]``
orientation (the two halves of every group are two ``tl.dot`` operands, ``w0`` for elements
``32g+j`` and ``w1`` for ``32g+16+j``), casts it to the activation dtype and accumulates both dots
in fp32. The decode cost is paid once per ``BLOCK_M`` rows, so prefill is FMA bound like an
fp16 GEMM. Program order is grouped along M (``GROUP_M``) so that neighbouring programs share
weight tiles in L2.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gfx906_llm.kernels.gfx906.gguf_dequant import (PLANE_DIV16, Q4_0, Q4_K, Q6_K, Q8_0, check_planes,
                                                     gguf_decode, plane_args, plane_signature)
from gfx906_llm.kernels.gfx906.w4a16_common import _grouped_tile
from gfx906_llm.platform import detect_platform


@triton.jit
def gguf_gemm_kernel(x_ptr, out_ptr, bias_ptr, q_ptr, h_ptr, s_ptr, d_ptr, m_ptr, kv_ptr,
                     q_rs, h_rs, s_rs, d_rs, M, N, G, stride_xm, stride_om,
                     QT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_G: tl.constexpr, GROUP_M: tl.constexpr, EVEN_G: tl.constexpr,
                     HAS_BIAS: tl.constexpr, DOT_F32: tl.constexpr, DECODE_3D: tl.constexpr):
    q_rs = tl.multiple_of(q_rs, 16)
    pid_m, pid_n = _grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM]
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    rs = tl.minimum(rn, N - 1)[None, :]  # [1, BN] clamped rows of W
    r = rs[:, None, :]  # [1, 1, BN]
    g = tl.arange(0, BLOCK_G)  # groups of the K step
    j = tl.arange(0, 16)[None, :, None]  # [1, 16, 1]
    i = tl.arange(0, BLOCK_G * 16)  # half-group element index within the K step
    x_rows = x_ptr + rm.to(tl.int64)[:, None] * stride_xm  # [BM, 1]
    mmask = (rm < M)[:, None]
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for g0 in range(0, G, BLOCK_G):
        if EVEN_G:
            gs = (g0 + g)[:, None]  # [BG, 1]
            xmask = mmask
        else:
            gs = tl.minimum(g0 + g, G - 1)[:, None]
            xmask = mmask & ((g0 + i // 16) < G)[None, :]
        if DECODE_3D:
            # decode as [BG, 16, BN] (per-group scales loaded once as [BG, BN]) -> [BK/2, BN]
            w0, w1 = gguf_decode(q_ptr, h_ptr, s_ptr, d_ptr, m_ptr, kv_ptr, q_rs, h_rs, s_rs, d_rs,
                                 r, gs[:, :, None], j, rs, gs, QT, 1)
            w0 = tl.reshape(w0, [BLOCK_G * 16, BLOCK_N])
            w1 = tl.reshape(w1, [BLOCK_G * 16, BLOCK_N])
        else:
            # decode straight into [BK/2, BN]: per-element scale loads (L1 hits), no reshape
            if EVEN_G:
                g2 = (g0 + i // 16)[:, None]
            else:
                g2 = tl.minimum(g0 + i // 16, G - 1)[:, None]
            w0, w1 = gguf_decode(q_ptr, h_ptr, s_ptr, d_ptr, m_ptr, kv_ptr, q_rs, h_rs, s_rs, d_rs,
                                 rs, g2, (i % 16)[:, None], rs, g2, QT, 0)
        xo = ((g0 + i // 16) * 32 + i % 16)[None, :]  # [1, BK/2]
        x0 = tl.load(x_rows + xo, mask=xmask, other=0.0)  # [BM, BK/2]
        x1 = tl.load(x_rows + xo + 16, mask=xmask, other=0.0)
        if DOT_F32:
            acc = tl.dot(x0.to(tl.float32), w0, acc, input_precision="ieee")
            acc = tl.dot(x1.to(tl.float32), w1, acc, input_precision="ieee")
        else:
            acc = tl.dot(x0, w0.to(x0.dtype), acc)
            acc = tl.dot(x1, w1.to(x1.dtype), acc)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    o = out_ptr + rm.to(tl.int64)[:, None] * stride_om + rn[None, :]
    tl.store(o, acc.to(out_ptr.dtype.element_ty), mask=mmask & (rn < N)[None, :])


# Launch settings per arch: (max M, tile) pairs, the first whose max M >= M is used.
# gfx906: no matrix cores, tl.dot lowers to v_dot2_f32_f16 / FMA, so the GEMM is bound by
#   fp16 FMA issue and by VGPRs: a 64x64 fp32 accumulator over 256 lanes is 16 VGPRs per lane,
#   the fp16 operand tiles 64x32 + 32x64 go through LDS (2 x 4 KiB per stage) and the decoded
#   [32, 64] weight tile costs ~16 VGPRs; num_stages=1 (no LDS double buffering: the decode sits
#   between the global loads and the dot, so Triton's pipeliner gains little and LDS stays
#   small enough for several workgroups per CU). BLOCK_G=1: K step of one 32-element group
#   (2 dots of 16): the gfx906 ISA of the 64 x 64 tile needs 101-113 VGPRs (2 waves per SIMD)
#   against 128-158 (1 wave) with BLOCK_G=2; 32 x 32 would fit in 74-83 but halves the reuse
#   of each decoded weight. For 4 < M <= 16 the tile is 16 x 64 (80-86 VGPRs): one decode of W
#   serves all M rows.
# gfx90a/gfx942: MFMA: bigger N tile, 2 stages. gfx1100: WMMA, wave32.
# cuda (H100/H200): mma via tl.dot, 128 x 128 tiles, 8 warps.
# DECODE_3D: the types decoded as a [groups, 16, N] tile (scales loaded once per group, then a
#   reshape to the [K/2, N] dot operand) instead of straight into [K/2, N] (a scale load per
#   element, L1 hits, no reshape). Measured on H200 at M = 512, 4096 x 4096: 3-D 98 vs 2-D 59
#   TFLOP/s for Q6_K but 104 vs 208 for Q4_0 (the reshape's layout conversion costs more than
#   the duplicated loads when the scale is one fp16 per 32), so matrix-core arches use it for
#   the per-16-scale types only. With a 16-row tile the decode dominates and 3-D wins for all
#   types on H200 (M = 8, 4096 x 4096: Q4_K 25 vs 36 us, Q6_K 30 vs 137, Q8_0 33 vs 36, Q4_0
#   37 vs 34). gfx906: all types (ISA: 128-158 VGPRs instead of 156-186 at
#   64 x 64, fewer loads; no matrix cores, so the FMA-bound dot hides the conversion; not timed
#   on a gfx906 card).
# MIN_PROGRAMS: the launcher halves BLOCK_N (down to 16) until there are this many programs
# (about 4 workgroups per CU / 2 per SM): a 16-row GEMM over N = 4096 would otherwise start
# only 64 programs and leave most of the chip idle (no split-K).
_ALL = (2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 20, 23)
_PER16 = (10, 11, 14)  # Q2_K, Q3_K, Q6_K: per-16 scales and word planes
CONFIGS = {
    "gfx906": [(16, dict(BLOCK_M=16, BLOCK_N=64, BLOCK_G=2, GROUP_M=1, num_warps=4, num_stages=1, MIN_PROGRAMS=240, DECODE_3D=_ALL)),
               (1 << 30, dict(BLOCK_M=64, BLOCK_N=64, BLOCK_G=1, GROUP_M=8, num_warps=4, num_stages=1, MIN_PROGRAMS=240, DECODE_3D=_ALL))],
    "gfx90a": [(16, dict(BLOCK_M=16, BLOCK_N=64, BLOCK_G=2, GROUP_M=1, num_warps=4, num_stages=1, MIN_PROGRAMS=416, DECODE_3D=_ALL)),
               (1 << 30, dict(BLOCK_M=128, BLOCK_N=128, BLOCK_G=2, GROUP_M=8, num_warps=4, num_stages=2, MIN_PROGRAMS=416, DECODE_3D=_PER16))],
    "gfx942": [(16, dict(BLOCK_M=16, BLOCK_N=64, BLOCK_G=2, GROUP_M=1, num_warps=4, num_stages=1, MIN_PROGRAMS=1216, DECODE_3D=_ALL)),
               (1 << 30, dict(BLOCK_M=128, BLOCK_N=128, BLOCK_G=2, GROUP_M=8, num_warps=4, num_stages=2, MIN_PROGRAMS=1216, DECODE_3D=_PER16))],
    "gfx1100": [(16, dict(BLOCK_M=16, BLOCK_N=64, BLOCK_G=2, GROUP_M=1, num_warps=4, num_stages=1, MIN_PROGRAMS=192, DECODE_3D=_ALL)),
                (1 << 30, dict(BLOCK_M=64, BLOCK_N=64, BLOCK_G=2, GROUP_M=8, num_warps=4, num_stages=2, MIN_PROGRAMS=192, DECODE_3D=_PER16))],
    "cuda": [(16, dict(BLOCK_M=16, BLOCK_N=64, BLOCK_G=4, GROUP_M=1, num_warps=4, num_stages=3, MIN_PROGRAMS=264, DECODE_3D=_ALL)),
             (1 << 30, dict(BLOCK_M=128, BLOCK_N=128, BLOCK_G=2, GROUP_M=8, num_warps=8, num_stages=3, MIN_PROGRAMS=264, DECODE_3D=_PER16))],
    "default": [(16, dict(BLOCK_M=16, BLOCK_N=32, BLOCK_G=1, GROUP_M=1, num_warps=4, num_stages=1, MIN_PROGRAMS=128, DECODE_3D=_ALL)),
                (1 << 30, dict(BLOCK_M=32, BLOCK_N=32, BLOCK_G=1, GROUP_M=8, num_warps=4, num_stages=1, MIN_PROGRAMS=128, DECODE_3D=_PER16))],
}


# DEQUANT_MIN_M: from this many rows on, ``gguf_gemm`` dequantises the weight to fp16 (Triton
# dequantise kernel, in row chunks of at most DEQUANT_CHUNK_BYTES) and calls torch's matmul
# (cuBLAS / hipBLAS) instead of the fused kernel; None: always fused.
# cuda: measured on H200 (benchmarks/NOTES_gguf.md) at M = 64 / 128 / 512 over the Llama-3-8B
#   shapes: dequant + cuBLAS 0.25-0.66x of the fp16 matmul vs 0.14-0.49x fused; the fused
#   kernel wins only 4096 -> 28672 at M = 64. The dequantise step runs at 1.5-3.5 TB/s.
#   benchmarks/sweep_mid_m.py (Q4_K, the four linears of an 8B layer summed, us): M = 16 fused
#   228 vs dequant 302; M = 24 / 32 / 48 / 64 fused 525 / 524 / 533 / 593 vs dequant 303 / 304 /
#   307 / 313: dequantise from 17 rows.
# gfx906 (not measured on the card): both paths are bound by fp16 FMA issue (no matrix cores);
#   the dequantise pass costs ~2.6 B per weight of HBM traffic (~3 ns per 1000 weights at
#   880 GB/s), i.e. <= 12% of an M >= 256 GEMM at ~20 TFLOP/s, and hipBLAS's Tensile kernels
#   (the path vllm-gfx906 takes above 32 rows) avoid the decode inside the FMA loop; below
#   256 rows the fused kernel keeps its no-extra-traffic advantage. 256 is reasoning, to be
#   timed on a gfx906 card. gfx90a/gfx942/gfx1100: not timed, fused.
DEQUANT_MIN_M = {"gfx906": 256, "gfx90a": None, "gfx942": None, "gfx1100": None, "cuda": 17, "default": None}
DEQUANT_CHUNK_BYTES = 128 << 20


def dequant_min_m(key: str | None = None) -> int | None:
    return DEQUANT_MIN_M.get(key or detect_platform().config_key, DEQUANT_MIN_M["default"])


def gguf_dequant_matmul(x: torch.Tensor, planes, out: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``out = x @ dequant(W).T (+ bias)`` through an fp16/bf16 copy of ``W`` (chunks of rows of
    at most DEQUANT_CHUNK_BYTES) and ``torch.nn.functional.linear``; shapes as ``gguf_gemm``."""
    from types import SimpleNamespace

    from gfx906_llm.kernels.gfx906.gguf_dequant import gguf_dequantize

    check_planes(planes)
    dt = x.dtype if x.dtype in (torch.float16, torch.bfloat16) else torch.float32
    rows = max(256, DEQUANT_CHUNK_BYTES // (planes.k * torch.finfo(dt).bits // 8) // 256 * 256)
    for r0 in range(0, planes.n, rows):
        r1 = min(planes.n, r0 + rows)
        sub = SimpleNamespace(qtype=planes.qtype, n=r1 - r0, k=planes.k, kv=planes.kv,
                              **{a: None if getattr(planes, a) is None else getattr(planes, a)[r0:r1]
                                 for a in ("q", "h", "s", "d", "m")})
        w = gguf_dequantize(sub, dtype=dt)  # [r1 - r0, K]
        out[:, r0:r1].copy_(torch.nn.functional.linear(x.to(dt), w, None if bias is None else bias[r0:r1].to(dt)))
    return out


def launch_config(m: int, key: str | None = None) -> dict:
    table = CONFIGS.get(key or detect_platform().config_key, CONFIGS["default"])
    return dict(next(cfg for max_m, cfg in table if m <= max_m))


def gguf_gemm(x: torch.Tensor, planes, out: torch.Tensor, bias: torch.Tensor | None = None,
              config: dict | None = None) -> torch.Tensor:
    """``out[M, N] = x[M, K] @ W.T (+ bias)`` for a GGUF weight ``planes`` (``GGUFPlanes``).

    Args:
        x: ``[M, K]`` fp16/bf16 (tensor-core dots) or fp32 (exact fp32 dots) activations.
        planes: kernel-layout GGUF tensor, logical ``[N, K]``.
        out: ``[M, N]`` (may be a column slice of a wider output; last dim contiguous).
        bias: optional ``[N]``.
        config: override of the launch tile (keys of the CONFIGS entries).

    Raises:
        ValueError: shape mismatch or a type without a kernel.
    """
    check_planes(planes)
    M, K = x.shape
    if K != planes.k or tuple(out.shape) != (M, planes.n):
        raise ValueError(f"gguf_gemm: x {tuple(x.shape)}, W [{planes.n}, {planes.k}], out {tuple(out.shape)}")
    if M == 0:
        return out
    if x.stride(1) != 1 or out.stride(1) != 1:
        raise ValueError("gguf_gemm: x and out need a contiguous last dimension")
    dmin = dequant_min_m()
    if config is None and dmin is not None and M >= dmin:
        return gguf_dequant_matmul(x, planes, out, bias)
    cfg = dict(config) if config else launch_config(M)
    warps, stages = cfg.pop("num_warps"), cfg.pop("num_stages")
    min_programs = cfg.pop("MIN_PROGRAMS", 0)
    decode_3d = cfg.pop("DECODE_3D", ())
    # few output tiles (small M, narrow N): shrink BLOCK_N (not below 16, tl.dot's minimum)
    while (cfg["BLOCK_N"] > 16 and
           triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(planes.n, cfg["BLOCK_N"]) < min_programs):
        cfg["BLOCK_N"] //= 2
    G = K // 32
    grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(planes.n, cfg["BLOCK_N"]),)
    gguf_gemm_kernel[grid](x, out, bias if bias is not None else out, *plane_args(planes),
                           M, planes.n, G, x.stride(0), out.stride(0), QT=planes.qtype,
                           EVEN_G=G % cfg["BLOCK_G"] == 0, HAS_BIAS=bias is not None,
                           DOT_F32=x.dtype == torch.float32, DECODE_3D=planes.qtype in decode_3d,
                           num_warps=warps, num_stages=stages, **cfg)
    return out


def isa_specs() -> list[dict]:
    """Prefill GEMM (M = 512) and the 4 < M <= 16 tile, Q4_0/Q4_K/Q6_K/Q8_0, fp16 activations."""
    specs = []
    for arch in CONFIGS:
        for m in (16, 512):
            cfg = launch_config(m, arch)
            warps, stages = cfg.pop("num_warps"), cfg.pop("num_stages")
            cfg.pop("MIN_PROGRAMS")
            decode_3d = cfg.pop("DECODE_3D")
            for qt in (Q4_0, Q4_K, Q6_K, Q8_0):
                sig = {"x_ptr": "*fp16", "out_ptr": "*fp16", "bias_ptr": "*fp16", **plane_signature(qt),
                       "M": "i32", "N": "i32", "G": "i32", "stride_xm": "i32", "stride_om": "i32",
                       **{k: "constexpr" for k in ("QT", "BLOCK_M", "BLOCK_N", "BLOCK_G", "GROUP_M",
                                                   "EVEN_G", "HAS_BIAS", "DOT_F32", "DECODE_3D")}}
                specs.append({"name": f"gguf_gemm_m{m}_qt{qt}", "fn": gguf_gemm_kernel, "signature": sig,
                              "constexprs": {"QT": qt, "EVEN_G": True, "HAS_BIAS": False, "DOT_F32": False,
                                             "DECODE_3D": qt in decode_3d, **cfg},
                              "num_warps": warps, "num_stages": stages, "arch": arch,
                              "divisible_by_16": ["x_ptr", "out_ptr", "bias_ptr", *PLANE_DIV16, "N",
                                                  "stride_xm", "stride_om"]})
    return specs
