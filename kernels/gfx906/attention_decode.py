"""Split-KV attention ("flash decoding", Dao et al. 2023): segment policy and reduction kernel.

When the grid of ``attention.unified_attention`` is too small for the chip (decode at small
batch, a short chunk over a long context), each program handles one slice of its own request's
KV range. The grid's segment count ``NUM_SEGMENTS`` follows the compute-unit count and the
longest context the launch is built for (``num_segments``; under CUDA graphs that is the
capture-time ``max_seq_len``, often ``max_model_len``), where vLLM's unified attention uses a
fixed 16.

Adaptive segments (``MIN_TILES > 0``): each (query tile, KV head) uses only
``active_segments(n_tiles)`` of the NUM_SEGMENTS programs, computed in the kernel from its real
KV tile count: at least ``MIN_TILES`` tiles per segment, every active segment non-empty. Programs
of unused segments return at once and store nothing; a query tile with one active segment
writes its output directly. ``MIN_TILES == 0`` is the fixed split (every segment stores, possibly
empty, partials), kept for comparison.

Each active slice ``s`` leaves, per query token and head, its running max ``m_s`` (log2 units,
scale folded in), its sum ``l_s = sum exp2(x - m_s)`` and its unnormalised accumulator
``a_s = sum exp2(x - m_s) v``. The result is ``sum_s exp2(m_s - M) a_s / sum_s exp2(m_s - M) l_s``
with ``M = max_s m_s``; empty slices carry ``m_s = -inf, l_s = 0, a_s = 0`` and drop out.

Invariant (no stale partials): the reader of the partials (``reduce_segments_kernel``, or the
last-arriving program of the fused form) recomputes the same ``n_act`` from the same inputs
(``kv_tile_range`` + ``active_segments``) and reads only segments ``s < n_act``, each of which a
program of this launch wrote; slots of other segments keep whatever an older launch left there.
The fused form (``FUSED``): active programs store partials, then take a ticket (atomic add on a
per-(query tile, KV head) int32 counter); the program that draws ``n_act - 1`` combines the
partials in a fixed order and resets the counter to 0, as ``w4a16_gemv.py`` does for split-K.
Both forms are off in ``attention.CONFIGS``: on an H200 they did not beat the fixed split (see
benchmarks/NOTES_attention_decode.md).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from gfx906_llm.kernels.gfx906.pdl import launch_kwargs, pdl_launch, pdl_wait

MAX_SEGMENTS = 64
MAX_TICKETS = 1 << 16  # (query tile, KV head) counters of the fused form, per device


@functools.lru_cache(maxsize=None)
def num_cus(device_index: int) -> int:
    """Compute units (SMs) of a GPU: 60 on an MI50, 132 on an H100."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


_TICKETS: dict[torch.device, torch.Tensor] = {}


def ticket_counters(device: torch.device) -> torch.Tensor:
    """The zeroed int32 counters of the fused reduction on ``device`` (every launch leaves them 0).
    Allocated on the first call: make it before CUDA-graph capture (the engine's warm-up does).
    Shared by every launch on the device: no concurrent fused launches on two streams."""
    if device not in _TICKETS:
        _TICKETS[device] = torch.zeros(MAX_TICKETS, dtype=torch.int32, device=device)
    return _TICKETS[device]


def alloc_partials(T: int, hq: int, nseg: int, head_pad: int, device) -> tuple[torch.Tensor, ...]:
    """fp32 split-KV partials: acc ``[T, Hq, S, D_pad]``, m and l ``[T, Hq, S]``, uninitialised (a
    launch reads only segments it wrote; tests swap ``attention._alloc_partials`` for reused ones)."""
    part_acc = torch.empty((T, hq, nseg, head_pad), dtype=torch.float32, device=device)
    part_m = torch.empty((T, hq, nseg), dtype=torch.float32, device=device)
    return part_acc, part_m, torch.empty_like(part_m)


def split_flags(cfg: dict, nseg: int, n_tickets: int, num_warps: int, block_m: int, head_pad: int) -> dict:
    """The split-KV constexprs of ``attention.unified_attention_kernel`` for ``nseg`` segments:
    MIN_TILES (``cfg["min_tiles_per_segment"]`` when ``cfg["adaptive"]``, else 0: fixed split),
    FUSED (``cfg["fused_reduce"]`` and ``n_tickets`` (query tiles x KV heads) counters available)
    and RED_S, the segments combined per step of the fused reduction: ``cfg["red_s"]``, else a
    ``[BLOCK_M, RED_S, HEAD_PAD]`` fp32 tile at about 32 values per lane (32-lane warps assumed),
    rounded down to a power of 2."""
    r = max(1, min(nseg, cfg.get("red_s", 32 * 32 * num_warps // (block_m * head_pad))))
    return {"MIN_TILES": cfg["min_tiles_per_segment"] if cfg.get("adaptive", True) and nseg > 1 else 0,
            "FUSED": nseg > 1 and cfg.get("fused_reduce", False) and n_tickets <= MAX_TICKETS,
            "RED_S": 1 << (r.bit_length() - 1)}


def num_segments(cfg: dict, programs: int, max_seq_len: int, block_n: int, cus: int, max_query_len: int = 1) -> int:
    """Split-KV segments (a power of 2) for ``programs`` (query tile, KV head) pairs: enough for
    ``cfg["programs_per_cu"]`` programs per compute unit (rounded up), but each segment at least
    ``cfg["min_tiles_per_segment"]`` KV tiles of the longest request (rounded down), at most
    MAX_SEGMENTS. Batches with a query longer than 1/16 of the longest context are not split:
    their fp32 partials (T x Hq x D x 4 B per segment) cost more than the extra programs gain
    (H200: a 1024-token prefill split in 4 ran at 0.36x torch SDPA, unsplit 4k at 1.06x)."""
    if max_query_len * 16 > max_seq_len and max_query_len > 1:
        return 1
    want = -(-cus * cfg["programs_per_cu"] // max(1, programs))
    cap = max_seq_len // (block_n * cfg["min_tiles_per_segment"])
    cap = 1 << (max(1, cap).bit_length() - 1)
    return max(1, min(triton.next_power_of_2(want), cap, MAX_SEGMENTS))


@triton.jit
def kv_tile_range(ctx, q_lo, q_hi, window, USE_WINDOW: tl.constexpr, BLOCK_N: tl.constexpr):
    """KV tiles [t_lo, t_hi) that query rows [q_lo, q_hi) of a request with ``ctx`` cached tokens
    see (causal, optional sliding window)."""
    kv_lo = 0
    if USE_WINDOW:
        kv_lo = tl.maximum(ctx + q_lo - window + 1, 0)
    return kv_lo // BLOCK_N, tl.cdiv(ctx + q_hi, BLOCK_N)


@triton.jit
def active_segments(n_tiles, MIN_TILES: tl.constexpr, NUM_SEGMENTS: tl.constexpr):
    """(segments used, KV tiles per segment) for ``n_tiles`` tiles. MIN_TILES == 0: the fixed
    split over all NUM_SEGMENTS (trailing segments may be empty); else at least MIN_TILES tiles
    per segment where the count allows, at most NUM_SEGMENTS, and no active segment empty."""
    if MIN_TILES == 0:
        per_seg = tl.cdiv(n_tiles, NUM_SEGMENTS)
        n_act = per_seg * 0 + NUM_SEGMENTS
    else:
        n = tl.maximum(n_tiles, 1)
        per_seg = tl.cdiv(n, tl.minimum(tl.cdiv(n, MIN_TILES), NUM_SEGMENTS))
        n_act = tl.cdiv(n, per_seg)
    return n_act, per_seg


@triton.jit
def segment_tiles(ctx, q_lo, q_hi, window, seg, USE_WINDOW: tl.constexpr, BLOCK_N: tl.constexpr,
                  MIN_TILES: tl.constexpr, NUM_SEGMENTS: tl.constexpr):
    """(s_lo, s_hi, u_lo, u_hi, n_act) for query rows [q_lo, q_hi): segment ``seg``'s KV tiles
    [s_lo, s_hi), the tiles [u_lo, u_hi) every row sees in full (no mask), the active segments."""
    t_lo, t_hi = kv_tile_range(ctx, q_lo, q_hi, window, USE_WINDOW, BLOCK_N)
    u_lo = t_lo
    if USE_WINDOW:
        u_lo = tl.maximum(tl.cdiv(tl.maximum(ctx + q_hi - window, 0), BLOCK_N), t_lo)
    u_hi = tl.maximum(tl.minimum((ctx + q_lo + 1) // BLOCK_N, t_hi), u_lo)
    n_act, per_seg = active_segments(t_hi - t_lo, MIN_TILES, NUM_SEGMENTS)
    s_lo = t_lo + seg * per_seg
    return s_lo, tl.minimum(s_lo + per_seg, t_hi), u_lo, u_hi, n_act


@triton.jit
def combine_partials(part_acc_ptr, part_m_ptr, part_l_ptr, base, row_ok, n_act, BLOCK_M: tl.constexpr,
                     HEAD_PAD: tl.constexpr, NUM_SEGMENTS: tl.constexpr, RED_S: tl.constexpr):
    """Output rows ``[M, HEAD_PAD]`` (fp32, normalised) from segments ``s < n_act`` of the partials
    at slots ``base + s`` (``base [M]``: (token * NUM_HEADS + head) * NUM_SEGMENTS); RED_S segments
    are loaded per step. Loads bypass L1 (``.cg``): the fused form reads other programs' stores."""
    offs_s = tl.arange(0, NUM_SEGMENTS)
    ms_ok = row_ok[:, None] & (offs_s < n_act)[None, :]
    m = tl.load(part_m_ptr + base[:, None] + offs_s[None, :], mask=ms_ok, other=float("-inf"),
                cache_modifier=".cg")  # [M, S]
    l = tl.load(part_l_ptr + base[:, None] + offs_s[None, :], mask=ms_ok, other=0.0, cache_modifier=".cg")
    m_max = tl.max(m, 1)
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)  # [M]
    denom = tl.sum(l * tl.math.exp2(m - m_max[:, None]), 1)
    offs_r = tl.arange(0, RED_S)
    offs_d = tl.arange(0, HEAD_PAD)
    acc = tl.zeros([BLOCK_M, HEAD_PAD], dtype=tl.float32)
    for s0 in range(0, n_act, RED_S):
        slot = base[:, None] + s0 + offs_r[None, :]  # [M, R]
        ok = row_ok[:, None] & (s0 + offs_r < n_act)[None, :]
        w = tl.math.exp2(tl.load(part_m_ptr + slot, mask=ok, other=float("-inf"), cache_modifier=".cg")
                         - m_max[:, None])  # [M, R]; 0 outside the active segments
        a = tl.load(part_acc_ptr + slot[:, :, None] * HEAD_PAD + offs_d[None, None, :], mask=ok[:, :, None],
                    other=0.0, cache_modifier=".cg")  # [M, R, D]
        acc += tl.sum(a * w[:, :, None], 1)
    return acc / tl.where(denom == 0.0, 1.0, denom)[:, None]


@triton.jit
def store_partials(acc, m_i, l_i, part_acc_ptr, part_m_ptr, part_l_ptr, cnt, base, seg, n_act, row_ok, o_ptrs,
                   o_mask, BLOCK_M: tl.constexpr, HEAD_PAD: tl.constexpr, NUM_SEGMENTS: tl.constexpr,
                   FUSED: tl.constexpr, RED_S: tl.constexpr):
    """Store segment ``seg``'s partials of rows ``base [M]`` (first slot of each row); FUSED: take a
    ticket on the counter ``cnt`` of this (query tile, KV head), and if it is the last of the
    ``n_act``, combine all the partials into ``o_ptrs`` and reset the counter."""
    tl.store(part_m_ptr + base + seg, m_i, mask=row_ok)
    tl.store(part_l_ptr + base + seg, l_i, mask=row_ok)
    tl.store(part_acc_ptr + (base + seg)[:, None] * HEAD_PAD + tl.arange(0, HEAD_PAD)[None, :], acc,
             mask=row_ok[:, None])
    if FUSED:
        tl.debug_barrier()  # every lane's stores precede the release of the ticket
        ticket = tl.atomic_add(cnt, 1, sem="acq_rel")
        if ticket == n_act - 1:
            o = combine_partials(part_acc_ptr, part_m_ptr, part_l_ptr, base, row_ok, n_act, BLOCK_M, HEAD_PAD,
                                 NUM_SEGMENTS, RED_S)
            tl.store(o_ptrs, o.to(o_ptrs.dtype.element_ty), mask=o_mask)
            tl.atomic_xchg(cnt, 0)


# One program per (token, head) reads up to NUM_SEGMENTS x HEAD_PAD fp32 (16 KiB at 32 x 128):
# the kernel is a small bandwidth-bound epilogue. gfx906: 4 wave64 warps spread a 32 x 128 tile
# to 16 fp32 per lane (few VGPRs, 10 waves/SIMD), loads are dwordx4 along head_dim, no LDS but the
# cross-warp segment sum. Wave32 gfx1100 and NVIDIA use the same 4 warps (128 lanes).
CONFIGS: dict[str, dict] = {
    "gfx906": {"num_warps": 4},
    "gfx90a": {"num_warps": 4},
    "gfx942": {"num_warps": 4},
    "gfx1100": {"num_warps": 4},
    "cuda": {"num_warps": 4},
    "default": {"num_warps": 4},
}


@triton.jit
def reduce_segments_kernel(
    part_acc_ptr, part_m_ptr, part_l_ptr, out_ptr, qsl_ptr, seq_lens_ptr, num_reqs, window,
    stride_ot, stride_oh,
    NUM_HEADS: tl.constexpr, HEAD: tl.constexpr, HEAD_PAD: tl.constexpr, NUM_SEGMENTS: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, MIN_TILES: tl.constexpr, USE_WINDOW: tl.constexpr,
    PDL: tl.constexpr = False,
):
    pdl_launch(PDL)  # pdl.py: the step's inputs are read before the wait, the partials after it
    t = tl.program_id(0)
    h = tl.program_id(1)
    n_tokens = tl.load(qsl_ptr + num_reqs)
    base = (t.to(tl.int64) * NUM_HEADS + h) * NUM_SEGMENTS
    offs_s = tl.arange(0, NUM_SEGMENTS)
    s_ok = offs_s >= 0
    n_act = NUM_SEGMENTS
    if MIN_TILES > 0:  # the attention kernel's segment count for this token's query tile
        lo = 0
        hi = num_reqs
        while lo < hi:  # request of token t: the largest r with qsl[r] <= t
            mid = (lo + hi) // 2
            if tl.load(qsl_ptr + mid) <= t:
                lo = mid + 1
            else:
                hi = mid
        q_start = tl.load(qsl_ptr + lo - 1)
        q_len = tl.load(qsl_ptr + lo) - q_start
        ctx = tl.load(seq_lens_ptr + lo - 1) - q_len
        q_lo = (t - q_start) // BLOCK_Q * BLOCK_Q
        t_lo, t_hi = kv_tile_range(ctx, q_lo, tl.minimum(q_lo + BLOCK_Q, q_len), window, USE_WINDOW, BLOCK_N)
        n_act, _ = active_segments(t_hi - t_lo, MIN_TILES, NUM_SEGMENTS)
        s_ok = offs_s < n_act  # only segments written by this launch (no stale partials)
    pdl_wait(PDL)
    if t >= n_tokens:
        return  # padding token: no request wrote partials for it
    if n_act == 1:
        return  # the attention kernel wrote this row itself (adaptive split)
    offs_d = tl.arange(0, HEAD_PAD)
    m = tl.load(part_m_ptr + base + offs_s, mask=s_ok, other=float("-inf"))  # [S]
    l = tl.load(part_l_ptr + base + offs_s, mask=s_ok, other=0.0)
    m_max = tl.max(m, 0)
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
    w = tl.math.exp2(m - m_max)  # [S]; 0 for empty and unused segments
    denom = tl.sum(l * w, 0)
    acc = tl.load(part_acc_ptr + (base + offs_s)[:, None] * HEAD_PAD + offs_d[None, :], mask=s_ok[:, None],
                  other=0.0)  # [S, D]
    o = tl.sum(acc * w[:, None], 0) / tl.where(denom == 0.0, 1.0, denom)
    tl.store(out_ptr + t.to(tl.int64) * stride_ot + h * stride_oh + offs_d, o.to(out_ptr.dtype.element_ty),
             mask=offs_d < HEAD)


def reduce_segments(
    part_acc: torch.Tensor, part_m: torch.Tensor, part_l: torch.Tensor, out: torch.Tensor,
    query_start_loc: torch.Tensor, seq_lens: torch.Tensor, num_reqs: int, head_dim: int, *,
    block_q: int, block_n: int, min_tiles: int, window: int = 0, cfg_key: str = "default", pdl: bool = False,
) -> None:
    """Combine partials ``part_acc [T, Hq, S, D_pad]``, ``part_m``/``part_l [T, Hq, S]`` (fp32)
    into ``out [T, Hq, head_dim]`` for the tokens below ``query_start_loc[num_reqs]``, reading
    the segments the attention launch with the same ``block_q``, ``block_n``, ``min_tiles`` and
    ``window`` (> 0: sliding window) wrote (``min_tiles`` 0: all S). ``pdl``: launch with
    programmatic dependent launch (``pdl.py``; CUDA sm_90+ only)."""
    T, hq, nseg, head_pad = part_acc.shape
    cfg = CONFIGS.get(cfg_key, CONFIGS["default"])
    reduce_segments_kernel[(T, hq)](
        part_acc, part_m, part_l, out, query_start_loc, seq_lens, num_reqs, window, out.stride(0), out.stride(1),
        NUM_HEADS=hq, HEAD=head_dim, HEAD_PAD=head_pad, NUM_SEGMENTS=nseg, BLOCK_Q=block_q, BLOCK_N=block_n,
        MIN_TILES=min_tiles, USE_WINDOW=window > 0, PDL=pdl, num_warps=cfg["num_warps"], **launch_kwargs(pdl),
    )


def isa_specs() -> list[dict]:
    """Reduce for 32 heads x head_dim 128 at 16 and 64 segments (adaptive: 4 tiles of 32 keys per
    segment, decode tiles of one token), per arch."""
    sig = {"part_acc_ptr": "*fp32", "part_m_ptr": "*fp32", "part_l_ptr": "*fp32", "out_ptr": "*fp16",
           "qsl_ptr": "*i32", "seq_lens_ptr": "*i32", "num_reqs": "i32", "window": "i32", "stride_ot": "i32",
           "stride_oh": "i32", "NUM_HEADS": "constexpr", "HEAD": "constexpr", "HEAD_PAD": "constexpr",
           "NUM_SEGMENTS": "constexpr", "BLOCK_Q": "constexpr", "BLOCK_N": "constexpr", "MIN_TILES": "constexpr",
           "USE_WINDOW": "constexpr"}
    return [
        {"name": f"reduce_segments[s{ns}_d128]", "fn": reduce_segments_kernel, "signature": sig,
         "constexprs": {"NUM_HEADS": 32, "HEAD": 128, "HEAD_PAD": 128, "NUM_SEGMENTS": ns, "BLOCK_Q": 1,
                        "BLOCK_N": 32, "MIN_TILES": 4, "USE_WINDOW": False},
         "num_warps": cfg["num_warps"], "num_stages": 1, "arch": arch,
         "divisible_by_16": ["stride_ot", "stride_oh"]}
        for arch, cfg in CONFIGS.items() if arch != "default" for ns in (16, 64)
    ]
