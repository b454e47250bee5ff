"""Fused dequantise + GEMM for weight-only 4/8-bit linears (prefill, M > 16), Triton, and the
entry point ``w4a16_linear`` that picks GEMV (``w4a16_gemv.py``), GEMM or dequantise-then-matmul
(``choose_path``).

Same internal layout as ``w4a16_gemv.py`` (``gfx906_llm.quant.packing``). A program computes a
``BLOCK_M x BLOCK_N`` tile (grouped order: ``GROUP_M`` row tiles share each weight tile in L2);
per K block it loads one ``[P, BLOCK_N]`` int32 tile and dequantises it in registers (fp16 when the
activations are fp16: ``q - z`` is exact there, so one rounding as in fp32) for ``tl.dot`` with an
fp32 accumulator; no fp16 copy of the weight is written. Two forms:
* default (AMD): ``x [BM, 16] @ W.T [16, BN]`` per 16-row chunk. ``EXPAND`` (the whole
  ``[KB, BLOCK_N]`` block joined for one K = KB dot) is kept as an option: it was 3x slower on an
  H200 and doubles VGPRs on gfx942.
* ``SWAP`` (CUDA, ``_swap_gemm``): the transposed product ``out.T = W @ x.T``, so that the
  dequantised weight is Hopper wgmma's A operand, which stays in registers (the B operand, x.T,
  comes from shared memory through the software pipeline), ``KD`` K rows per dot (chunks joined
  in registers), and split-K (fp32 partials summed by ``splitk_reduce``) when the output tiles
  are fewer than the SMs. The Machete / Marlin arrangement, within plain Triton.

``dequant_min_m`` (per arch, None = never): from that many rows up, the weight is dequantised
into a transient ``[K, N]`` buffer in the activation dtype by ``w4a16_dequant_kernel`` and
multiplied by the vendor BLAS (``torch.matmul``): the dequantisation is then amortised over many
rows (on an H100 cuBLAS then beats the fused kernel; vllm-gfx906 does the same above 32 rows on
gfx906). The buffer is transient (caching allocator), ``2 * K * N`` bytes per call.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gfx906_llm.kernels.gfx906.splitk_reduce import sum_or_defer
from gfx906_llm.kernels.gfx906.w4a16_common import _grouped_tile, _x_tile_t
from gfx906_llm.kernels.gfx906.w4a16_gemv import (ARCH_CUS, DIV16, ISA_QUANTS, P_ROWS, SIGNATURE, _dequant, _dot,
                                                  _dq_block, _group_params, _x_tile, config_key, gemv, num_cus)

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
# cuda (benchmarks/sweep_prefill_gemm.py on an H100, NOTES_w4a16.md session 4): SWAP, the weight as
#   wgmma's register A operand (no shared-memory round trip of the dequantised weight), KD = 64/128
#   K rows per tl.dot (joined chunks: back-to-back wgmmas that overlap the next dequantisation;
#   one dot per 16-row chunk ran 0.55-0.6x fp16 at M >= 1024, KD 64 on 256 x 128 tiles 0.64-0.75x),
#   split-K up to one program per SM where the output tiles are fewer. Tiles per M (and number of
#   output tiles): 64 x 64 / 4 warps up to M = 64; 128 x 128 (KD 64) where it gives >= 96 tiles,
#   else 128 x 64 (KD 128) up to 128; 256 x 128 (KD 64) where it gives >= 64 tiles, else 128 x 128.
#   dequantise + cuBLAS from M = 512 (K*N <= 2**24) / 768 (larger), where cuBLAS at 0.74-0.95x of
#   fp16 beats the fused kernel; GEMV only up to 16 rows (at 32-64 rows this GEMM ran 1.0-1.6x fp16,
#   the GEMV's dot path 0.6-1.0x).
# default: small tiles for the interpreter.
_CUDA_SWAP = dict(SWAP=True, GROUP_M=8, EVEN_N=True, split_ctas=1, min_split_blocks=4)
CONFIGS: dict[str, dict] = {
    "gfx906": {"gemm": [(1 << 30, dict(BLOCK_M=64, BLOCK_N=128, GROUP_M=8, num_warps=8, num_stages=1))],
               "EXPAND": False, "MAGIC": False, "dequant_min_m": None, "EVEN_K": False},
    "gfx90a": {"gemm": [(1 << 30, dict(BLOCK_M=128, BLOCK_N=128, GROUP_M=8, num_warps=8, num_stages=2))],
               "EXPAND": False, "MAGIC": False, "dequant_min_m": None, "EVEN_K": True},
    "gfx942": {"gemm": [(1 << 30, dict(BLOCK_M=128, BLOCK_N=128, GROUP_M=8, num_warps=8, num_stages=2))],
               "EXPAND": False, "MAGIC": False, "dequant_min_m": None, "EVEN_K": True},
    "gfx1100": {"gemm": [(1 << 30, dict(BLOCK_M=128, BLOCK_N=128, GROUP_M=8, num_warps=8, num_stages=1))],
                "EXPAND": False, "MAGIC": False, "dequant_min_m": None, "EVEN_K": True},
    "cuda": {"gemm": [(64, dict(_CUDA_SWAP, BLOCK_M=64, BLOCK_N=64, KD=128, num_warps=4, num_stages=3)),
                      (128, dict(_CUDA_SWAP, BLOCK_M=128, BLOCK_N=128, KD=64, num_warps=8, num_stages=3,
                                 min_tiles=96)),
                      (128, dict(_CUDA_SWAP, BLOCK_M=128, BLOCK_N=64, KD=128, num_warps=4, num_stages=4)),
                      (1 << 30, dict(_CUDA_SWAP, BLOCK_M=256, BLOCK_N=128, KD=64, num_warps=8, num_stages=3,
                                     min_tiles=64)),
                      (1 << 30, dict(_CUDA_SWAP, BLOCK_M=128, BLOCK_N=128, KD=64, num_warps=8, num_stages=3))],
             "EXPAND": False, "MAGIC": True, "dequant_min_m": [(1 << 24, 512), (1 << 62, 768)], "EVEN_K": True,
             "gemv_max_m": 16},
    "default": {"gemm": [(1 << 30, dict(BLOCK_M=32, BLOCK_N=32, GROUP_M=4, num_warps=4, num_stages=1))],
                "EXPAND": False, "MAGIC": False, "dequant_min_m": None, "EVEN_K": True},
}


@triton.jit
def _join_k(t, NC: tl.constexpr, BLOCK_N: tl.constexpr):
    """Joined chunks ``[BN, P, 2 (, 2 (, 2))]`` (chunk ``c`` at bit ``i`` of the last dims, lowest
    first) -> ``[BN, NC * P]`` in natural K order (column ``c * P + p``). For the wgmma A operand
    this is a register relabelling: each thread already holds the rows its fragment needs."""
    if NC == 2:
        t = tl.permute(t, (0, 2, 1))
    elif NC == 4:
        t = tl.permute(t, (0, 3, 2, 1))
    elif NC == 8:
        t = tl.permute(t, (0, 4, 3, 2, 1))
    return tl.reshape(t, (BLOCK_N, NC * 16))


@triton.jit
def _swap_gemm(x_ptr, qw_ptr, s_ptr, z_ptr, perm_ptr, bias_ptr, out_ptr, ws_ptr, M, N, K, num_kblocks,
               blocks_per_split, stride_xm, stride_om, BITS: tl.constexpr, GROUP: tl.constexpr,
               HAS_ZP: tl.constexpr, HAS_PERM: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr,
               SPLIT_K: tl.constexpr, KD: tl.constexpr):
    """SWAP: the transposed product ``out.T [BLOCK_N, BLOCK_M] = W [BLOCK_N, K] @ x.T`` for one tile and
    one K split (``program_id(1)``). The weight is the dot's A operand, dequantised in registers in
    the operand's own layout (Hopper's wgmma reads A from registers, B from shared memory); x.T is
    the B operand, software-pipelined by num_stages. ``KD`` K rows per ``tl.dot``: 16 = one dot per
    chunk; 32/64/128 join 2/4/8 chunks (``_join_k``) so that ptxas issues their wgmmas back to back
    and overlaps them with the next dot's dequantisation (Triton waits for register-A dots at once)."""
    P: tl.constexpr = 16
    PACK: tl.constexpr = 32 // BITS
    KB: tl.constexpr = PACK * P
    NC: tl.constexpr = KD // P  # chunks per dot
    MASK: tl.constexpr = (1 << BITS) - 1
    F16: tl.constexpr = x_ptr.dtype.element_ty == tl.float16
    pid_m, pid_n = _grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    pid_k = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    offs_p = tl.arange(0, P)
    offs_d = tl.arange(0, KD)
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)  # out.T tile
    kb_lo = pid_k * blocks_per_split
    kb_hi = tl.minimum(kb_lo + blocks_per_split, num_kblocks)
    # splits are never empty: without this the loop's zero-trip path moves the accumulator
    # registers, and ptxas then serialises every wgmma (C7515)
    tl.assume(kb_hi > kb_lo)
    w_ptrs = qw_ptr + offs_p[None, :] * N + offs_n[:, None]  # [BN, P]: word-rows as columns
    for kb in range(kb_lo, kb_hi):
        if EVEN_N:
            wt = tl.load(w_ptrs + kb * P * N)  # [BN, P] int32
        else:
            wt = tl.load(w_ptrs + kb * P * N, mask=mask_n[:, None], other=0)
        for j in tl.static_range(PACK):
            if (j * P) % GROUP == 0 or j == 0:  # scales and zeros once per group
                s, z = _group_params(s_ptr, z_ptr, (kb * KB + j * P) // GROUP, offs_n, mask_n, N, BITS, HAS_ZP)
                s = s[:, None]  # [BN, 1]
                z = z[:, None]
                if F16:  # 1024 + q from the exponent trick, minus 1024 + z: exact; one rounding (the scale)
                    s16 = s.to(tl.float16)
                    zz = (z + 1024.0).to(tl.float16)
            q = (wt >> (j * BITS)) & MASK  # [BN, P]: rows kb*KB + j*P + p
            if F16:
                c = ((q | 0x6400).to(tl.int16).to(tl.float16, bitcast=True) - zz) * s16
            else:
                c = ((q.to(tl.float32) - z) * s).to(x_ptr.dtype.element_ty)
            # gather NC chunks: pairs, then pairs of pairs, ... ([BN, P, 2, 2, 2])
            if NC == 1:
                a = c
            elif j % 2 == 0:
                c_even = c
            else:
                pair = tl.join(c_even, c)
                if NC == 2:
                    a = _join_k(pair, NC, BLOCK_N)
                elif j % 4 == 1:
                    pair_lo = pair
                else:
                    quad = tl.join(pair_lo, pair)
                    if NC == 4:
                        a = _join_k(quad, NC, BLOCK_N)
                    elif j % 8 == 3:
                        quad_lo = quad
                    else:
                        a = _join_k(tl.join(quad_lo, quad), NC, BLOCK_N)
            if j % NC == NC - 1:  # the dot over chunks j - NC + 1 .. j
                xt = _x_tile_t(x_ptr, perm_ptr, offs_m, mask_m, kb * KB + (j + 1 - NC) * P + offs_d, K, stride_xm,
                               HAS_PERM, EVEN_K)  # [KD, BM]
                acc = _dot(a, xt, acc)
    mask_nm = mask_n[:, None] & mask_m[None, :]
    if SPLIT_K:  # fp32 partials ws [splits, M, N], summed by splitk_reduce (the next launch)
        tl.store(ws_ptr + pid_k * M * N + offs_m[None, :] * N + offs_n[:, None], acc, mask=mask_nm)
    else:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[:, None]
        tl.store(out_ptr + offs_m[None, :] * stride_om + offs_n[:, None], acc.to(out_ptr.dtype.element_ty),
                 mask=mask_nm)


@triton.jit
def w4a16_gemm_kernel(
    x_ptr, qw_ptr, s_ptr, z_ptr, perm_ptr, bias_ptr, out_ptr, ws_ptr,
    M, N, K, num_kblocks, blocks_per_split, stride_xm, stride_om,
    BITS: tl.constexpr, GROUP: tl.constexpr, HAS_ZP: tl.constexpr, HAS_PERM: tl.constexpr,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr,
    EXPAND: tl.constexpr, MAGIC: tl.constexpr, EVEN_K: tl.constexpr,
    SWAP: tl.constexpr = False, SPLIT_K: tl.constexpr = False, EVEN_N: tl.constexpr = False,
    KD: tl.constexpr = 16,
):
    if SWAP:  # CUDA: weight as the register A operand, split-K (see _swap_gemm)
        _swap_gemm(x_ptr, qw_ptr, s_ptr, z_ptr, perm_ptr, bias_ptr, out_ptr, ws_ptr, M, N, K, num_kblocks,
                   blocks_per_split, stride_xm, stride_om, BITS, GROUP, HAS_ZP, HAS_PERM, HAS_BIAS, BLOCK_M, BLOCK_N,
                   GROUP_M, EVEN_K, EVEN_N, SPLIT_K, KD)
    else:
        P: tl.constexpr = 16
        PACK: tl.constexpr = 32 // BITS
        KB: tl.constexpr = PACK * P
        CPG: tl.constexpr = (GROUP if GROUP < KB else KB) // P  # chunks that share one group
        pid_m, pid_n = _grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
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
                xb = _x_tile(x_ptr, perm_ptr, offs_m, mask_m, kb * KB + tl.arange(0, KB), K, stride_xm, HAS_PERM,
                             EVEN_K)
                acc = _dot(xb, _dq_block(w, kb, s_ptr, z_ptr, offs_n, mask_n, N, BITS, GROUP, HAS_ZP, MAGIC, xb.dtype),
                           acc)
            else:
                for jg in tl.static_range(PACK // CPG):  # scales and zeros once per group
                    s, z = _group_params(s_ptr, z_ptr, (kb * KB + jg * CPG * P) // GROUP, offs_n, mask_n, N, BITS,
                                         HAS_ZP)
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
                 force: str | None = None, override: dict | None = None, defer_reduce: bool = False):
    """``x @ W.T (+ bias)`` for a weight in the internal layout (``quant/packing.py``).

    Args:
        x: ``[M, K]`` fp16/bf16/fp32, unit stride along K.
        qweight: int32 ``[K_pad / (32 // bits), N]``; scales ``[K_pad / group_size, N]`` (fp16);
            zeros: uint8 like scales or None (``2**(bits-1)``); perm: int32 ``[K]`` or None;
            bias: ``[N]`` or None.
        group_size: internal rows per group (a multiple of 16; ``K_pad`` for per channel).
        force: "gemv", "gemm" or "dequant" instead of the rule (``choose_path``); override:
            launch settings.
        defer_reduce: on the GEMV path and the GEMM's split-K path, return the split-K partials
            as a ``SplitKPartials`` where they would otherwise be summed by a separate reduce
            launch (``splitk_reduce``).
    Returns:
        ``[M, N]`` in ``x.dtype`` (or ``SplitKPartials`` with ``defer_reduce``, see above).
    """
    assert x.dim() == 2 and x.stride(1) == 1 and bits in (4, 8) and x.shape[1] == in_features
    M, K = x.shape
    N = qweight.shape[1]
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if M == 0:
        return out
    kind = force or choose_path(M, K, N)
    if kind == "gemv":
        return gemv(x, qweight, scales, zeros, perm, bias, out, bits, group_size, override, defer_reduce)
    if kind == "dequant":
        w = dequantize(qweight, scales, zeros, perm, bits, group_size, K, x.dtype)  # [K, N]
        if bias is not None:
            return torch.addmm(bias.to(x.dtype), x, w, out=out)
        return torch.matmul(x, w, out=out)
    num_kblocks = qweight.shape[0] // P_ROWS
    tile = gemm_launch_params(M, N, num_kblocks, num_cus(x.device), override=override)
    warps, stages, split = tile.pop("num_warps"), tile.pop("num_stages"), tile.pop("splits")
    tile["KD"] = min(tile["KD"], P_ROWS * 32 // bits)  # a dot spans at most one K block
    ws = torch.empty((split, M, N) if split > 1 else (1,), dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(M, tile["BLOCK_M"]) * triton.cdiv(N, tile["BLOCK_N"]), split)
    w4a16_gemm_kernel[grid](
        x, qweight, scales, zeros if zeros is not None else scales, perm if perm is not None else qweight,
        bias if bias is not None else scales, out, ws, M, N, K, num_kblocks, tile.pop("blocks_per_split"),
        x.stride(0), out.stride(0), SPLIT_K=split > 1, BITS=bits, GROUP=group_size, HAS_ZP=zeros is not None,
        HAS_PERM=perm is not None, HAS_BIAS=bias is not None,
        EVEN_K=tile.pop("EVEN_K") and K == qweight.shape[0] * (32 // bits),
        EVEN_N=tile.pop("EVEN_N") and N % tile["BLOCK_N"] == 0, num_warps=warps, num_stages=stages, **tile)
    if split > 1:
        return sum_or_defer(ws, bias, out, config_key(), defer_reduce)
    return out


def choose_path(M: int, K: int, N: int, arch: str | None = None) -> str:
    """"gemv" for ``M <= gemv_max_m`` (default 16), else "dequant" (dequantise, then the vendor
    BLAS) from the arch's ``dequant_min_m`` rows up, else "gemm". ``dequant_min_m``: None (never),
    an int, or ``[(max K*N, min M), ...]`` (the first entry with ``K*N <= max K*N`` applies)."""
    cfg = CONFIGS[arch or config_key()]
    if M <= cfg.get("gemv_max_m", 16):  # the GEMV's split-K dot path up to here (w4a16_gemv CONFIGS)
        return "gemv"
    dq_m = cfg["dequant_min_m"]
    if isinstance(dq_m, list):
        dq_m = next((m for kn, m in dq_m if K * N <= kn), None)
    return "dequant" if dq_m is not None and M >= dq_m else "gemm"


def gemm_launch_params(M: int, N: int, num_kblocks: int, cus: int, arch: str | None = None,
                       override: dict | None = None) -> dict:
    """Tile, warps, stages and split-K of the fused GEMM for ``M`` rows on ``cus`` compute units:
    the arch's first "gemm" rule with ``M <= bound`` whose tile gives at least its ``min_tiles``
    (default 0) output tiles, then ``override`` (benchmarks, tests).
    ``split_ctas`` (SWAP only; 0 = none) splits K until the grid has about that many programs
    per compute unit times ``cus`` (each split keeps at least ``min_split_blocks`` K blocks)."""
    cfg = CONFIGS[arch or config_key()]
    p = dict(SWAP=False, split_ctas=0, min_split_blocks=4, EVEN_N=False, KD=16)
    p.update(next(c for bound, c in cfg["gemm"] if M <= bound and triton.cdiv(M, c["BLOCK_M"]) *
                  triton.cdiv(N, c["BLOCK_N"]) >= c.get("min_tiles", 0)))
    p.pop("min_tiles", None)
    p.update(EXPAND=cfg["EXPAND"], MAGIC=cfg["MAGIC"], EVEN_K=cfg["EVEN_K"])
    p.update(override or {})
    tiles = triton.cdiv(M, p["BLOCK_M"]) * triton.cdiv(N, p["BLOCK_N"])
    ctas, min_blocks = p.pop("split_ctas"), p.pop("min_split_blocks")
    want = min(max(1, round(ctas * cus / tiles)), max(1, num_kblocks // min_blocks)) if p["SWAP"] else 1
    p["blocks_per_split"] = triton.cdiv(num_kblocks, want)
    p["splits"] = triton.cdiv(num_kblocks, p["blocks_per_split"])
    return p


def isa_specs() -> list[dict]:
    """The fused GEMM's largest tile per arch, 4-bit g128 (symmetric / zero points), 8-bit per channel."""
    sig = {k: v for k, v in SIGNATURE.items() if k != "cnt_ptr"}
    specs = []
    for arch, cfg in CONFIGS.items():
        if arch == "default":
            continue
        assert arch in ARCH_CUS
        for bits, group, zp in ISA_QUANTS:
            tile = gemm_launch_params(4096, 4096, 4096 // (P_ROWS * 32 // bits), ARCH_CUS[arch], arch)
            tile.pop("blocks_per_split")
            tile["SPLIT_K"] = tile.pop("splits") > 1
            warps, stages = tile.pop("num_warps"), tile.pop("num_stages")
            const = dict(BITS=bits, GROUP=group, HAS_ZP=zp, HAS_PERM=False, HAS_BIAS=False, **tile)
            specs.append({"name": f"w4a16_gemm[b{bits}_g{group}{'_zp' if zp else ''}]", "fn": w4a16_gemm_kernel,
                          "signature": dict(sig, **{k: "constexpr" for k in const}), "constexprs": const,
                          "num_warps": warps, "num_stages": stages, "arch": arch,
                          "divisible_by_16": [s for s in DIV16 if s in sig]})
    return specs

