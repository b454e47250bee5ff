"""Launch settings of the W4A16 GEMV (``w4a16_gemv.py``) per arch, and the choice of path, tile and
split-K for a call (``gemv_launch_params``). Measurements behind the CUDA entries:
``benchmarks/NOTES_w4a16.md`` (kernel tables) and ``benchmarks/NOTES_e2e.md`` (the served step)."""

from __future__ import annotations

import functools

import triton

# GEMV settings per arch. "m1": the FMA path (M == 1), with "HALF2" (use the half2 path where it
# applies: 4-bit, GROUP % 32 == 0, fp16 x), "ASM" (its PTX form) and "half2" (its launch settings);
# "half2_m": BLOCK_M (2, 4) -> HALF2 settings for M = 2..4 rows; "dot" maps the BLOCK_M bucket to
# BLOCK_N; programs_per_cu sets split-K; dot_min_m pads dot rows (16 where matrix cores or
# NVIDIA's tl.dot need it); PREFETCH: the register double buffer of the next K block; PRELOAD
# (HALF2, M == 1, with PDL): each split's first block read before the wait where splits have at
# most preload_max_blocks blocks.
# gfx906 (wave64, 60 CUs, 256 VGPRs/lane, no matrix cores, ~880 GB/s read):
#  - 4-bit weights arrive at ~1.76e12/s and the chip issues ~6.6e12 lane-ops/s: <= ~4 VALU ops
#    per weight. The K loop of the M == 1 kernel compiles to v_bfe_u32 + v_cvt_f32_ubyte0 +
#    v_fma_mix_f32 (fp16 x used directly) per weight, 4.7 VALU ops per weight in all (scales,
#    zeros and moves included): ALU-bound near 80% of HBM speed. MAGIC off: the exponent trick
#    takes 5.5 (conversions are full rate on GCN).
#  - HALF2 off: its portable form (the emulation the CPU tests run) took 105 VGPRs (2 waves/SIMD)
#    against 64. GCN asm (v_and_or_b32 with the same masks, v_pk_add_f16 / v_pk_fma_f16 for q - z,
#    v_dot2_f32_f16: ~1.6 VALU ops per weight) is the next step there; it needs a card.
#  - M == 1: BLOCK_N=128 on 4 waves = 8 int32 per lane per block (two global_load_dwordx4),
#    63 VGPRs = 4 waves/SIMD to hide HBM latency; the [P, BLOCK_N] tile keeps the reduction out
#    of the loop. num_stages=1 and no PREFETCH: waves hide latency, not VGPR copies.
#  - M > 1: tl.dot lowers to v_dot2_f32_f16 FMA code, which needs no padding to 16 rows
#    (dot_min_m=1) and no EXPAND (its permutes would round-trip LDS): one dot per chunk.
#    BLOCK_N 64/32 keeps VGPRs at 78-91 (2-3 waves/SIMD, no scratch).
#  - split-K targets 8 programs per CU (480), bounded by the number of K blocks.
#  - EVEN_K off: without K masks all 8 chunks' x loads are hoisted: 63 -> 98 VGPRs (4 -> 2 waves).
# gfx90a / gfx942 / gfx1100: like gfx906 for M == 1; M > 1 pads to 16 rows for MFMA/WMMA, per-chunk
#   dots (EXPAND: 2x the VGPRs on gfx942). gfx1100 dots on 4 warps (8 spilled; 4 take 110 VGPRs).
# cuda (132 SMs; sweeps and per-shape tables in benchmarks/NOTES_w4a16.md):
#  - M == 1: HALF2 with PTX (2.8 SASS instructions per weight against 5.1 for the FMA path),
#    BLOCK_N=64 on 2 warps, 16 programs/SM, _CUDA_H2 below: 0.27-0.64 of copy bandwidth on the
#    five Llama-3-8B shapes. ATOMIC split-K (session 5; session 3 measured the kernel alone at
#    0.38/0.18/0.67/0.67/0.76 of copy, as fast as with no epilogue): the consumer reads one
#    accumulator row, so o_proj / down_proj lose their reduce launch (64 per 8B decode step).
#    PRELOAD where a split has at most 2 K blocks (q/k/v and o_proj of an 8B model): the first
#    block and its scales are read before the PDL wait, while attention runs. Served 8B step on an
#    H100 (NOTES_e2e.md, session 7): o_proj 200 -> 108 us, qkv 220 -> 159 us per step; the variant
#    holds 95 registers (72 without), so gate_up / down_proj (8 and 4 blocks per split) keep the
#    plain one (all shapes with PRELOAD: 417 against 430 tok/s; fewer, longer PRELOAD splits
#    and maxnreg 64 were slower too).
#  - M == 2: HALF2 rows, 64 on 2 warps, 8 programs/SM, ticket epilogue (1.3-1.75x fp16).
#  - M = 3..4: HALF2 4 rows, 32 on 2 warps, 8 programs/SM, PREFETCH, ticket (1.0-1.2x fp16; 0.5-0.7x
#    at 4096x28672, whose 896 column tiles leave no split-K: 16 programs/SM is the fix to try).
#  - M = 5..16: per-chunk tensor-core dots, MAGIC, BLOCK_N=128 on 4 warps, 4 programs/SM,
#    num_stages=3, ATOMIC (0.74-1.08x fp16). 17..64 rows only when forced (the SWAP GEMM is faster).
#  - FMA path (M == 1 without HALF2): BLOCK_N=256, 4 warps, 16 programs/SM, plain conversions.
#    Tried without gain: tiled layout, unrolled loads, PDL's L2 prefetch of the first blocks.
# default: small tiles and HALF2's portable form for the interpreter (CPU tests run the PTX's logic).
# HALF2 on CUDA (exp_gemv_layout.py, H200): scales in the weight tile's own layout (TILE_S: no
# shared-memory conversion and its two barriers per K block), no column masks (EVEN_N), one barrier
# after the block's loads (PIN: else ptxas sinks each 128-bit weight load to its first use) and
# evict_first on the weight stream: geometric mean over the 8B shapes 0.317 -> 0.355 of copy.
_CUDA_H2 = {"TILE_S": True, "EVEN_N": True, "PIN": True, "EVICT": "evict_first"}
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
    "cuda": {"m1": {"BLOCK_N": 256, "num_warps": 4, "programs_per_cu": 16, "MAGIC": False, "HALF2": True, "ASM": True,
                    "half2": dict(_CUDA_H2, BLOCK_N=64, num_warps=2, programs_per_cu=16, ATOMIC=True, PRELOAD=True,
                                  preload_max_blocks=2)},
             "half2_m": {2: {"BLOCK_N": 64, "num_warps": 2, "programs_per_cu": 8},  # _CUDA_H2: 0.32-0.36 vs 0.38-0.43
                         4: dict(_CUDA_H2, BLOCK_N=32, num_warps=2, programs_per_cu=8, PREFETCH=True)},
             "dot": {"BLOCK_N": {2: 128, 4: 128, 8: 128, 16: 128, 32: 128, 64: 128}, "num_warps": 4, "programs_per_cu": 4,
                     "dot_min_m": 16, "EXPAND": False, "MAGIC": True, "num_stages": 3, "ATOMIC": True},
             "num_stages": 1, "EVEN_K": True},
    "default": {"m1": {"BLOCK_N": 64, "num_warps": 4, "programs_per_cu": 4, "MAGIC": False, "HALF2": True},
                "half2_m": {2: {"BLOCK_N": 32, "num_warps": 4, "programs_per_cu": 4},
                            4: {"BLOCK_N": 32, "num_warps": 4, "programs_per_cu": 4}},
                "dot": dict(_AMD_DOT, BLOCK_N={2: 64, 4: 32, 8: 32, 16: 32}, programs_per_cu=4),
                "num_stages": 1, "EVEN_K": True},
}


@functools.lru_cache(maxsize=None)
def config_key() -> str:
    from gfx906_llm.platform import detect_platform

    return detect_platform().config_key


def gemv_launch_params(M: int, N: int, num_kblocks: int, cus: int, arch: str | None = None,
                       override: dict | None = None, half2_ok: bool = True) -> dict:
    """Tile, warps, split-K for ``M`` rows (up to 64; the dispatcher sends at most w4a16_gemm's
    ``gemv_max_m`` here, 16 on every arch today) on ``cus`` compute
    units (``override``: benchmarks).
    ``half2_ok``: the weight and x allow the HALF2 path (4-bit, GROUP % 32 == 0, fp16 x); it
    is taken for M <= 4 where the arch's "m1" / "half2_m" settings (or ``override``) ask for it."""
    cfg = CONFIGS[arch or config_key()]
    block_m = max(1, triton.next_power_of_2(M))
    ov = dict(override or {})
    c1, h2m = cfg["m1"], cfg.get("half2_m", {})  # half2_m: BLOCK_M -> HALF2 launch settings for M > 1
    default_h2 = c1.get("HALF2", False) if block_m == 1 else block_m in h2m
    if half2_ok and ov.pop("HALF2", default_h2) and not ov.get("USE_DOT", False) and block_m <= 4:
        c = dict(c1, **c1.get("half2", {})) if block_m == 1 else h2m.get(block_m, c1.get("half2", c1))
        p = dict(BLOCK_M=block_m, BLOCK_N=c["BLOCK_N"], num_warps=c["num_warps"], programs_per_cu=c["programs_per_cu"],
                 USE_DOT=False, EXPAND=False, MAGIC=False, HALF2=True, ASM=c1.get("ASM", False))
    elif block_m == 1 and not ov.get("USE_DOT", False):
        c = c1
        p = dict(BLOCK_M=1, BLOCK_N=c1["BLOCK_N"], num_warps=c1["num_warps"], programs_per_cu=c1["programs_per_cu"],
                 USE_DOT=False, EXPAND=False, MAGIC=c1["MAGIC"], HALF2=False, ASM=False)
    else:
        c = cfg["dot"]
        bn = c["BLOCK_N"]
        p = dict(BLOCK_M=max(block_m, c["dot_min_m"]), BLOCK_N=bn.get(max(block_m, 2), bn[max(bn)]), num_warps=c["num_warps"],
                 programs_per_cu=c["programs_per_cu"], USE_DOT=True, EXPAND=c["EXPAND"], MAGIC=c["MAGIC"],
                 HALF2=False, ASM=False)
    p.update(num_stages=c.get("num_stages", cfg["num_stages"]), PREFETCH=c.get("PREFETCH", False),
             **{key: c[key] for key in ("TILE_S", "EVEN_N", "PIN", "EVICT", "REDUCE_LAUNCH", "ATOMIC", "PRELOAD",
                                        "preload_max_blocks") if key in c})
    p["EVEN_K"] = cfg["EVEN_K"]
    ov.pop("HALF2", None)
    p.update(ov)
    n_tiles = triton.cdiv(N, p["BLOCK_N"])
    ppc = p.pop("programs_per_cu")
    bps = triton.cdiv(num_kblocks, min(max(1, ppc * cus // n_tiles), num_kblocks))
    # PRELOAD (first block before the PDL wait): HALF2 at one row without PREFETCH, only where splits
    # are short (the small projections)
    p["PRELOAD"] = (p.get("PRELOAD", False) and p["HALF2"] and p["BLOCK_M"] == 1 and not p["PREFETCH"]
                    and bps <= p.get("preload_max_blocks", num_kblocks))
    p["blocks_per_split"] = bps
    p["SPLIT_K"] = triton.cdiv(num_kblocks, bps)
    return p
