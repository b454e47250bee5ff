"""Fused dequantise + GEMV for weight-only 4/8-bit linears (decode, M <= 16 rows), Triton.

``y[M, N] = x[M, K] @ W.T (+ bias)``, ``W[n, k] = (q - zero) * scale``, read from the internal
layout of ``gfx906_llm.quant.packing``: int32 ``[K_pad / pack, N]`` with N contiguous; bit field
``j`` of word-row ``b*P + p`` is input row ``b*KB + j*P + p`` (``P = 16``, ``KB = pack * P``);
``scales``/``zeros`` ``[K_pad / GROUP, N]``; ``perm`` gathers activations for GPTQ act-order.
No fp16 copy of the weight is written; accumulation is fp32. Also holds the jit helpers shared
with ``w4a16_gemm.py``.

A program owns ``BLOCK_N`` columns and a contiguous range of K blocks (split-K). Per K block it
loads one ``[P, BLOCK_N]`` int32 tile (four columns per lane: 128-bit loads), then
* M == 1 (FMA path): for each bit field ``j`` multiplies the integer chunk by the ``P`` matching
  activations (loaded as a ``[P, 1]`` column, directly in the rows' layout) into an element-wise
  ``[P, BLOCK_N]`` accumulator; the group scale and zero are applied once per group to the
  partial sums (``sum x (q - z) s = s (sum x q - z sum x)``), and the reduction over ``P``
  happens once, after the K loop;
* M > 1 (dot path): one ``tl.dot`` per 16-row chunk of raw integers (exact in fp16), scaled per
  group like the FMA path. ``EXPAND`` instead dequantises the whole ``[KB, BLOCK_N]`` block and
  joins the chunks for one K = KB dot; it lost on every target checked (H200 timings, gfx942
  VGPRs) and stays as an option.
``MAGIC`` converts integers to floats with the exponent trick (``q | 0x4B000000`` as fp32 minus
2**23; ``q | 0x6400`` as fp16 minus 1024) instead of int->float conversions, which run at quarter
rate on NVIDIA. Split-K partials go to an fp32 workspace; the last program of a column tile
(atomic ticket, reset afterwards) sums them in a fixed order, so one launch is deterministic.
The ticket counters are shared by every launch on a device: no concurrent launches on two streams.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

P_ROWS = 16  # == gfx906_llm.quant.packing.INTERLEAVE

# GEMV settings per arch. "m1" is the FMA path (M == 1); "dot" maps the BLOCK_M bucket (next power
# of two of M) to BLOCK_N; programs_per_cu sets split-K; dot_min_m pads dot rows (16 where
# matrix cores or NVIDIA's tl.dot need it).
# gfx906 (wave64, 60 CUs, 256 VGPRs/lane, no matrix cores, ~880 GB/s read):
#  - 4-bit weights arrive at ~1.76e12/s and the chip issues ~6.6e12 lane-ops/s: <= ~4 VALU ops
#    per weight. The K loop of the M == 1 kernel compiles to v_bfe_u32 + v_cvt_f32_ubyte0 +
#    v_fma_mix_f32 (fp16 x used directly) per weight, 4.7 VALU ops per weight in all (scales,
#    zeros and moves included): ALU-bound near 80% of HBM speed. MAGIC off: the exponent trick
#    takes 5.5 (conversions are full rate on GCN).
#  - M == 1: BLOCK_N=128 on 4 waves = 8 int32 per lane per block (two global_load_dwordx4),
#    63 VGPRs = 4 waves/SIMD in flight to hide HBM latency; the per-lane [P, BLOCK_N] tile keeps
#    the reduction out of the loop. num_stages=1: waves hide latency, not VGPR copies.
#  - M > 1: tl.dot lowers to v_dot2_f32_f16 FMA code, which needs no padding to 16 rows
#    (dot_min_m=1) and no EXPAND (its permutes would round-trip LDS): one dot per chunk.
#    BLOCK_N 64/32 keeps VGPRs at 78-91 (2-3 waves/SIMD, no scratch).
#  - split-K targets 8 programs per CU (480), bounded by the number of K blocks.
#  - EVEN_K off: dropping the K masks lets the scheduler hoist all 8 chunks' x loads and raises
#    the M == 1 kernel from 63 to 98 VGPRs (4 -> 2 waves/SIMD) in the ISA report.
# gfx90a / gfx942 / gfx1100: like gfx906 for M == 1 (bandwidth bound); M > 1 pads to 16 rows for
#   MFMA/WMMA; per-chunk dots (EXPAND costs 2x the VGPRs on gfx942 in the ISA report). gfx1100
#   (wave32) keeps the dot tile on 4 warps: 8 warps spilled (256 VGPRs + scratch), 4 take 110.
# cuda: from the sweep of benchmarks/bench_w4a16.py on an H200 (132 SMs): M == 1 best with
#   BLOCK_N=256, 16 programs/SM, plain conversions (the exponent trick was ~2% slower there);
#   M > 1 best with per-chunk dots (EXPAND's join/permute cost more than they save), MAGIC
#   conversions, BLOCK_N=128, 4 programs/SM; num_stages made no difference.
# default: small tiles for the interpreter on the CPU.
_AMD_DOT = {"BLOCK_N": {2: 64, 4: 64, 8: 64, 16: 64}, "num_warps": 4, "programs_per_cu": 8, "dot_min_m": 16,
            "EXPAND": False, "MAGIC": False}
CONFIGS: dict[str, dict] = {
    "gfx906": {"m1": {"BLOCK_N": 128, "num_warps": 4, "programs_per_cu": 8, "MAGIC": False},
               "dot": dict(_AMD_DOT, BLOCK_N={2: 64, 4: 64, 8: 32, 16: 32}, dot_min_m=1),
               "num_stages": 1, "EVEN_K": False},
    "gfx90a": {"m1": {"BLOCK_N": 128, "num_warps": 4, "programs_per_cu": 8, "MAGIC": False}, "dot": _AMD_DOT,
               "num_stages": 1, "EVEN_K": True},
    "gfx942": {"m1": {"BLOCK_N": 128, "num_warps": 4, "programs_per_cu": 8, "MAGIC": False}, "dot": _AMD_DOT,
               "num_stages": 1, "EVEN_K": True},
    "gfx1100": {"m1": {"BLOCK_N": 128, "num_warps": 8, "programs_per_cu": 8, "MAGIC": False},
                "dot": _AMD_DOT, "num_stages": 1, "EVEN_K": True},
    "cuda": {"m1": {"BLOCK_N": 256, "num_warps": 4, "programs_per_cu": 16, "MAGIC": False},
             "dot": {"BLOCK_N": {2: 128, 4: 128, 8: 128, 16: 128}, "num_warps": 4, "programs_per_cu": 4,
                     "dot_min_m": 16, "EXPAND": False, "MAGIC": True},
             "num_stages": 1, "EVEN_K": True},
    "default": {"m1": {"BLOCK_N": 64, "num_warps": 4, "programs_per_cu": 4, "MAGIC": False},
                "dot": dict(_AMD_DOT, BLOCK_N={2: 64, 4: 32, 8: 32, 16: 32}, programs_per_cu=4),
                "num_stages": 1, "EVEN_K": True},
}


@triton.jit
def _x_tile(x_ptr, perm_ptr, offs_m, mask_m, offs_k, K, stride_xm, HAS_PERM: tl.constexpr, EVEN_K: tl.constexpr):
    """Activations ``x[m, k]`` for internal rows ``offs_k`` (gathered through perm): [BM, len(offs_k)].
    EVEN_K (K a multiple of the K block) drops the K mask: no exec-mask branches on AMD."""
    if EVEN_K:
        mask_k = offs_k >= 0
    else:
        mask_k = offs_k < K
    if HAS_PERM:
        kx = tl.load(perm_ptr + offs_k, mask=mask_k, other=0)
    else:
        kx = offs_k
    return tl.load(x_ptr + offs_m[:, None] * stride_xm + kx[None, :],
                   mask=mask_m[:, None] & mask_k[None, :], other=0.0)


@triton.jit
def _x_col(x_ptr, perm_ptr, offs_k, K, HAS_PERM: tl.constexpr, EVEN_K: tl.constexpr):
    """Row 0 of x at internal rows ``offs_k`` as an fp32 ``[len(offs_k), 1]`` column."""
    if HAS_PERM:
        if EVEN_K:
            kx = tl.load(perm_ptr + offs_k)
        else:
            kx = tl.load(perm_ptr + offs_k, mask=offs_k < K, other=0)
    else:
        kx = offs_k
    if EVEN_K:
        return tl.load(x_ptr + kx[:, None]).to(tl.float32)
    return tl.load(x_ptr + kx[:, None], mask=(offs_k < K)[:, None], other=0.0).to(tl.float32)


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


@triton.jit
def w4a16_gemv_kernel(
    x_ptr, qw_ptr, s_ptr, z_ptr, perm_ptr, bias_ptr, out_ptr, ws_ptr, cnt_ptr,
    M, N, K, num_kblocks, blocks_per_split, stride_xm, stride_om,
    BITS: tl.constexpr, GROUP: tl.constexpr, HAS_ZP: tl.constexpr, HAS_PERM: tl.constexpr,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_K: tl.constexpr,
    USE_DOT: tl.constexpr, EXPAND: tl.constexpr, MAGIC: tl.constexpr, EVEN_K: tl.constexpr,
):
    P: tl.constexpr = 16
    PACK: tl.constexpr = 32 // BITS
    KB: tl.constexpr = PACK * P
    CPG: tl.constexpr = (GROUP if GROUP < KB else KB) // P  # chunks that share one group
    MASK: tl.constexpr = (1 << BITS) - 1
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_m = tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    offs_p = tl.arange(0, P)
    if USE_DOT:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    else:
        acc2 = tl.zeros([P, BLOCK_N], dtype=tl.float32)  # element-wise, reduced after the loop
    kb_lo = pid_k * blocks_per_split
    kb_hi = tl.minimum(kb_lo + blocks_per_split, num_kblocks)
    for kb in range(kb_lo, kb_hi):
        w = tl.load(qw_ptr + (kb * P + offs_p)[:, None] * N + offs_n[None, :],
                    mask=mask_n[None, :], other=0)  # [P, BN] int32
        if USE_DOT and EXPAND:
            xb = _x_tile(x_ptr, perm_ptr, offs_m, mask_m, kb * KB + tl.arange(0, KB), K, stride_xm, HAS_PERM, EVEN_K)
            acc = _dot(xb, _dq_block(w, kb, s_ptr, z_ptr, offs_n, mask_n, N, BITS, GROUP, HAS_ZP, MAGIC, xb.dtype), acc)
        else:
            for jg in tl.static_range(PACK // CPG):
                s, z = _group_params(s_ptr, z_ptr, (kb * KB + jg * CPG * P) // GROUP, offs_n, mask_n, N, BITS, HAS_ZP)
                if USE_DOT:
                    part = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
                    xs = tl.zeros([BLOCK_M], dtype=tl.float32)
                else:
                    part2 = tl.zeros([P, BLOCK_N], dtype=tl.float32)
                    xs1 = tl.zeros([P, 1], dtype=tl.float32)
                for jj in tl.static_range(CPG):
                    j = jg * CPG + jj
                    q = (w >> (j * BITS)) & MASK  # [P, BN]: rows kb*KB + j*P + p
                    if USE_DOT:
                        xj = _x_tile(x_ptr, perm_ptr, offs_m, mask_m, kb * KB + j * P + offs_p, K, stride_xm,
                                     HAS_PERM, EVEN_K)
                        part = _dot(xj, _q_to(q, xj.dtype, MAGIC), part)
                        xs += tl.sum(xj.to(tl.float32), axis=1)
                    else:
                        # x as a [P, 1] column loaded straight into the rows' layout (a [1, P]
                        # load reduced to [P] would need a layout conversion through shared memory)
                        xv = _x_col(x_ptr, perm_ptr, kb * KB + j * P + offs_p, K, HAS_PERM, EVEN_K)
                        part2 += xv * _q_to(q, tl.float32, MAGIC)
                        xs1 += xv
                if USE_DOT:
                    acc += (part - xs[:, None] * z[None, :]) * s[None, :]
                else:
                    acc2 += (part2 - xs1 * z[None, :]) * s[None, :]
    if not USE_DOT:
        acc = tl.sum(acc2, axis=0)[None, :]
    mask_mn = mask_m[:, None] & mask_n[None, :]
    if SPLIT_K > 1:
        tl.store(ws_ptr + pid_k * M * N + offs_m[:, None] * N + offs_n[None, :], acc, mask=mask_mn)
        tl.debug_barrier()
        ticket = tl.atomic_add(cnt_ptr + pid_n, 1, sem="acq_rel")
        if ticket == SPLIT_K - 1:
            acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            for sk in range(SPLIT_K):
                acc += tl.load(ws_ptr + sk * M * N + offs_m[:, None] * N + offs_n[None, :], mask=mask_mn,
                               other=0.0, cache_modifier=".cg")
            if HAS_BIAS:
                acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
            tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], acc.to(out_ptr.dtype.element_ty),
                     mask=mask_mn)
            tl.atomic_xchg(cnt_ptr + pid_n, 0)
    else:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=mask_mn)


@functools.lru_cache(maxsize=None)
def config_key() -> str:
    from gfx906_llm.platform import detect_platform

    return detect_platform().config_key


@functools.lru_cache(maxsize=None)
def num_cus(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


_COUNTERS: dict[torch.device, torch.Tensor] = {}
MAX_COLUMN_TILES = 1 << 16


def ticket_counters(device: torch.device) -> torch.Tensor:
    """The zeroed int32 ticket counters of ``device`` (allocate before CUDA-graph capture)."""
    if device not in _COUNTERS:
        _COUNTERS[device] = torch.zeros(MAX_COLUMN_TILES, dtype=torch.int32, device=device)
    return _COUNTERS[device]


def gemv_launch_params(M: int, N: int, num_kblocks: int, cus: int, arch: str | None = None,
                       override: dict | None = None) -> dict:
    """Tile, warps, split-K for ``M <= 16`` rows on ``cus`` compute units (``override``: benchmarks)."""
    cfg = CONFIGS[arch or config_key()]
    block_m = max(1, triton.next_power_of_2(M))
    if block_m == 1 and not (override or {}).get("USE_DOT", False):
        c = cfg["m1"]
        p = dict(BLOCK_M=1, BLOCK_N=c["BLOCK_N"], num_warps=c["num_warps"], programs_per_cu=c["programs_per_cu"],
                 USE_DOT=False, EXPAND=False, MAGIC=c["MAGIC"])
    else:
        c = cfg["dot"]
        p = dict(BLOCK_M=max(block_m, c["dot_min_m"]), BLOCK_N=c["BLOCK_N"][max(block_m, 2)], num_warps=c["num_warps"],
                 programs_per_cu=c["programs_per_cu"], USE_DOT=True, EXPAND=c["EXPAND"], MAGIC=c["MAGIC"])
    p.update(num_stages=cfg["num_stages"], EVEN_K=cfg["EVEN_K"])
    p.update(override or {})
    n_tiles = triton.cdiv(N, p["BLOCK_N"])
    want = max(1, p.pop("programs_per_cu") * cus // n_tiles)
    bps = triton.cdiv(num_kblocks, min(want, num_kblocks))
    p["blocks_per_split"] = bps
    p["SPLIT_K"] = triton.cdiv(num_kblocks, bps)
    return p


def gemv(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
         perm: torch.Tensor | None, bias: torch.Tensor | None, out: torch.Tensor, bits: int, group_size: int,
         override: dict | None = None) -> torch.Tensor:
    """Launch the GEMV into ``out [M, N]`` (see ``w4a16_gemm.w4a16_linear`` for the arguments)."""
    M, K = x.shape
    N = qweight.shape[1]
    num_kblocks = qweight.shape[0] // P_ROWS
    p = gemv_launch_params(M, N, num_kblocks, num_cus(x.device), override=override)
    assert p["USE_DOT"] or p["BLOCK_M"] == 1 == M, "the FMA path is for M == 1"
    split = p["SPLIT_K"]
    ws = torch.empty((split, M, N) if split > 1 else (1,), dtype=torch.float32, device=x.device)
    n_tiles = triton.cdiv(N, p["BLOCK_N"])
    assert n_tiles <= MAX_COLUMN_TILES
    w4a16_gemv_kernel[(n_tiles, split)](
        x, qweight, scales, zeros if zeros is not None else scales, perm if perm is not None else qweight,
        bias if bias is not None else scales, out, ws, ticket_counters(x.device),
        M, N, K, num_kblocks, p["blocks_per_split"], x.stride(0), out.stride(0),
        BITS=bits, GROUP=group_size, HAS_ZP=zeros is not None, HAS_PERM=perm is not None, HAS_BIAS=bias is not None,
        EVEN_K=p["EVEN_K"] and K == num_kblocks * P_ROWS * (32 // bits), BLOCK_M=p["BLOCK_M"],
        BLOCK_N=p["BLOCK_N"], SPLIT_K=split, USE_DOT=p["USE_DOT"], EXPAND=p["EXPAND"], MAGIC=p["MAGIC"],
        num_warps=p["num_warps"], num_stages=p["num_stages"])
    return out


SIGNATURE = {"x_ptr": "*fp16", "qw_ptr": "*i32", "s_ptr": "*fp16", "z_ptr": "*u8", "perm_ptr": "*i32",
             "bias_ptr": "*fp16", "out_ptr": "*fp16", "ws_ptr": "*fp32", "cnt_ptr": "*i32", "M": "i32", "N": "i32",
             "K": "i32", "num_kblocks": "i32", "blocks_per_split": "i32", "stride_xm": "i32", "stride_om": "i32"}
DIV16 = ["x_ptr", "qw_ptr", "s_ptr", "z_ptr", "perm_ptr", "bias_ptr", "out_ptr", "ws_ptr", "N", "K",
         "stride_xm", "stride_om"]
ARCH_CUS = {"gfx906": 60, "gfx90a": 104, "gfx942": 304, "gfx1100": 48, "cuda": 132}
ISA_QUANTS = ((4, 128, False), (4, 128, True), (8, 4096, False))  # bits, group, zero points


def isa_specs() -> list[dict]:
    """GEMV at M = 1, 4, 16 for 4-bit g128 (symmetric / zero points) and 8-bit per channel, every
    arch in CONFIGS, at Llama-3-8B q_proj size (N = K = 4096)."""
    specs = []
    for arch in CONFIGS:
        if arch == "default":
            continue
        for bits, group, zp in ISA_QUANTS:
            for m in (1, 4, 16):
                p = gemv_launch_params(m, 4096, 4096 // (P_ROWS * 32 // bits), ARCH_CUS[arch], arch)
                const = dict(BITS=bits, GROUP=group, HAS_ZP=zp, HAS_PERM=False, HAS_BIAS=False, BLOCK_M=p["BLOCK_M"],
                             BLOCK_N=p["BLOCK_N"], SPLIT_K=p["SPLIT_K"], USE_DOT=p["USE_DOT"], EXPAND=p["EXPAND"],
                             MAGIC=p["MAGIC"], EVEN_K=p["EVEN_K"])
                specs.append({"name": f"w4a16_gemv[m{m}_b{bits}_g{group}{'_zp' if zp else ''}]",
                              "fn": w4a16_gemv_kernel, "signature": dict(SIGNATURE, **{k: "constexpr" for k in const}),
                              "constexprs": const, "num_warps": p["num_warps"], "num_stages": p["num_stages"],
                              "arch": arch, "divisible_by_16": DIV16})
    return specs
