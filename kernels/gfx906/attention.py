"""Unified paged attention (mixed prefill chunks and decode tokens in one launch), Triton.

One kernel serves every step of a continuous-batching engine, with exactly the semantics of
``gfx906_llm.kernels.reference.paged_attention`` (the CPU path and the oracle of the tests).

Algorithm: FlashAttention-2 online softmax (Dao 2023, arXiv:2307.08691) in fp32 with ``exp2``,
over a paged KV cache (vLLM PagedAttention, Kwon et al. 2023, arXiv:2309.06180), with the
query-tile layout of vLLM's Triton unified attention (``vllm/attention/ops/
triton_unified_attention.py``): the ``BLOCK_M`` rows of a tile are ``BLOCK_Q`` query tokens x the
``GROUP`` query heads of one KV head, so one K/V tile load serves the whole GQA group. A program
is ``(query tile, kv head, segment)``; the query tiles of all requests are numbered without a
host sync (``query_start_loc[r] // BLOCK_Q + r``, an upper bound of ``T // BLOCK_Q + R`` tiles)
and found by binary search.

Split-KV (``attention_decode.py``): when the grid is too small for the chip, a query tile's KV
range is split over up to ``NUM_SEGMENTS`` programs (as many as its real length needs) whose fp32
partials the last of them (or a second kernel) combines. Decode tiles hold the GQA group's heads
as rows (``BLOCK_M`` = group padded to a power of 2, >= 16 where ``tl.dot`` is used).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gfx906_llm.kernels.gfx906.attention_decode import MAX_SEGMENTS, num_cus, segment_tiles
from gfx906_llm.kernels.gfx906.attention_decode import alloc_partials as _alloc_partials
from gfx906_llm.kernels.gfx906.attention_decode import reduce_segments, split_flags, store_partials, ticket_counters
from gfx906_llm.kernels.gfx906.attention_decode import num_segments as pick_segments
from gfx906_llm.kernels.gfx906.attention_tile import _tile, early_tile
from gfx906_llm.kernels.gfx906.pdl import launch_kwargs, pdl_enabled, pdl_launch, pdl_wait

_LOG2E = 1.4426950408889634

# Launch settings per arch (Platform.config_key). "decode" is used when every request's query
# fits one tile (BLOCK_M = group padded to a power of 2, at least 16 where tl.dot is used);
# "prefill" otherwise; "decode_d256"/"prefill_d256" override them at head_dim 256. BLOCK_N is given for
# head_dim <= 128 and halves at 256 (same K/V tile bytes). "dot": False computes QK^T and PV as
# fp32 FMAs over an [M, N, D] broadcast instead of tl.dot. Numbers in brackets come from the ISA
# report (`python -m gfx906_llm.kernels.isa`, Triton 3.9, Llama-3-8B heads: group 4, D 128).
#
# gfx906 (wave64, 4 SIMD16 per CU, 256 VGPRs/lane: waves/SIMD = min(10, 256 // vgprs), 64 KiB
# LDS, no matrix cores, v_dot2_f32_f16 = the only packed dot):
#  - tl.dot lowers to an FMA dot that keeps each lane's whole K-extent of both operands in VGPRs
#    (a 16-row q tile alone is 64 VGPRs/lane at D=128): the tl.dot decode tile [16 x 64, 4 warps]
#    took 256 VGPRs + 520 B scratch, 1 wave/SIMD. It would also spend 16 rows of v_dot2 work on
#    a group of 4 (16 flop per K/V byte, 60% of the 26.5 TFLOP/s peak at 1 TB/s).
#  - decode therefore runs without tl.dot: M = the GQA group (4 rows, not 16), fp32 FMAs with D
#    contiguous per lane, 8 warps x BLOCK_N=32 [122 VGPRs, 0 scratch, 2 waves/SIMD, K/V as
#    global_load_dwordx4]: 8 waves per CU keep 16 KiB of K+V loads in flight, about Little's law
#    for ~1 TB/s at ~1 us latency over 60 CUs. BLOCK_N=64 spills [128 VGPRs + 176 B]; 16 warps
#    reach 4 waves/SIMD but only with 16-bit/dword loads or spills; BLOCK_N=16 uses dwordx2.
#    num_stages=1: the AMD stream pipeliner would hold a second tile in VGPRs.
#  - split-KV targets 4 programs (32 waves) per CU: 60 CUs x 4 = 240 programs, so batch 1 of
#    Llama-3-8B (8 KV heads) at 8k splits into 32 segments of 8 tiles.
#  - prefill is v_dot2-bound: BLOCK_M=32 x BLOCK_N=16, 4 warps [240 VGPRs, 0 scratch, 1 wave/SIMD,
#    768 v_dot2]; 64-row tiles and 8 warps spill. At head_dim 256 every tl.dot tile spills, so
#    prefill_d256 uses the FMA path with 4 rows, BLOCK_N=16, 8 warps [128 VGPRs, 0 scratch].
# gfx90a / gfx942 (MFMA, 512 VGPR+AGPR, 64 KiB LDS): tl.dot becomes v_mfma, so prefill tiles grow
#   to 128 x 64 with 4 waves; decode keeps tl.dot (MFMA makes the 16-row padding cheap), 8 warps.
# gfx1100 (wave32, WMMA, 64 KiB LDS per WGP half): v_wmma is register-hungry in Triton: decode
#   BLOCK_N=32 with 8 warps [242 VGPRs, 0 scratch], prefill 32 x 16 with 8 warps [241, 0 scratch];
#   64-row tiles spill. Head-256 decode (tl.dot spilled 632 B) and prefill use the FMA path.
# cuda (sm_80+, mma/wgmma, 227 KiB smem): 128 x 64 prefill tiles, 8 warps, 2 stages (cp.async).
#   H200 (bench_attention.py --sweep, decode from CUDA graphs): decode BLOCK_N=64/4 warps/2 stages
#   beat 3 stages, BLOCK_N=128 and 8 warps; 4 programs per SM beat 2 at batch 64 x 4k (0.97 vs 0.75
#   of copy bandwidth), not at 8 x 8k (0.78 vs 0.85); prefill 128 x 64: 1.06x SDPA flash at 8k.
# Split-KV forms (attention_decode.py): "adaptive" (each request uses cdiv(its KV tiles,
#   min_tiles_per_segment) of the grid's segments) and "fused_reduce" (the last program combines,
#   no second launch) are off: on an H200 (NOTES_attention_decode.md) the fixed split was as fast or
#   faster but at short contexts with batch 8. gfx906 fits the fused combine [128 VGPRs, 0 scratch].
# Early tile (attention_tile.py, with PDL on sm_90+): a segment's first KV tile of earlier steps is
#   read before the wait. H100, 8B GPTQ decode (NOTES_e2e.md, session 7): batch 1 (256 programs)
#   411 -> 430 tok/s, but it takes the decode kernel from 108 to 162 registers (3 programs per SM
#   instead of 4), and batch 8 (1280 programs, several waves) lost 2.7%: hence only for grids of
#   at most "early_programs_per_cu" programs per SM. Those launches take "decode_early": BLOCK_N 32,
#   1 stage (served batch 1: 442 -> 462 tok/s; as the plain decode tile it cost 0-16% at batch
#   8-64 and 8k-32k contexts in bench_attention.py --quick, so the plain tile stays 64 / 2 stages).
# default: conservative, also what the interpreter runs on CPU.
_SPLIT = {"programs_per_cu": 4, "min_tiles_per_segment": 4, "adaptive": False, "fused_reduce": False}
CONFIGS: dict[str, dict] = {
    "gfx906": {"decode": {"BLOCK_N": 32, "num_warps": 8, "num_stages": 1, "dot": False},
               "prefill": {"BLOCK_M": 32, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1},
               "prefill_d256": {"BLOCK_M": 4, "BLOCK_N": 16, "num_warps": 8, "num_stages": 1, "dot": False},
               "red_s": 8, **_SPLIT},
    "gfx90a": {"decode": {"BLOCK_N": 64, "num_warps": 8, "num_stages": 1, "dot": True},
               "prefill": {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 1}, **_SPLIT},
    "gfx942": {"decode": {"BLOCK_N": 64, "num_warps": 8, "num_stages": 1, "dot": True},
               "prefill": {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}, **_SPLIT},
    "gfx1100": {"decode": {"BLOCK_N": 32, "num_warps": 8, "num_stages": 1, "dot": True},
                "decode_d256": {"BLOCK_N": 16, "num_warps": 8, "num_stages": 1, "dot": False},
                "prefill": {"BLOCK_M": 32, "BLOCK_N": 16, "num_warps": 8, "num_stages": 1},
                "prefill_d256": {"BLOCK_M": 4, "BLOCK_N": 16, "num_warps": 8, "num_stages": 1, "dot": False}, **_SPLIT},
    "cuda": {"decode": {"BLOCK_N": 64, "num_warps": 4, "num_stages": 2, "dot": True},
             "prefill": {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 2}, **_SPLIT,
             "early_programs_per_cu": 2, "decode_early": {"BLOCK_N": 32, "num_warps": 4, "num_stages": 1, "dot": True}},
    "default": {"decode": {"BLOCK_N": 32, "num_warps": 4, "num_stages": 1, "dot": True},
                "prefill": {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 4, "num_stages": 1},
                **_SPLIT, "min_tiles_per_segment": 2},
}


@triton.jit
def unified_attention_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, part_acc_ptr, part_m_ptr, part_l_ptr, cnt_ptr,
    qsl_ptr, seq_lens_ptr, bt_ptr,
    qk_scale, soft_cap, window, num_reqs,
    stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
    stride_ot, stride_oh, stride_bt,
    NUM_HEADS: tl.constexpr, GROUP: tl.constexpr, HEAD: tl.constexpr, HEAD_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    NUM_SEGMENTS: tl.constexpr, USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr,
    USE_DOT: tl.constexpr, MIN_TILES: tl.constexpr, FUSED: tl.constexpr, RED_S: tl.constexpr,
    PDL: tl.constexpr = False, EARLY: tl.constexpr = False,
):
    pdl_launch(PDL)  # pdl.py; before the wait only the step's inputs and earlier steps' cache rows
    qb = tl.program_id(0)
    kvh = tl.program_id(1)
    seg = tl.program_id(2)
    # request of this query tile: the largest r with qsl[r] // BLOCK_Q + r <= qb
    lo = 0
    hi = num_reqs
    while lo < hi:
        mid = (lo + hi) // 2
        if tl.load(qsl_ptr + mid) // BLOCK_Q + mid <= qb:
            lo = mid + 1
        else:
            hi = mid
    r = lo - 1
    q_start = tl.load(qsl_ptr + r)
    q_len = tl.load(qsl_ptr + r + 1) - q_start
    q_lo = (qb - (q_start // BLOCK_Q + r)) * BLOCK_Q
    seq_len = tl.load(seq_lens_ptr + r)
    ctx = seq_len - q_len  # keys below ctx were cached by earlier steps

    # KV tiles of this segment, the ones every row sees in full (no mask), segments in use
    s_lo, s_hi, u_lo, u_hi, n_act = segment_tiles(ctx, q_lo, tl.minimum(q_lo + BLOCK_Q, q_len), window, seg,
                                                  USE_WINDOW, BLOCK_N, MIN_TILES, NUM_SEGMENTS)
    bt_row = bt_ptr + r.to(tl.int64) * stride_bt
    k_head = kvh.to(tl.int64) * stride_kh
    v_head = kvh.to(tl.int64) * stride_vh
    if EARLY:  # attention_tile.py: the first tile's earlier-step rows, read while the producer runs
        live = (q_lo < q_len) & (s_lo < s_hi)
        if MIN_TILES > 0:
            live = live & (seg < n_act)
        blk0, k0, v0 = early_tile(k_ptr, v_ptr, bt_row, k_head, v_head, stride_kb, stride_ks, stride_vb, stride_vs,
                                  s_lo, live, seq_len, ctx, HEAD, HEAD_PAD, BLOCK_SIZE, BLOCK_N, USE_DOT)
    pdl_wait(PDL)  # q, this step's cache rows and every store come after this
    if q_lo >= q_len:
        return
    if MIN_TILES > 0:
        if seg >= n_act:
            return  # unused segment of a short request: stores nothing, no reader looks at it

    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_PAD)
    tok = offs_m // GROUP
    q_pos = q_lo + tok  # [M] position inside this step's query
    head = kvh * GROUP + offs_m % GROUP
    row_ok = (tok < BLOCK_Q) & (q_pos < q_len)
    row_pos = ctx + q_pos  # [M] absolute position
    q_rows = (q_start + q_pos).to(tl.int64)
    q = tl.load(q_ptr + q_rows[:, None] * stride_qt + head[:, None] * stride_qh + offs_d[None, :],
                mask=row_ok[:, None] & (offs_d < HEAD)[None, :], other=0.0)  # [M, D]
    if not USE_DOT:
        q = q.to(tl.float32)

    acc = tl.zeros([BLOCK_M, HEAD_PAD], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    s_first = s_lo
    if EARLY:
        if s_lo < s_hi:
            acc, m_i, l_i = _tile(acc, m_i, l_i, q, s_lo, k_ptr, v_ptr, bt_row, k_head, v_head,
                                  stride_kb, stride_ks, stride_vb, stride_vs, row_pos, seq_len, window, qk_scale,
                                  soft_cap, HEAD, HEAD_PAD, BLOCK_SIZE, BLOCK_N, True, USE_WINDOW, USE_SOFTCAP,
                                  USE_DOT, True, blk0, k0, v0, ctx)
        s_first = s_lo + 1
    for t in range(s_first, tl.minimum(s_hi, u_lo)):
        acc, m_i, l_i = _tile(acc, m_i, l_i, q, t, k_ptr, v_ptr, bt_row, k_head, v_head,
                              stride_kb, stride_ks, stride_vb, stride_vs, row_pos, seq_len, window, qk_scale,
                              soft_cap, HEAD, HEAD_PAD, BLOCK_SIZE, BLOCK_N, True, USE_WINDOW, USE_SOFTCAP, USE_DOT)
    for t in range(tl.maximum(s_first, u_lo), tl.minimum(s_hi, u_hi)):
        acc, m_i, l_i = _tile(acc, m_i, l_i, q, t, k_ptr, v_ptr, bt_row, k_head, v_head,
                              stride_kb, stride_ks, stride_vb, stride_vs, row_pos, seq_len, window, qk_scale,
                              soft_cap, HEAD, HEAD_PAD, BLOCK_SIZE, BLOCK_N, False, USE_WINDOW, USE_SOFTCAP, USE_DOT)
    for t in range(tl.maximum(s_first, u_hi), s_hi):
        acc, m_i, l_i = _tile(acc, m_i, l_i, q, t, k_ptr, v_ptr, bt_row, k_head, v_head,
                              stride_kb, stride_ks, stride_vb, stride_vs, row_pos, seq_len, window, qk_scale,
                              soft_cap, HEAD, HEAD_PAD, BLOCK_SIZE, BLOCK_N, True, USE_WINDOW, USE_SOFTCAP, USE_DOT)

    o_ptrs = out_ptr + q_rows[:, None] * stride_ot + head[:, None] * stride_oh + offs_d[None, :]
    o_mask = row_ok[:, None] & (offs_d < HEAD)[None, :]
    if NUM_SEGMENTS == 1:
        tl.store(o_ptrs, (acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]).to(out_ptr.dtype.element_ty), mask=o_mask)
    elif n_act == 1:  # adaptive split, one segment: no partials
        tl.store(o_ptrs, (acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]).to(out_ptr.dtype.element_ty), mask=o_mask)
    else:
        store_partials(acc, m_i, l_i, part_acc_ptr, part_m_ptr, part_l_ptr, cnt_ptr + qb * tl.num_programs(1) + kvh,
                       (q_rows * NUM_HEADS + head) * NUM_SEGMENTS, seg, n_act, row_ok, o_ptrs, o_mask, BLOCK_M,
                       HEAD_PAD, NUM_SEGMENTS, FUSED, RED_S)


def _config_key() -> str:
    from gfx906_llm.platform import detect_platform

    return detect_platform().config_key


def _launch_params(cfg: dict, group: int, head_pad: int, max_query_len: int,
                   decode: str = "decode") -> tuple[str, int, int, bool, dict]:
    """(kind, BLOCK_M, BLOCK_N, USE_DOT, launch options) for this batch; ``decode``: the CONFIGS
    entry used for a decode batch ("decode", or "decode_early" with the early tile)."""
    def pick(kind: str) -> tuple[dict, int]:  # (settings, head_dim that BLOCK_N is scaled for)
        if head_pad > 128 and f"{kind}_d256" in cfg:  # per-arch override for wide heads
            return cfg[f"{kind}_d256"], 128
        return cfg[kind], max(128, head_pad)  # BLOCK_N shrinks with wide heads: same tile bytes

    dec, _ = pick("decode")
    pow2_group = triton.next_power_of_2(group)
    m_dec = max(16, pow2_group) if dec.get("dot", True) else pow2_group
    kind = "decode" if max_query_len <= m_dec // group else "prefill"
    c, wide = pick(decode if kind == "decode" else kind)
    use_dot = c.get("dot", True)
    block_m = m_dec if kind == "decode" else max(c["BLOCK_M"], pow2_group)
    block_n = max(16 if use_dot else 8, c["BLOCK_N"] * 128 // wide)
    return kind, block_m, block_n, use_dot, {"num_warps": c["num_warps"], "num_stages": c["num_stages"]}


def unified_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    block_table: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
    soft_cap: float | None = None,
    out: torch.Tensor | None = None,
    *,
    max_query_len: int | None = None,
    max_seq_len: int | None = None,
    num_segments: int | None = None,
    early: bool | None = None,
) -> torch.Tensor:
    """Causal attention of a mixed prefill/decode batch over a paged KV cache (Triton).

    Same arguments and result as ``gfx906_llm.kernels.reference.paged_attention``: q ``[T, Hq,
    D]`` fp16/bf16, k/v cache ``[num_blocks, block_size, Hkv, D]`` (q's dtype), query_start_loc
    ``[R+1]`` int32, seq_lens ``[R]`` int32, block_table ``[R, max_blocks]`` int32; returns ``[T,
    Hq, D]``. Rows past ``query_start_loc[-1]`` are left as they were in ``out`` (zero when
    ``out`` is None). Softmax and accumulation run in fp32.

    Args:
        max_query_len, max_seq_len: host-known maxima of the query lengths and seq_lens, to avoid
            a device->host sync (under CUDA-graph capture pass the captured-for values: the grid's
            segment count follows them, each request uses what its seq_len needs). None: synced.
        num_segments: force the grid's split-KV segment count (a power of 2, <= 64); None picks it
            from the compute-unit count and ``max_seq_len``. Fused split-KV (CONFIGS
            "fused_reduce") shares per-device counters: no concurrent launches on two streams.
        early: read each segment's first KV tile (the rows of earlier steps) before waiting for
            the previous kernel (``attention_tile.early_tile``); None: with PDL, where the grid has
            at most CONFIGS' ``early_programs_per_cu`` programs per compute unit.

    Raises:
        ValueError: unsupported dtype, head size (> 256), a head count that is not a multiple of
            the KV head count, or mismatched shapes.
    """
    if q.dim() != 3 or k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(f"expected q [T, Hq, D] and k/v caches [blocks, block_size, Hkv, D], got "
                         f"{tuple(q.shape)}, {tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    T, hq, d = q.shape
    _, block_size, hkv, dk = k_cache.shape
    if dk != d or d > 256 or hq % hkv != 0:
        raise ValueError(f"head_dim {d} (cache {dk}) must match and be <= 256; num_heads {hq} must be a "
                         f"multiple of num_kv_heads {hkv}")
    if q.dtype not in (torch.float16, torch.bfloat16) or k_cache.dtype != q.dtype:
        raise ValueError(f"q and the caches must share dtype float16 or bfloat16, got {q.dtype}, {k_cache.dtype}")
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("q, k_cache and v_cache need a contiguous last (head_dim) dimension")
    if num_segments is not None and not (1 <= num_segments <= MAX_SEGMENTS and num_segments & (num_segments - 1) == 0):
        raise ValueError(f"num_segments={num_segments}: expected a power of 2 in [1, {MAX_SEGMENTS}]")
    if out is None:
        out = torch.zeros_like(q)
    num_reqs = seq_lens.shape[0]
    if T == 0 or num_reqs == 0:
        return out
    if max_query_len is None:
        max_query_len = int((query_start_loc[1:] - query_start_loc[:-1]).max())
    if max_seq_len is None:
        max_seq_len = int(seq_lens.max())
    group = hq // hkv
    head_pad = max(16, triton.next_power_of_2(d))
    cfg = CONFIGS.get(_config_key(), CONFIGS["default"])
    kind, block_m, block_n, use_dot, opts = _launch_params(cfg, group, head_pad, max_query_len)
    block_q = block_m // group
    n_qblocks = T // block_q + num_reqs
    nseg = num_segments
    cus = num_cus(q.device.index or 0) if q.is_cuda else 60
    if nseg is None:
        busy = num_reqs if kind == "decode" else min(n_qblocks, num_reqs * -(-max_query_len // block_q))
        nseg = pick_segments(cfg, busy * hkv, max_seq_len, block_n, cus, max_query_len)
    use_cap = soft_cap is not None and soft_cap > 0
    use_win = sliding_window is not None and sliding_window > 0
    win = int(sliding_window) if use_win else 0
    pdl = pdl_enabled(q.device)
    max_early = cfg.get("early_programs_per_cu", 0) * cus
    if early is None:  # the early tile's registers cost occupancy: only for grids of about one wave
        early = pdl and n_qblocks * hkv * nseg <= max_early
    if early and kind == "decode" and "decode_early" in cfg and num_segments is None:
        # its own tile (CONFIGS), segments re-picked for that tile within the one-wave grid
        _, block_m2, block_n, use_dot, opts = _launch_params(cfg, group, head_pad, max_query_len, "decode_early")
        assert block_m2 == block_m, "decode_early must keep decode's rows (same dot setting)"
        nseg = pick_segments(cfg, busy * hkv, max_seq_len, block_n, cus, max_query_len)
        while nseg > 1 and n_qblocks * hkv * nseg > max_early:
            nseg //= 2
    flags = split_flags(cfg, nseg, n_qblocks * hkv, opts["num_warps"], block_m, head_pad)
    parts = _alloc_partials(T, hq, nseg, head_pad, q.device) if nseg > 1 else (out, out, out)  # fp32 partials
    cnt = ticket_counters(q.device) if flags["FUSED"] else seq_lens  # unused when not fused
    unified_attention_kernel[(n_qblocks, hkv, nseg)](
        q, k_cache, v_cache, out, *parts, cnt,
        query_start_loc, seq_lens, block_table,
        scale if use_cap else scale * _LOG2E, float(soft_cap) if use_cap else 1.0, win, num_reqs,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        out.stride(0), out.stride(1), block_table.stride(0),
        NUM_HEADS=hq, GROUP=group, HEAD=d, HEAD_PAD=head_pad, BLOCK_SIZE=block_size,
        BLOCK_Q=block_q, BLOCK_M=block_m, BLOCK_N=block_n, NUM_SEGMENTS=nseg,
        USE_WINDOW=use_win, USE_SOFTCAP=use_cap, USE_DOT=use_dot, PDL=pdl, EARLY=early,
        **flags, **opts, **launch_kwargs(pdl),
    )
    if nseg > 1 and not flags["FUSED"]:
        reduce_segments(*parts, out, query_start_loc, seq_lens, num_reqs, d, block_q=block_q, block_n=block_n,
                        min_tiles=flags["MIN_TILES"], window=win, cfg_key=_config_key(), pdl=pdl)
    return out


_SIG = {
    "q_ptr": "*fp16", "k_ptr": "*fp16", "v_ptr": "*fp16", "out_ptr": "*fp16", "part_acc_ptr": "*fp32",
    "part_m_ptr": "*fp32", "part_l_ptr": "*fp32", "cnt_ptr": "*i32", "qsl_ptr": "*i32", "seq_lens_ptr": "*i32",
    "bt_ptr": "*i32", "qk_scale": "fp32", "soft_cap": "fp32", "window": "i32", "num_reqs": "i32",
    **{s: "i32" for s in ("stride_qt", "stride_qh", "stride_kb", "stride_ks", "stride_kh", "stride_vb",
                          "stride_vs", "stride_vh", "stride_ot", "stride_oh", "stride_bt")},
}
# every stride is a multiple of 16 elements at head sizes 64/80/96/128/256 (as Triton specialises)
_DIV16 = [s for s in _SIG if s.startswith("stride_")]


def isa_specs() -> list[dict]:
    """The configurations the ISA report compiles, per arch: decode (split-KV, CONFIGS' form and
    the adaptive + fused one) and prefill for Llama-3-8B heads (group 4, D 128), Gemma-3 (group 1,
    D 256, window + soft-cap in decode) and a padded head size (D 80, group 3)."""
    flags = ("NUM_HEADS", "GROUP", "HEAD", "HEAD_PAD", "BLOCK_SIZE", "BLOCK_Q", "BLOCK_M", "BLOCK_N",
             "NUM_SEGMENTS", "USE_WINDOW", "USE_SOFTCAP", "USE_DOT")
    sig = {**_SIG, **{k: "constexpr" for k in flags + ("MIN_TILES", "FUSED", "RED_S")}}
    specs = []
    for arch, cfg in CONFIGS.items():
        for label, group, d, mql, nseg, gemma in (
                ("decode_g4_d128", 4, 128, 1, 16, False), ("prefill_g4_d128", 4, 128, 512, 1, False),
                ("decode_g1_d256_win_cap", 1, 256, 1, 16, True), ("prefill_g1_d256", 1, 256, 512, 1, False),
                ("prefill_g3_d80", 3, 80, 512, 1, False)):
            if arch == "default":
                continue
            head_pad = max(16, triton.next_power_of_2(d))
            kind, block_m, block_n, use_dot, opts = _launch_params(cfg, group, head_pad, mql)
            values = (8 * group, group, d, head_pad, 16, block_m // group, block_m, block_n, nseg, gemma, gemma,
                      use_dot)
            for form, over in (("", {}), ("_fused", {"adaptive": True, "fused_reduce": True}))[:1 + (nseg > 1)]:
                cx = {**dict(zip(flags, values)),
                      **split_flags(dict(cfg, **over), nseg, 1, opts["num_warps"], block_m, head_pad)}
                specs.append({"name": f"unified_attention[{label}{form}]", "fn": unified_attention_kernel,
                              "signature": sig, "constexprs": cx, "divisible_by_16": _DIV16, "arch": arch, **opts})
    return specs
