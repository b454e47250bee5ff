"""Split-KV attention ("flash decoding", Dao et al. 2023): segment policy and reduction kernel.

When the grid of ``attention.unified_attention`` is too small for the chip (decode at small
batch, a short chunk over a long context), each program handles one of ``NUM_SEGMENTS`` equal
slices of its own request's KV range. The segment count follows the compute-unit count and the
longest context (``num_segments``), where vLLM's unified attention uses a fixed 16.

``attention.unified_attention`` splits each request's KV range into ``NUM_SEGMENTS`` slices when
the grid would not fill the chip; each slice ``s`` leaves, per query token and head, its running
max ``m_s`` (log2 units, scale folded in), its sum ``l_s = sum exp2(x - m_s)`` and its
unnormalised accumulator ``a_s = sum exp2(x - m_s) v``. The result is
``sum_s exp2(m_s - M) a_s / sum_s exp2(m_s - M) l_s`` with ``M = max_s m_s``; empty slices carry
``m_s = -inf, l_s = 0, a_s = 0`` and drop out.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

MAX_SEGMENTS = 64


@functools.lru_cache(maxsize=None)
def num_cus(device_index: int) -> int:
    """Compute units (SMs) of a GPU: 60 on an MI50, 132 on an H100."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


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


# One program per (token, head) reads NUM_SEGMENTS x HEAD_PAD fp32 (16 KiB at 32 x 128): the
# kernel is a small bandwidth-bound epilogue. gfx906: 4 wave64 warps spread a 32 x 128 tile to
# 16 fp32 per lane (few VGPRs, 10 waves/SIMD), loads are dwordx4 along head_dim, no LDS but the
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
    part_acc_ptr, part_m_ptr, part_l_ptr, out_ptr, qsl_ptr, num_reqs, stride_ot, stride_oh,
    NUM_HEADS: tl.constexpr, HEAD: tl.constexpr, HEAD_PAD: tl.constexpr, NUM_SEGMENTS: tl.constexpr,
):
    t = tl.program_id(0)
    h = tl.program_id(1)
    if t >= tl.load(qsl_ptr + num_reqs):
        return  # padding token: no request wrote partials for it
    base = (t.to(tl.int64) * NUM_HEADS + h) * NUM_SEGMENTS
    offs_s = tl.arange(0, NUM_SEGMENTS)
    offs_d = tl.arange(0, HEAD_PAD)
    m = tl.load(part_m_ptr + base + offs_s)  # [S]
    l = tl.load(part_l_ptr + base + offs_s)
    m_max = tl.max(m, 0)
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
    w = tl.math.exp2(m - m_max)  # [S]; 0 for empty segments
    denom = tl.sum(l * w, 0)
    acc = tl.load(part_acc_ptr + (base + offs_s)[:, None] * HEAD_PAD + offs_d[None, :])  # [S, D]
    o = tl.sum(acc * w[:, None], 0) / tl.where(denom == 0.0, 1.0, denom)
    tl.store(out_ptr + t.to(tl.int64) * stride_ot + h * stride_oh + offs_d, o.to(out_ptr.dtype.element_ty),
             mask=offs_d < HEAD)


def reduce_segments(
    part_acc: torch.Tensor, part_m: torch.Tensor, part_l: torch.Tensor, out: torch.Tensor,
    query_start_loc: torch.Tensor, num_reqs: int, head_dim: int, cfg_key: str = "default",
) -> None:
    """Combine partials ``part_acc [T, Hq, S, D_pad]``, ``part_m``/``part_l [T, Hq, S]`` (fp32)
    into ``out [T, Hq, head_dim]`` for the tokens below ``query_start_loc[num_reqs]``."""
    T, hq, nseg, head_pad = part_acc.shape
    cfg = CONFIGS.get(cfg_key, CONFIGS["default"])
    reduce_segments_kernel[(T, hq)](
        part_acc, part_m, part_l, out, query_start_loc, num_reqs, out.stride(0), out.stride(1),
        NUM_HEADS=hq, HEAD=head_dim, HEAD_PAD=head_pad, NUM_SEGMENTS=nseg, num_warps=cfg["num_warps"],
    )


def isa_specs() -> list[dict]:
    """Reduce for 32 heads x head_dim 128 at 16 and 64 segments, per arch."""
    sig = {"part_acc_ptr": "*fp32", "part_m_ptr": "*fp32", "part_l_ptr": "*fp32", "out_ptr": "*fp16",
           "qsl_ptr": "*i32", "num_reqs": "i32", "stride_ot": "i32", "stride_oh": "i32",
           "NUM_HEADS": "constexpr", "HEAD": "constexpr", "HEAD_PAD": "constexpr", "NUM_SEGMENTS": "constexpr"}
    return [
        {"name": f"reduce_segments[s{ns}_d128]", "fn": reduce_segments_kernel, "signature": sig,
         "constexprs": {"NUM_HEADS": 32, "HEAD": 128, "HEAD_PAD": 128, "NUM_SEGMENTS": ns},
         "num_warps": cfg["num_warps"], "num_stages": 1, "arch": arch,
         "divisible_by_16": ["stride_ot", "stride_oh"]}
        for arch, cfg in CONFIGS.items() if arch != "default" for ns in (16, 64)
    ]
