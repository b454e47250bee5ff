"""Fused dequantise + GEMV for weight-only 4/8-bit linears (decode, M <= 16 rows), Triton.

``y[M, N] = x[M, K] @ W.T (+ bias)``, ``W[n, k] = (q - zero) * scale``, read from the internal
layout of ``gfx906_llm.quant.packing``: int32 ``[K_pad / pack, N]`` with N contiguous; bit field
``j`` of word-row ``b*P + p`` is input row ``b*KB + j*P + p`` (``P = 16``, ``KB = pack * P``);
``scales``/``zeros`` ``[K_pad / GROUP, N]``; ``perm`` gathers activations for GPTQ act-order.
No fp16 copy of the weight is written; accumulation is fp32. The jit helpers shared with
``w4a16_gemm.py`` live in ``w4a16_common.py``, the HALF2 path's in ``w4a16_half2.py``.

A program owns ``BLOCK_N`` columns and a contiguous range of K blocks (split-K). Per K block it
loads one ``[P, BLOCK_N]`` int32 tile (four columns per lane: 128-bit loads; ``PREFETCH`` loads
the next block before computing this one), then
* HALF2 (M <= 4 rows, 4-bit, GROUP % 32 == 0, fp16 x): two weights per instruction, as in
  FasterTransformer / exllama (``dot22_8``): nibbles i and i + 4 of a word (rows ``j*P + p`` with
  j = i, i + 4) are put into one half2 register under the exponent of 1024 (``lop3`` with
  0x000f000f / 0x64006400), ``1024 + zero`` is subtracted exactly (the zero point folded into a
  per-group half2 constant), four ``fma.f16x2`` with the matching activation pairs sum 8 products
  in half2, converted to fp32 and scaled once per group (fp32 accumulation across words). ``ASM``
  uses PTX (CUDA only); without it the same arithmetic runs in portable Triton (the CPU tests).
  Limit: the half2 sums of 4 products must stay finite in fp16 (|x| below ~1000 for 4-bit).
* M == 1 otherwise (FMA path): for each bit field ``j`` multiplies the integer chunk by the ``P`` matching
  activations (loaded as a ``[P, 1]`` column, directly in the rows' layout) into an element-wise
  ``[P, BLOCK_N]`` accumulator; the group scale and zero are applied once per group to the
  partial sums (``sum x (q - z) s = s (sum x q - z sum x)``), and the reduction over ``P``
  happens once, after the K loop;
* M > 1 (dot path): one ``tl.dot`` per 16-row chunk of raw integers (exact in fp16), scaled per
  group like the FMA path (``EXPAND``: one K = KB dot on the dequantised block; slower everywhere).
``MAGIC`` converts integers with the exponent trick (``q | 0x6400`` as fp16 minus 1024) instead of
int->float conversions (quarter rate on NVIDIA). Split-K partials: ``TICKET``, the last program of a
column tile sums them in a fixed order (one deterministic launch; the counters are shared per
device: no concurrent launches on two streams); else ``splitk_reduce.py``, a second launch; or
``ATOMIC`` (CUDA decode), fp32 ``atomic_add`` into the device's zeroed split-K accumulator
(``gfx906_llm.layers.splitk``) that the consumer reads as one row and zeroes (not bit-exact
between runs: fp32 adds in arrival order). ``PRELOAD`` (HALF2, one row, CUDA with PDL): the split's
first weight block and its scales are loaded before ``griddepcontrol.wait`` (``pdl.py``), so a
short split's weight read overlaps the kernels before it; launch settings: ``w4a16_gemv_config.py``.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from gfx906_llm.kernels.gfx906.w4a16_common import (_dequant, _dot, _dq_block, _group_params, _q_to,  # noqa: F401
                                                    _x_col, _x_tile)
from gfx906_llm.kernels.gfx906.splitk_reduce import sum_or_defer
from gfx906_llm.kernels.gfx906.pdl import (launch_kwargs, pdl_enabled, pdl_launch, pdl_wait, prefetch_blocks,
                                           prefetch_l2)
from gfx906_llm.layers.splitk import accumulator_buffer
from gfx906_llm.kernels.gfx906.w4a16_gemv_config import CONFIGS, _CUDA_H2, config_key, gemv_launch_params  # noqa: F401
from gfx906_llm.kernels.gfx906.w4a16_half2 import (_half2_dot, _half2_prep, _half2_scales, _unpack_q4,  # noqa: F401
                                                   _x_pairs)


P_ROWS = 16  # == gfx906_llm.quant.packing.INTERLEAVE


@triton.jit
def _wload(ptrs, mask_n, EVEN_N: tl.constexpr, EVICT: tl.constexpr):
    """The ``[P, BLOCK_N]`` int32 word tile at ``ptrs`` (columns past N masked unless EVEN_N)."""
    if EVEN_N:
        return tl.load(ptrs, eviction_policy=EVICT)
    return tl.load(ptrs, mask=mask_n[None, :], other=0, eviction_policy=EVICT)


@triton.jit
def w4a16_gemv_kernel(
    x_ptr, qw_ptr, s_ptr, z_ptr, perm_ptr, bias_ptr, out_ptr, ws_ptr, cnt_ptr,
    M, N, K, num_kblocks, blocks_per_split, stride_xm, stride_om,
    BITS: tl.constexpr, GROUP: tl.constexpr, HAS_ZP: tl.constexpr, HAS_PERM: tl.constexpr,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_K: tl.constexpr,
    USE_DOT: tl.constexpr, EXPAND: tl.constexpr, MAGIC: tl.constexpr, EVEN_K: tl.constexpr,
    HALF2: tl.constexpr = False, ASM: tl.constexpr = False, PREFETCH: tl.constexpr = False,
    EVICT: tl.constexpr = "", TILE_S: tl.constexpr = False, EVEN_N: tl.constexpr = False,
    PIN: tl.constexpr = False, TICKET: tl.constexpr = True, ATOMIC: tl.constexpr = False,
    PDL: tl.constexpr = False, PF_BLOCKS: tl.constexpr = 0, PRELOAD: tl.constexpr = False,
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
        if BLOCK_M >= 2:  # HALF2 rows 1..3 (rows past M repeat row M - 1; the store masks them)
            acc2b = tl.zeros([P, BLOCK_N], dtype=tl.float32)
            if BLOCK_M == 4:
                acc2c = tl.zeros([P, BLOCK_N], dtype=tl.float32)
                acc2d = tl.zeros([P, BLOCK_N], dtype=tl.float32)
    kb_lo = pid_k * blocks_per_split
    kb_hi = tl.minimum(kb_lo + blocks_per_split, num_kblocks)
    w_ptrs = qw_ptr + offs_p[:, None] * N + offs_n[None, :]
    W_STEP = P * N
    pdl_launch(PDL)  # pdl.py: before the wait only the weight and its scales are read
    if PDL:  # the first PF_BLOCKS weight blocks go to L2 while the previous kernel ends
        LINES: tl.constexpr = BLOCK_N // 32 if BLOCK_N >= 32 else 1  # 128-byte lines per tile row
        offs_l = pid_n * BLOCK_N + tl.arange(0, LINES) * 32
        for b in tl.static_range(PF_BLOCKS):
            prefetch_l2(qw_ptr + (kb_lo + b) * W_STEP + offs_p[:, None] * N + offs_l[None, :],
                        (offs_p[:, None] >= 0) & (offs_l < N)[None, :] & (kb_lo + b < kb_hi), qw_ptr, PDL)
    if PRELOAD:  # HALF2, one row: the split's first block and its scales loaded before the wait
        w0 = _wload(w_ptrs + kb_lo * W_STEP, mask_n, EVEN_N, EVICT)
        za1, za16, zb1, zb16, s0, s2, s4, s6 = _half2_scales(kb_lo, s_ptr, z_ptr, offs_n, mask_n, N, GROUP, HAS_ZP,
                                                             TILE_S, EVEN_N, PIN)
    pdl_wait(PDL)  # x and every store come after this
    kb_first = kb_lo
    if PRELOAD:
        t0, t1, t2, t3 = _unpack_q4(w0, za1, za16, zb1, zb16, ASM)
        xa0, xa1, xa2, xa3 = _x_pairs(x_ptr, perm_ptr, kb_lo * KB, offs_p, K, HAS_PERM, EVEN_K, ASM)
        acc2 += _half2_dot(t0, t1, t2, t3, s0, s2, s4, s6, xa0, xa1, xa2, xa3, GROUP, ASM)
        kb_first = kb_lo + 1
    if PREFETCH:  # register double buffer: block kb + 1 is in flight while block kb is computed
        w_next = _wload(w_ptrs + kb_lo * W_STEP, mask_n, EVEN_N, EVICT)  # splits are never empty
    for kb in range(kb_first, kb_hi):
        if PREFETCH:
            w = w_next  # the last iteration reloads its own block (a cache hit) instead of a K mask
            w_next = _wload(w_ptrs + tl.minimum(kb + 1, kb_hi - 1) * W_STEP, mask_n, EVEN_N, EVICT)
        else:
            w = _wload(w_ptrs + kb * W_STEP, mask_n, EVEN_N, EVICT)  # [P, BN] int32
        if HALF2:  # 4-bit, fp16 x, GROUP % 32 == 0, M <= 4
            t0, t1, t2, t3, s0, s2, s4, s6 = _half2_prep(w, kb, s_ptr, z_ptr, offs_n, mask_n, N, GROUP, HAS_ZP, ASM,
                                                         TILE_S, EVEN_N, PIN)
            xa0, xa1, xa2, xa3 = _x_pairs(x_ptr, perm_ptr, kb * KB, offs_p, K, HAS_PERM, EVEN_K, ASM)
            acc2 += _half2_dot(t0, t1, t2, t3, s0, s2, s4, s6, xa0, xa1, xa2, xa3, GROUP, ASM)
            if BLOCK_M >= 2:  # rows past M repeat row M - 1 (the store masks them)
                xb0, xb1, xb2, xb3 = _x_pairs(x_ptr + tl.minimum(1, M - 1) * stride_xm, perm_ptr, kb * KB, offs_p,
                                              K, HAS_PERM, EVEN_K, ASM)
                acc2b += _half2_dot(t0, t1, t2, t3, s0, s2, s4, s6, xb0, xb1, xb2, xb3, GROUP, ASM)
                if BLOCK_M == 4:
                    xc0, xc1, xc2, xc3 = _x_pairs(x_ptr + tl.minimum(2, M - 1) * stride_xm, perm_ptr, kb * KB,
                                                  offs_p, K, HAS_PERM, EVEN_K, ASM)
                    acc2c += _half2_dot(t0, t1, t2, t3, s0, s2, s4, s6, xc0, xc1, xc2, xc3, GROUP, ASM)
                    xd0, xd1, xd2, xd3 = _x_pairs(x_ptr + tl.minimum(3, M - 1) * stride_xm, perm_ptr, kb * KB,
                                                  offs_p, K, HAS_PERM, EVEN_K, ASM)
                    acc2d += _half2_dot(t0, t1, t2, t3, s0, s2, s4, s6, xd0, xd1, xd2, xd3, GROUP, ASM)
        elif USE_DOT and EXPAND:
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
                        xv = _x_col(x_ptr, perm_ptr, kb * KB + j * P + offs_p, K, HAS_PERM, EVEN_K).to(tl.float32)
                        part2 += xv * _q_to(q, tl.float32, MAGIC)
                        xs1 += xv
                if USE_DOT:
                    acc += (part - xs[:, None] * z[None, :]) * s[None, :]
                else:
                    acc2 += (part2 - xs1 * z[None, :]) * s[None, :]
    if not USE_DOT:
        if BLOCK_M == 1:
            acc = tl.sum(acc2, axis=0)[None, :]
        elif BLOCK_M == 2:  # rows joined once, after the loop: [BN, 2] -> [2, BN]
            acc = tl.permute(tl.join(tl.sum(acc2, axis=0), tl.sum(acc2b, axis=0)), (1, 0))
        else:
            r = tl.join(tl.join(tl.sum(acc2, axis=0), tl.sum(acc2b, axis=0)),
                        tl.join(tl.sum(acc2c, axis=0), tl.sum(acc2d, axis=0)))  # [BN, 2 (i), 2 (o)]: row 2o + i
            acc = tl.reshape(tl.permute(r, (2, 1, 0)), (BLOCK_M, BLOCK_N))
    mask_mn = mask_m[:, None] & mask_n[None, :]
    if SPLIT_K > 1 and ATOMIC:  # ws: the zeroed accumulator [M, N]; the reader zeroes it again
        tl.atomic_add(ws_ptr + offs_m[:, None] * N + offs_n[None, :], acc, mask=mask_mn, sem="relaxed")
    elif SPLIT_K > 1:
        tl.store(ws_ptr + pid_k * M * N + offs_m[:, None] * N + offs_n[None, :], acc, mask=mask_mn)
    if SPLIT_K > 1 and TICKET and not ATOMIC:  # else splitk_reduce, the next launch, sums the partials
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
            tl.atomic_xchg(cnt_ptr + pid_n, 0, sem="relaxed")  # kernel end publishes it; no fence
    if SPLIT_K == 1:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=mask_mn)


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


def gemv(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
         perm: torch.Tensor | None, bias: torch.Tensor | None, out: torch.Tensor, bits: int, group_size: int,
         override: dict | None = None, defer_reduce: bool = False):
    """Launch the GEMV into ``out [M, N]`` (arguments: ``w4a16_gemm.w4a16_linear``); returns ``out``,
    or with ``defer_reduce`` (where the reduce launch would sum) the partials as a
    ``gfx906_llm.layers.splitk.SplitKPartials`` for the consumer to sum, ``out`` left unwritten."""
    M, K = x.shape
    N = qweight.shape[1]
    num_kblocks = qweight.shape[0] // P_ROWS
    h2_ok = bits == 4 and group_size % 32 == 0 and x.dtype == torch.float16
    p = gemv_launch_params(M, N, num_kblocks, num_cus(x.device), override=override, half2_ok=h2_ok)
    assert p["USE_DOT"] or p["BLOCK_M"] == 1 == M or p["HALF2"], "the FMA path is for M == 1"
    split = p["SPLIT_K"]
    atomic = split > 1 and p.get("ATOMIC", False)
    reduce_launch = split > 1 and (atomic or p.get("REDUCE_LAUNCH", False))  # else the ticket epilogue sums
    if atomic:
        ws = accumulator_buffer(x.device, M * N).view(1, M, N)
    else:
        ws = torch.empty((split, M, N) if split > 1 else (1,), dtype=torch.float32, device=x.device)
    n_tiles = triton.cdiv(N, p["BLOCK_N"])
    assert n_tiles <= MAX_COLUMN_TILES
    pdl = p.get("PDL", True) and pdl_enabled(x.device)
    w4a16_gemv_kernel[(n_tiles, split)](
        x, qweight, scales, zeros if zeros is not None else scales, perm if perm is not None else qweight,
        bias if bias is not None else scales, out, ws, ticket_counters(x.device),
        M, N, K, num_kblocks, p["blocks_per_split"], x.stride(0), out.stride(0),
        BITS=bits, GROUP=group_size, HAS_ZP=zeros is not None, HAS_PERM=perm is not None, HAS_BIAS=bias is not None,
        EVEN_K=p["EVEN_K"] and K == num_kblocks * P_ROWS * (32 // bits), BLOCK_M=p["BLOCK_M"],
        BLOCK_N=p["BLOCK_N"], SPLIT_K=split, USE_DOT=p["USE_DOT"], EXPAND=p["EXPAND"], MAGIC=p["MAGIC"],
        HALF2=p["HALF2"], ASM=p["ASM"], PREFETCH=p["PREFETCH"], EVICT=p.get("EVICT", ""),
        TILE_S=p.get("TILE_S", False), EVEN_N=p.get("EVEN_N", False) and N % p["BLOCK_N"] == 0, PIN=p.get("PIN", False),
        TICKET=not reduce_launch, ATOMIC=atomic, PDL=pdl, PF_BLOCKS=prefetch_blocks() if pdl else 0,
        PRELOAD=p["PRELOAD"],
        num_warps=p["num_warps"], num_stages=p["num_stages"], **launch_kwargs(pdl))
    if reduce_launch:
        return sum_or_defer(ws, bias, out, config_key(), defer_reduce, accumulator=atomic)
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
                p = gemv_launch_params(m, 4096, 4096 // (P_ROWS * 32 // bits), ARCH_CUS[arch], arch,
                                       half2_ok=bits == 4 and group % 32 == 0)
                const = dict(BITS=bits, GROUP=group, HAS_ZP=zp, HAS_PERM=False, HAS_BIAS=False, BLOCK_M=p["BLOCK_M"],
                             BLOCK_N=p["BLOCK_N"], SPLIT_K=p["SPLIT_K"], USE_DOT=p["USE_DOT"], EXPAND=p["EXPAND"],
                             MAGIC=p["MAGIC"], EVEN_K=p["EVEN_K"], HALF2=p["HALF2"], ASM=p["ASM"],
                             PREFETCH=p["PREFETCH"], EVICT=p.get("EVICT", ""), TILE_S=p.get("TILE_S", False),
                             EVEN_N=p.get("EVEN_N", False), PIN=p.get("PIN", False),
                             TICKET=not p.get("REDUCE_LAUNCH", False), ATOMIC=p.get("ATOMIC", False))
                specs.append({"name": f"w4a16_gemv[m{m}_b{bits}_g{group}{'_zp' if zp else ''}]",
                              "fn": w4a16_gemv_kernel, "signature": dict(SIGNATURE, **{k: "constexpr" for k in const}),
                              "constexprs": const, "num_warps": p["num_warps"], "num_stages": p["num_stages"],
                              "arch": arch, "divisible_by_16": DIV16})
    return specs
