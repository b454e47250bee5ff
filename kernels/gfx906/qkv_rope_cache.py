"""The attention block's small ops after the QKV projection in ONE launch, Triton: (split-K sum
of the projection's partials) -> (per-head q/k RMSNorm) -> NeoX rotary on q and k -> k and v into
the paged KV cache -> q out.

At batch 1 each of those used to be its own launch (``splitk_reduce``, two ``rms_norm``,
``rotary_embedding``, ``reshape_and_cache``), each latency-bound (a few us on gfx906) and 32 times
per token for an 8B model. Same semantics as ``gfx906_llm.kernels.reference.qkv_rope_cache``
(the CPU path and the test oracle), rounding to the output dtype where the composed reference ops
round: the projection's value (``(ws.sum(0) + bias)`` as ``SplitKPartials`` defines it), the
normed heads, the rotated heads.

Sources: rotary embedding (RoFormer, Su et al. 2021, arXiv:2104.09864) in the NeoX / Hugging Face
rotate-half layout; RMSNorm (Zhang & Sennrich 2019, arXiv:1910.07467) per head as Qwen3 and
Gemma-3 apply it to q and k; the KV-cache write is vLLM's ``reshape_and_cache``; the fusion
follows vLLM's fused qk-norm + rope and rope + cache-write kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gfx906_llm.kernels.gfx906.pdl import pdl_kwargs, pdl_launch, pdl_wait
from gfx906_llm.kernels.reference import _check_qkv_rope_cache

# Launch settings per arch (Platform.config_key). Grid (token, head blocks: q's, then k's, then
# v's), BLOCK_H heads of one kind per program.
#  - qkv tensor (the fp16 projection output, in L2): at batch 1 the whole op moves ~12 KiB
#    (Llama-3-8B) and is pure latency, so more programs in flight matter more than fewer, fuller
#    ones; block_h = 4 heads x 128 = 512 fp16 per program = 8 per lane on ONE gfx906 wave64 (a
#    global_load_dwordx2 per rotary half) [ISA: 21 VGPRs, 10 waves/SIMD; 31 with q/k norm]: 8 + 2
#    + 2 = 12 programs at T=1; at prefill 1 KiB per program, far from any VGPR or LDS limit. (8
#    heads would give dwordx4 loads but half the programs; at this size the round trip, not the
#    load width, is the cost.)
#  - split-K partials (fp32 ws [S, T, N]): each program sums S partials of its columns, so it reads
#    S x 4 bytes per output element. block_h_partials = 1 head: at S=22 (padded to 32 in the
#    tile) a 128-wide head is 32 x 128 fp32 = 16 KiB, spread over max_warps=4 wave64s = 16 fp32 per
#    lane (dwordx4 loads, issued together, no loop) [ISA: 35 VGPRs, 7 waves/SIMD, no scratch], and
#    Llama-3-8B's 48 heads make 48 programs at T=1: close to the 60 CUs of an MI50, each one's L2
#    reads short. The cross-S sum is a fixed tree (deterministic), partly through LDS (1 KiB).
#  - num_warps = tile bytes / (16 x warp size), capped at max_warps: ~16 bytes of the tile per
#    lane (8 fp16 or 4 fp32), registers low [ISA rows: isa_specs].
# No dot products, so matrix cores are irrelevant: gfx90a/gfx942 take gfx906's settings; wave32
# targets (gfx1100, NVIDIA) the same tiles with twice the warps.
_WAVE64 = {"block_h": 4, "block_h_partials": 1, "warp_size": 64, "max_warps": 4}
_WAVE32 = {"block_h": 4, "block_h_partials": 1, "warp_size": 32, "max_warps": 4}
CONFIGS: dict[str, dict] = {
    "gfx906": dict(_WAVE64), "gfx90a": dict(_WAVE64), "gfx942": dict(_WAVE64),
    "gfx1100": dict(_WAVE32), "cuda": dict(_WAVE32), "default": dict(_WAVE32),
}


def _config() -> dict:
    from gfx906_llm.platform import detect_platform

    return CONFIGS.get(detect_platform().config_key, CONFIGS["default"])


def _warps_for(nbytes: int, cfg: dict) -> int:
    """Warps so that each lane moves ~16 bytes (one 128-bit load), within [1, max_warps]."""
    return max(1, min(cfg["max_warps"], nbytes // (16 * cfg["warp_size"])))


@triton.jit
def _load_half(x_ptr, bias_ptr, t, cols, stride_xt, stride_xs, num_splits, mask, dtype: tl.constexpr,
               PARTIALS: tl.constexpr, S_PAD: tl.constexpr, HAS_BIAS: tl.constexpr, ZERO_WS: tl.constexpr):
    """qkv's value at row t, columns cols [BLOCK_H, HALF_PAD], in fp32, rounded to dtype
    (``ZERO_WS``: the partials are a split-K accumulator, zeroed after the read)."""
    if PARTIALS:
        offs_s = tl.arange(0, S_PAD)
        ptrs = x_ptr + offs_s[:, None, None].to(tl.int64) * stride_xs + t * stride_xt + cols[None, :, :]
        smask = (offs_s < num_splits)[:, None, None] & mask[None, :, :]
        part = tl.load(ptrs, mask=smask, other=0.0)
        if ZERO_WS:
            tl.store(ptrs, tl.zeros_like(part), mask=smask)
        acc = tl.sum(part, axis=0)  # [BLOCK_H, HALF_PAD] fp32, fixed tree over S
        if HAS_BIAS:
            acc += tl.load(bias_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        return acc.to(dtype).to(tl.float32)  # the linear's output rounding
    else:
        return tl.load(x_ptr + t * stride_xt + cols, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _rms_heads(x1, x2, w_ptr, offs_d, dmask, eps, norm_offset, dtype: tl.constexpr, HEAD_DIM: tl.constexpr):
    """RMSNorm of each head row (x1 | x2 halves, fp32), weight w [HEAD_DIM], rounded to dtype."""
    HALF: tl.constexpr = HEAD_DIM // 2
    w1 = tl.load(w_ptr + offs_d, mask=dmask, other=0.0).to(tl.float32)[None, :]
    w2 = tl.load(w_ptr + HALF + offs_d, mask=dmask, other=0.0).to(tl.float32)[None, :]
    var = (tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1)) / HEAD_DIM  # [BLOCK_H]
    r = tl.rsqrt(var + eps)[:, None]
    y1 = (x1 * r * (norm_offset + w1)).to(dtype).to(tl.float32)
    y2 = (x2 * r * (norm_offset + w2)).to(dtype).to(tl.float32)
    return y1, y2


@triton.jit
def qkv_rope_cache_kernel(
    x_ptr, bias_ptr, pos_ptr, cs_ptr, qw_ptr, kw_ptr, q_out_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
    n_slots, num_splits, stride_xt, stride_xs, stride_cs, stride_ot, stride_oh,
    stride_kcb, stride_kcs, stride_kch, stride_vcb, stride_vcs, stride_vch, eps, norm_offset,
    NUM_Q_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, HALF_PAD: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_SIZE: tl.constexpr, PARTIALS: tl.constexpr, S_PAD: tl.constexpr,
    HAS_BIAS: tl.constexpr, Q_NORM: tl.constexpr, K_NORM: tl.constexpr, ZERO_WS: tl.constexpr,
    PDL: tl.constexpr = False,
):
    pdl_launch(PDL)  # pdl.py
    HALF: tl.constexpr = HEAD_DIM // 2
    Q_BLOCKS: tl.constexpr = (NUM_Q_HEADS + BLOCK_H - 1) // BLOCK_H
    KV_BLOCKS: tl.constexpr = (NUM_KV_HEADS + BLOCK_H - 1) // BLOCK_H
    dtype = q_out_ptr.dtype.element_ty  # qkv's (the linear's output) dtype
    t = tl.program_id(0).to(tl.int64)
    hb = tl.program_id(1)
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, HALF_PAD)
    dmask = offs_d < HALF
    # the step's inputs and the constant rotary table: with PDL read while the projection still
    # runs (no kernel of the step writes them); v programs do not use cos/sin, q programs the slot
    pos = tl.load(pos_ptr + t).to(tl.int64)
    cos = tl.load(cs_ptr + pos * stride_cs + offs_d, mask=dmask, other=0.0)[None, :]  # [1, HALF_PAD] fp32
    sin = tl.load(cs_ptr + pos * stride_cs + HALF + offs_d, mask=dmask, other=0.0)[None, :]
    slot = tl.load(slot_ptr + t, mask=t < n_slots, other=-1).to(tl.int64)
    pdl_wait(PDL)  # qkv and every store come after this
    if hb < Q_BLOCKS:
        h = hb * BLOCK_H + offs_h  # [BLOCK_H] q heads
        mask = (h < NUM_Q_HEADS)[:, None] & dmask[None, :]
        cols = h[:, None] * HEAD_DIM + offs_d[None, :]  # [BLOCK_H, HALF_PAD] first halves
        x1 = _load_half(x_ptr, bias_ptr, t, cols, stride_xt, stride_xs, num_splits, mask, dtype, PARTIALS, S_PAD,
                        HAS_BIAS, ZERO_WS)
        x2 = _load_half(x_ptr, bias_ptr, t, cols + HALF, stride_xt, stride_xs, num_splits, mask, dtype, PARTIALS,
                        S_PAD, HAS_BIAS, ZERO_WS)
        if Q_NORM:
            x1, x2 = _rms_heads(x1, x2, qw_ptr, offs_d, dmask, eps, norm_offset, dtype, HEAD_DIM)
        dst = q_out_ptr + t * stride_ot + h[:, None] * stride_oh + offs_d[None, :]
        tl.store(dst, (x1 * cos - x2 * sin).to(dtype), mask=mask)
        tl.store(dst + HALF, (x2 * cos + x1 * sin).to(dtype), mask=mask)
    else:
        # k and v programs of padding tokens (negative slot, or past slot_mapping) write nothing
        if slot >= 0:
            blk = slot // BLOCK_SIZE
            off = slot % BLOCK_SIZE
            if hb < Q_BLOCKS + KV_BLOCKS:
                h = (hb - Q_BLOCKS) * BLOCK_H + offs_h  # k heads
                mask = (h < NUM_KV_HEADS)[:, None] & dmask[None, :]
                cols = (NUM_Q_HEADS + h[:, None]) * HEAD_DIM + offs_d[None, :]
                x1 = _load_half(x_ptr, bias_ptr, t, cols, stride_xt, stride_xs, num_splits, mask, dtype, PARTIALS,
                                S_PAD, HAS_BIAS, ZERO_WS)
                x2 = _load_half(x_ptr, bias_ptr, t, cols + HALF, stride_xt, stride_xs, num_splits, mask, dtype,
                                PARTIALS, S_PAD, HAS_BIAS, ZERO_WS)
                if K_NORM:
                    x1, x2 = _rms_heads(x1, x2, kw_ptr, offs_d, dmask, eps, norm_offset, dtype, HEAD_DIM)
                dst = k_cache_ptr + blk * stride_kcb + off * stride_kcs + h[:, None] * stride_kch + offs_d[None, :]
                kdt = k_cache_ptr.dtype.element_ty
                tl.store(dst, (x1 * cos - x2 * sin).to(dtype).to(kdt), mask=mask)
                tl.store(dst + HALF, (x2 * cos + x1 * sin).to(dtype).to(kdt), mask=mask)
            else:
                h = (hb - Q_BLOCKS - KV_BLOCKS) * BLOCK_H + offs_h  # v heads
                mask = (h < NUM_KV_HEADS)[:, None] & dmask[None, :]
                cols = (NUM_Q_HEADS + NUM_KV_HEADS + h[:, None]) * HEAD_DIM + offs_d[None, :]
                x1 = _load_half(x_ptr, bias_ptr, t, cols, stride_xt, stride_xs, num_splits, mask, dtype, PARTIALS,
                                S_PAD, HAS_BIAS, ZERO_WS)
                x2 = _load_half(x_ptr, bias_ptr, t, cols + HALF, stride_xt, stride_xs, num_splits, mask, dtype,
                                PARTIALS, S_PAD, HAS_BIAS, ZERO_WS)
                dst = v_cache_ptr + blk * stride_vcb + off * stride_vcs + h[:, None] * stride_vch + offs_d[None, :]
                vdt = v_cache_ptr.dtype.element_ty
                tl.store(dst, x1.to(dtype).to(vdt), mask=mask)
                tl.store(dst + HALF, x2.to(dtype).to(vdt), mask=mask)
        elif ZERO_WS:  # nothing to write, but the accumulator's k or v columns of this row are zeroed
            kv = (hb - Q_BLOCKS) // KV_BLOCKS  # 0: k, 1: v
            h = (hb - Q_BLOCKS - kv * KV_BLOCKS) * BLOCK_H + offs_h
            mask = (h < NUM_KV_HEADS)[:, None] & dmask[None, :]
            cols = (NUM_Q_HEADS + kv * NUM_KV_HEADS + h[:, None]) * HEAD_DIM + offs_d[None, :]
            zero = tl.zeros([BLOCK_H, HALF_PAD], dtype=tl.float32)
            tl.store(x_ptr + t * stride_xt + cols, zero, mask=mask)
            tl.store(x_ptr + t * stride_xt + cols + HALF, zero, mask=mask)


def _launch_params(cfg: dict, head_dim: int, itemsize: int, s_pad: int, partials: bool) -> tuple[int, int, int]:
    """(BLOCK_H, HALF_PAD, num_warps) for one launch."""
    half_pad = triton.next_power_of_2(head_dim // 2)
    block_h = cfg["block_h_partials"] if partials else cfg["block_h"]
    nbytes = block_h * 2 * half_pad * (4 * s_pad if partials else itemsize)
    return block_h, half_pad, _warps_for(nbytes, cfg)


def qkv_rope_cache(qkv, positions: torch.Tensor, cos_sin_cache: torch.Tensor, k_cache: torch.Tensor,
                   v_cache: torch.Tensor, slot_mapping: torch.Tensor, num_heads: int, num_kv_heads: int,
                   head_dim: int, *, q_norm_weight: torch.Tensor | None = None,
                   k_norm_weight: torch.Tensor | None = None, norm_eps: float = 1e-6, norm_offset: float = 0.0,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """Split qkv, q/k RMSNorm (optional), NeoX rotary on q and k, k/v into the paged cache: one launch.

    Args:
        qkv: ``[T, (Hq + 2 * Hkv) * D]`` fp16/bf16/fp32 (any row stride, contiguous last dim), or a
            ``gfx906_llm.layers.splitk.SplitKPartials`` (fp32 ``ws [S, T, N]`` contiguous, optional
            ``bias [N]`` contiguous, output ``dtype``): its S partials are summed (plus bias) and
            rounded to ``dtype`` in the kernel, with no separate reduce launch (an accumulator is
            zeroed after the read, padding rows included).
        positions: ``[T]`` int32/int64 (< ``cos_sin_cache.shape[0]``; not checked, no host sync).
        cos_sin_cache: ``[max_position, D]`` fp32, cos in the first ``D/2`` columns, sin in the last.
        k_cache, v_cache: ``[num_blocks, block_size, Hkv, D]`` (any float dtype; values are rounded to
            qkv's dtype, then cast), contiguous last dim; written in place.
        slot_mapping: ``[<= T]`` int32/int64 ``block_id * block_size + offset``; negative slots
            and rows ``t >= slot_mapping.shape[0]`` write nothing.
        num_heads, num_kv_heads, head_dim: Hq (a multiple of Hkv), Hkv, D (even, <= 256).
        q_norm_weight, k_norm_weight: ``[D]`` per-head RMSNorm weights (Qwen3, Gemma-3), or None;
            the norm is ``x / rms(x) * (norm_offset + w)`` in fp32 with ``norm_eps``
            (``norm_offset=1.0`` is Gemma's ``1 + weight``).
        out: optional ``[T, Hq, D]`` output in qkv's dtype, contiguous last dim.

    Returns:
        q normed and rotated, ``[T, Hq, D]`` in qkv's dtype (a new contiguous tensor, or ``out``).
        ``qkv`` is not modified.

    Raises:
        ValueError: shapes, dtypes or head counts that do not fit together, D odd or > 256, a
            strided head dim.
    """
    _check_qkv_rope_cache(qkv, positions, cos_sin_cache, k_cache, v_cache, slot_mapping, num_heads, num_kv_heads,
                          head_dim, q_norm_weight, k_norm_weight, out)
    ws = getattr(qkv, "ws", None)
    partials = ws is not None
    T = ws.shape[1] if partials else qkv.shape[0]
    dtype = qkv.dtype
    if out is None:
        out = torch.empty((T, num_heads, head_dim), dtype=dtype, device=k_cache.device)
    if T == 0:
        return out
    if cos_sin_cache.dtype != torch.float32 or cos_sin_cache.stride(-1) != 1:
        cos_sin_cache = cos_sin_cache.float().contiguous()
    positions = positions.contiguous()
    slot_mapping = slot_mapping.contiguous()
    if partials:
        x, stride_xt, stride_xs, s = ws, ws.stride(1), ws.stride(0), ws.shape[0]
        bias = qkv.bias.contiguous() if qkv.bias is not None else None
    else:
        x, stride_xt, stride_xs, s, bias = qkv, qkv.stride(0), 0, 1, None
    qw = q_norm_weight.contiguous() if q_norm_weight is not None else None
    kw = k_norm_weight.contiguous() if k_norm_weight is not None else None
    s_pad = triton.next_power_of_2(s)
    block_h, half_pad, num_warps = _launch_params(_config(), head_dim, x.element_size(), s_pad, partials)
    grid = (T, 2 * triton.cdiv(num_kv_heads, block_h) + triton.cdiv(num_heads, block_h))
    qkv_rope_cache_kernel[grid](
        x, bias if bias is not None else x, positions, cos_sin_cache, qw if qw is not None else cos_sin_cache,
        kw if kw is not None else cos_sin_cache, out, k_cache, v_cache, slot_mapping,
        slot_mapping.shape[0], s, stride_xt, stride_xs, cos_sin_cache.stride(0), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), v_cache.stride(0), v_cache.stride(1),
        v_cache.stride(2), float(norm_eps), float(norm_offset),
        NUM_Q_HEADS=num_heads, NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim, HALF_PAD=half_pad, BLOCK_H=block_h,
        BLOCK_SIZE=k_cache.shape[1], PARTIALS=partials, S_PAD=s_pad, HAS_BIAS=bias is not None,
        Q_NORM=qw is not None, K_NORM=kw is not None, ZERO_WS=partials and qkv.accumulator,
        num_warps=num_warps, **pdl_kwargs(out.device),
    )
    return out


# ---- ISA report -----------------------------------------------------------------------------------
def isa_specs() -> list[dict]:
    """Per arch: Llama-3-8B (32/8 x 128) from the fp16 qkv tensor, from S=22 split-K partials with
    a bias (as Qwen2's qkv_proj has) and from the split-K accumulator (CUDA); Qwen3-style q/k norm
    (32/8 x 128, tensor and partials); Gemma-3 (4/1 x 256 with q/k norm); block size 16."""
    strides = ("stride_xt", "stride_xs", "stride_cs", "stride_ot", "stride_oh", "stride_kcb", "stride_kcs",
               "stride_kch", "stride_vcb", "stride_vcs", "stride_vch")
    consts = ("NUM_Q_HEADS", "NUM_KV_HEADS", "HEAD_DIM", "HALF_PAD", "BLOCK_H", "BLOCK_SIZE", "PARTIALS", "S_PAD",
              "HAS_BIAS", "Q_NORM", "K_NORM", "ZERO_WS")
    specs = []
    for arch, cfg in CONFIGS.items():
        if arch == "default":
            continue
        for name, hq, hkv, d, s, bias, norm in (("llama3_8b", 32, 8, 128, 0, False, False),
                                                ("llama3_8b_s22_bias", 32, 8, 128, 22, True, False),
                                                ("llama3_8b_acc", 32, 8, 128, 1, False, False),
                                                ("qwen3_qknorm", 32, 8, 128, 0, False, True),
                                                ("qwen3_qknorm_s22", 32, 8, 128, 22, False, True),
                                                ("gemma3_qknorm", 4, 1, 256, 0, False, True)):
            partials = s > 0
            s_pad = triton.next_power_of_2(max(s, 1))
            block_h, half_pad, num_warps = _launch_params(cfg, d, 2, s_pad, partials)
            sig = {"x_ptr": "*fp32" if partials else "*fp16", "bias_ptr": "*fp16", "pos_ptr": "*i64",
                   "cs_ptr": "*fp32", "qw_ptr": "*fp16", "kw_ptr": "*fp16", "q_out_ptr": "*fp16",
                   "k_cache_ptr": "*fp16", "v_cache_ptr": "*fp16", "slot_ptr": "*i64", "n_slots": "i32",
                   "num_splits": "i32", **{k: "i32" for k in strides}, "eps": "fp32", "norm_offset": "fp32",
                   **{c: "constexpr" for c in consts}}
            specs.append({
                "name": f"qkv_rope_cache[{name}]", "fn": qkv_rope_cache_kernel, "signature": sig,
                "constexprs": {"NUM_Q_HEADS": hq, "NUM_KV_HEADS": hkv, "HEAD_DIM": d, "HALF_PAD": half_pad,
                               "BLOCK_H": block_h, "BLOCK_SIZE": 16, "PARTIALS": partials, "S_PAD": s_pad,
                               "HAS_BIAS": bias, "Q_NORM": norm, "K_NORM": norm, "ZERO_WS": name.endswith("_acc")},
                "num_warps": num_warps, "num_stages": 1, "arch": arch, "divisible_by_16": list(strides),
            })
    return specs
