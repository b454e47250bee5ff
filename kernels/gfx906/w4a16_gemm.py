"""Fused dequantise + GEMM for weight-only 4/8-bit linears (prefill, M > 16), Triton, and the
entry point ``w4a16_linear`` that picks GEMV (``w4a16_gemv.py``), GEMM or dequantise-then-matmul.

Same internal layout as ``w4a16_gemv.py`` (``gfx906_llm.quant.packing``). A program computes a
``BLOCK_M x BLOCK_N`` tile (grouped order: ``GROUP_M`` row tiles share each weight tile in L2);
per K block it loads one ``[P, BLOCK_N]`` int32 tile and dequantises it in registers (fp16 when the
activations are fp16: ``q - z`` is exact there, so one rounding as in fp32) for ``tl.dot`` with an
fp32 accumulator, one dot per 16-row chunk; no fp16 copy of the weight is written. ``EXPAND``
(the whole ``[KB, BLOCK_N]`` block joined for one K = KB dot) is kept as an option: it was 3x
slower on an H200 and doubles VGPRs on gfx942.

``dequant_min_m`` (per arch, None = never): from that many rows up, the weight is dequantised
into a transient ``[K, N]`` buffer in the activation dtype by ``w4a16_dequant_kernel`` and
multiplied by the vendor BLAS (``torch.matmul``): the dequantisation is then amortised over many
rows, and on NVIDIA cuBLAS beats this Triton GEMM by 2.5x (vllm-gfx906 does the same above 32
rows on gfx906). The buffer is transient (caching allocator), ``2 * K * N`` bytes per call.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gfx906_llm.kernels.gfx906.w4a16_gemv import (ARCH_CUS, DIV16, ISA_QUANTS, P_ROWS, SIGNATURE, _dequant, _dot,
                                                  _dq_block, _group_params, _x_tile, config_key, gemv)

# GEMM settings per arch: [(max M, tile)], the first rule with M <= max M applies.
# gfx906: FMA-bound (v_dot2_f32_f16, 26.5 TFLOP/s fp16). 64 x 128 on 8 waves (512 lanes) = 16 fp32
#   accumulators per lane plus the 16 x 128 fp16 dequantised chunk: 120-125 VGPRs in the ISA
#   report = 2 waves/SIMD, no scratch (on 4 waves the same tile takes 183 VGPRs = 1 wave/SIMD; a
#   128 x 128 tile on 8 waves spills). The dot operands pass through LDS (16 KiB, far below
#   64 KiB); num_stages=1 for occupancy. dequant_min_m=None: hipBLAS Hgemm is FMA-bound too, so
#   the fused kernel (dequantisation amortised over 64 rows) should hold its own; vllm-gfx906
#   switches to dequantise + Hgemm above 32 rows - to be measured on the card before changing.
# gfx90a / gfx942 / gfx1100: MFMA/WMMA 128 x 128 tiles on 8 warps, per-chunk dots (about 100
#   VGPRs, 4 waves/SIMD on gfx942; EXPAND took 256 VGPRs + AGPRs).
# cuda: from the H200 sweep of benchmarks/bench_w4a16.py: 128 x 256 tiles, 8 warps, 3 stages,
#   per-chunk dots (EXPAND was 3x slower); that is still only ~0.4x of cuBLAS fp16, so from 128
#   rows up the dispatcher dequantises and calls cuBLAS (0.54-0.95x of fp16 measured, M >= 256).
# default: small tiles for the interpreter.
CONFIGS: dict[str, dict] = {
    "gfx906": {"gemm": [(1 << 30, dict(BLOCK_M=64, BLOCK_N=128, GROUP_M=8, num_warps=8, num_stages=1))],
               "EXPAND": False, "MAGIC": False, "dequant_min_m": None, "EVEN_K": False},
    "gfx90a": {"gemm": [(1 << 30, dict(BLOCK_M=128, BLOCK_N=128, GROUP_M=8, num_warps=8, num_stages=2))],
               "EXPAND": False, "MAGIC": False, "dequant_min_m": None, "EVEN_K": True},
    "gfx942": {"gemm": [(1 << 30, dict(BLOCK_M=128, BLOCK_N=128, GROUP_M=8, num_warps=8, num_stages=2))],
               "EXPAND": False, "MAGIC": False, "dequant_min_m": None, "EVEN_K": True},
    "gfx1100": {"gemm": [(1 << 30, dict(BLOCK_M=128, BLOCK_N=128, GROUP_M=8, num_warps=8, num_stages=1))],
                "EXPAND": False, "MAGIC": False, "dequant_min_m": None, "EVEN_K": True},
    "cuda": {"gemm": [(64, dict(BLOCK_M=64, BLOCK_N=128, GROUP_M=8, num_warps=4, num_stages=4)),
                      (1 << 30, dict(BLOCK_M=128, BLOCK_N=256, GROUP_M=8, num_warps=8, num_stages=3))],
             "EXPAND": False, "MAGIC": True, "dequant_min_m": 128, "EVEN_K": True, "gemv_max_m": 64},
    "default": {"gemm": [(1 << 30, dict(BLOCK_M=32, BLOCK_N=32, GROUP_M=4, num_warps=4, num_stages=1))],
                "EXPAND": False, "MAGIC": False, "dequant_min_m": None, "EVEN_K": True},
}


@triton.jit
def w4a16_gemm_kernel(
    x_ptr, qw_ptr, s_ptr, z_ptr, perm_ptr, bias_ptr, out_ptr,
    M, N, K, num_kblocks, stride_xm, stride_om,
    BITS: tl.constexpr, GROUP: tl.constexpr, HAS_ZP: tl.constexpr, HAS_PERM: tl.constexpr,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr,
    EXPAND: tl.constexpr, MAGIC: tl.constexpr, EVEN_K: tl.constexpr,
):
    P: tl.constexpr = 16
    PACK: tl.constexpr = 32 // BITS
    KB: tl.constexpr = PACK * P
    CPG: tl.constexpr = (GROUP if GROUP < KB else KB) // P  # chunks that share one group
    pid = tl.program_id(0)
    n_m = tl.cdiv(M, BLOCK_M)
    n_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * n_n
    first_m = (pid // per_group) * GROUP_M
    size_m = tl.minimum(n_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % size_m
    pid_n = (pid % per_group) // size_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    offs_p = tl.arange(0, P)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for kb in range(0, num_kblocks):
        w = tl.load(qw_ptr + (kb * P + offs_p)[:, None] * N + offs_n[None, :],
                    mask=mask_n[None, :], other=0)  # [P, BN] int32
        if EXPAND:
            xb = _x_tile(x_ptr, perm_ptr, offs_m, mask_m, kb * KB + tl.arange(0, KB), K, stride_xm, HAS_PERM, EVEN_K)
            acc = _dot(xb, _dq_block(w, kb, s_ptr, z_ptr, offs_n, mask_n, N, BITS, GROUP, HAS_ZP, MAGIC, xb.dtype), acc)
        else:
            for jg in tl.static_range(PACK // CPG):  # scales and zeros once per group
                s, z = _group_params(s_ptr, z_ptr, (kb * KB + jg * CPG * P) // GROUP, offs_n, mask_n, N, BITS, HAS_ZP)
                for jj in tl.static_range(CPG):
                    j = jg * CPG + jj
                    xj = _x_tile(x_ptr, perm_ptr, offs_m, mask_m, kb * KB + j * P + offs_p, K, stride_xm,
                                 HAS_PERM, EVEN_K)
                    acc = _dot(xj, _dequant(w, j, s, z, BITS, MAGIC, xj.dtype), acc)  # [P, BN] chunk
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def w4a16_dequant_kernel(qw_ptr, s_ptr, z_ptr, perm_ptr, out_ptr, N, K, BITS: tl.constexpr, GROUP: tl.constexpr,
                         HAS_ZP: tl.constexpr, HAS_PERM: tl.constexpr, MAGIC: tl.constexpr, BLOCK_N: tl.constexpr):
    """``out[k, n] = W[n, k]`` (``[K, N]`` in out's dtype, natural input order) for one K block."""
    P: tl.constexpr = 16
    kb = tl.program_id(0)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_p = tl.arange(0, P)
    w = tl.load(qw_ptr + (kb * P + offs_p)[:, None] * N + offs_n[None, :], mask=mask_n[None, :], other=0)
    for j in tl.static_range(32 // BITS):
        rows = kb * (32 // BITS) * P + j * P + offs_p
        s, z = _group_params(s_ptr, z_ptr, (kb * (32 // BITS) * P + j * P) // GROUP, offs_n, mask_n, N, BITS, HAS_ZP)
        wj = _dequant(w, j, s, z, BITS, MAGIC, out_ptr.dtype.element_ty)
        if HAS_PERM:
            dst = tl.load(perm_ptr + rows, mask=rows < K, other=0)
        else:
            dst = rows
        tl.store(out_ptr + dst[:, None] * N + offs_n[None, :], wj, mask=(rows < K)[:, None] & mask_n[None, :])


def dequantize(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, perm: torch.Tensor | None,
               bits: int, group_size: int, in_features: int, dtype: torch.dtype) -> torch.Tensor:
    """The dense ``W.T [K, N]`` in ``dtype`` (natural input order) from the internal layout."""
    N = qweight.shape[1]
    out = torch.empty((in_features, N), dtype=dtype, device=qweight.device)
    cfg = CONFIGS[config_key()]
    w4a16_dequant_kernel[(qweight.shape[0] // P_ROWS, triton.cdiv(N, 128))](
        qweight, scales, zeros if zeros is not None else scales, perm if perm is not None else qweight, out, N,
        in_features, BITS=bits, GROUP=group_size, HAS_ZP=zeros is not None, HAS_PERM=perm is not None,
        MAGIC=cfg["MAGIC"], BLOCK_N=128, num_warps=4)
    return out


def w4a16_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                 perm: torch.Tensor | None, bias: torch.Tensor | None, bits: int, group_size: int, in_features: int,
                 force: str | None = None, override: dict | None = None) -> torch.Tensor:
    """``x @ W.T (+ bias)`` for a weight in the internal layout (``quant/packing.py``).

    Args:
        x: ``[M, K]`` fp16/bf16/fp32, unit stride along K.
        qweight: int32 ``[K_pad / (32 // bits), N]``; scales ``[K_pad / group_size, N]`` (fp16);
            zeros: uint8 like scales or None (``2**(bits-1)``); perm: int32 ``[K]`` or None;
            bias: ``[N]`` or None.
        group_size: internal rows per group (a multiple of 16; ``K_pad`` for per channel).
        force: "gemv", "gemm" or "dequant" instead of the rule (GEMV for M <= ``gemv_max_m``
            (16, 64 on CUDA), then GEMM, then
            dequantise-then-matmul from the arch's ``dequant_min_m``); override: launch settings.
    Returns:
        ``[M, N]`` in ``x.dtype``.
    """
    assert x.dim() == 2 and x.stride(1) == 1 and bits in (4, 8) and x.shape[1] == in_features
    M, K = x.shape
    N = qweight.shape[1]
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if M == 0:
        return out
    cfg = CONFIGS[config_key()]
    dq_m = cfg["dequant_min_m"]
    gemv_max = cfg.get("gemv_max_m", 16)  # the GEMV's split-K dot path up to here (see w4a16_gemv CONFIGS)
    kind = force or ("gemv" if M <= gemv_max else "dequant" if dq_m is not None and M >= dq_m else "gemm")
    if kind == "gemv":
        return gemv(x, qweight, scales, zeros, perm, bias, out, bits, group_size, override)
    if kind == "dequant":
        w = dequantize(qweight, scales, zeros, perm, bits, group_size, K, x.dtype)  # [K, N]
        if bias is not None:
            return torch.addmm(bias.to(x.dtype), x, w, out=out)
        return torch.matmul(x, w, out=out)
    tile = dict(next(c for bound, c in cfg["gemm"] if M <= bound))
    tile.update(EXPAND=cfg["EXPAND"], MAGIC=cfg["MAGIC"])
    tile.update(override or {})
    warps, stages = tile.pop("num_warps"), tile.pop("num_stages")
    grid = (triton.cdiv(M, tile["BLOCK_M"]) * triton.cdiv(N, tile["BLOCK_N"]),)
    w4a16_gemm_kernel[grid](
        x, qweight, scales, zeros if zeros is not None else scales, perm if perm is not None else qweight,
        bias if bias is not None else scales, out, M, N, K, qweight.shape[0] // P_ROWS, x.stride(0), out.stride(0),
        BITS=bits, GROUP=group_size, HAS_ZP=zeros is not None, HAS_PERM=perm is not None, HAS_BIAS=bias is not None,
        EVEN_K=cfg["EVEN_K"] and K == qweight.shape[0] * (32 // bits), num_warps=warps, num_stages=stages, **tile)
    return out


def isa_specs() -> list[dict]:
    """The fused GEMM's largest tile per arch, 4-bit g128 (symmetric / zero points), 8-bit per channel."""
    sig = {k: v for k, v in SIGNATURE.items() if k not in ("ws_ptr", "cnt_ptr", "blocks_per_split")}
    specs = []
    for arch, cfg in CONFIGS.items():
        if arch == "default":
            continue
        assert arch in ARCH_CUS
        for bits, group, zp in ISA_QUANTS:
            tile = dict(cfg["gemm"][-1][1])
            warps, stages = tile.pop("num_warps"), tile.pop("num_stages")
            const = dict(BITS=bits, GROUP=group, HAS_ZP=zp, HAS_PERM=False, HAS_BIAS=False, EXPAND=cfg["EXPAND"],
                         MAGIC=cfg["MAGIC"], EVEN_K=cfg["EVEN_K"], **tile)
            specs.append({"name": f"w4a16_gemm[b{bits}_g{group}{'_zp' if zp else ''}]", "fn": w4a16_gemm_kernel,
                          "signature": dict(sig, **{k: "constexpr" for k in const}), "constexprs": const,
                          "num_warps": warps, "num_stages": stages, "arch": arch,
                          "divisible_by_16": [s for s in DIV16 if s in sig]})
    return specs

