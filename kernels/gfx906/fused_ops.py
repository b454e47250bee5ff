"""Fused small ops of a decoder layer, Triton: gated activations (SiLU / tanh-GELU and multiply)
and rotary embedding applied in place to q and k; RMSNorm lives in ``rms_norm.py`` (re-exported
here, as the fused-op set is one family).

Same semantics as ``gfx906_llm.kernels.reference`` (``silu_and_mul``, ``gelu_tanh_and_mul``,
``rotary_embedding``), which is the CPU path and the test oracle; arithmetic in fp32, rounding to
the tensor dtype where the reference rounds (the activation before the multiply).

Sources: SwiGLU / GeGLU (Shazeer 2020, arXiv:2002.05202); tanh-GELU (Hendrycks & Gimpel 2016);
rotary embedding (RoFormer, Su et al. 2021, arXiv:2104.09864) in the NeoX / Hugging Face
rotate-half layout; the fused-op set follows vLLM's ``csrc/activation_kernels.cu``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gfx906_llm.kernels.gfx906.pdl import pdl_kwargs, pdl_start
from gfx906_llm.kernels.gfx906.rms_norm import fused_add_rms_norm, rms_norm
from gfx906_llm.layers.splitk import SplitKPartials

__all__ = ["fused_add_rms_norm", "gelu_tanh_and_mul", "isa_specs", "rms_norm", "rotary_embedding", "silu_and_mul"]

# Launch settings per arch (Platform.config_key). Every op here moves a few KiB to a few hundred
# KiB per launch: at decode it is launch- and latency-bound, at prefill bandwidth-bound. The rule
# on every arch: each lane moves 8 fp16 (16 bytes: one global_load_dwordx4 / 128-bit load), and
# registers stay low so occupancy is never the limit.
#  - act_and_mul: 2D grid (row, BLOCK columns of the intermediate size); gfx906 BLOCK=1024 with
#    2 waves = 8 fp16 per lane: Llama-3-8B's 14336 columns make 14 programs per row, so even a
#    single decode row spreads over 14 of the 60 CUs (larger blocks would put it on fewer CUs,
#    smaller ones double the programs at prefill for no gain). wave32 targets take 4 warps.
#  - rotary: grid (token, blocks of BLOCK_H heads over q's then k's heads); gfx906 BLOCK_H=8
#    heads x 64 pairs (head_dim 128) = 512 fp16 per half = 8 per lane for one wave; cos/sin (fp32)
#    are read once per program. Same rule with wave32 lanes on gfx1100 and NVIDIA.
# No matrix cores matter here (no dot products), so gfx90a/gfx942 take gfx906's settings.
#  - act_and_mul on split-K partials (fp32 [S, M, 2I], the gate/up GEMV's, S = 2-4 at decode):
#    each output element reads 2 S fp32 values, so the 1024-column block would make each of a
#    decode row's 14 programs stream 32 KiB of partials (2.8 us per call on an H100 against
#    1.8 + 1.3 us for the reduce launch + the plain op); act_block_ws = 256 columns spreads a row
#    over 56 programs with 8 KiB each, loads for all S issued before the sums.
_WAVE64 = {"act_block": 1024, "act_block_ws": 256, "rope_block_h": 8, "warp_size": 64}
_WAVE32 = {"act_block": 1024, "act_block_ws": 256, "rope_block_h": 8, "warp_size": 32}
CONFIGS: dict[str, dict] = {
    "gfx906": dict(_WAVE64), "gfx90a": dict(_WAVE64), "gfx942": dict(_WAVE64),
    "gfx1100": dict(_WAVE32), "cuda": dict(_WAVE32), "default": dict(_WAVE32),
}

_ACT_CODES = {"silu": 0, "gelu_tanh": 1}


def _config() -> dict:
    from gfx906_llm.platform import detect_platform

    return CONFIGS.get(detect_platform().config_key, CONFIGS["default"])


def _warps_for(elements: int, cfg: dict, cap: int) -> int:
    """Warps so that each lane holds ~8 elements (one 16-byte fp16 load), within [1, cap]."""
    return max(1, min(cap, elements // (8 * cfg["warp_size"])))


@triton.jit
def act_and_mul_kernel(x_ptr, b_ptr, out_ptr, stride_x, stride_o, n_inter, n_split, stride_split,
                       ACT: tl.constexpr, BLOCK: tl.constexpr, FROM_WS: tl.constexpr, HAS_BIAS: tl.constexpr,
                       ZERO_WS: tl.constexpr = False, PDL: tl.constexpr = False):
    pdl_start(PDL)  # pdl.py
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_inter
    if FROM_WS:  # x: fp32 split-K partials [n_split, M, 2I]; the value is their sum (+ bias) in out's dtype
        g = tl.zeros([BLOCK], dtype=tl.float32)
        u = tl.zeros([BLOCK], dtype=tl.float32)
        for s in tl.range(n_split, loop_unroll_factor=4):  # unrolled: S loads in flight, not in a chain
            p = x_ptr + s * stride_split + row * stride_x
            g += tl.load(p + cols, mask=mask, other=0.0)
            u += tl.load(p + n_inter + cols, mask=mask, other=0.0)
            if ZERO_WS:  # a split-K accumulator: zeroed for the next GEMV (layers/splitk.py)
                tl.store(p + cols, tl.zeros([BLOCK], dtype=tl.float32), mask=mask)
                tl.store(p + n_inter + cols, tl.zeros([BLOCK], dtype=tl.float32), mask=mask)
        if HAS_BIAS:
            g += tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
            u += tl.load(b_ptr + n_inter + cols, mask=mask, other=0.0).to(tl.float32)
        g = g.to(out_ptr.dtype.element_ty).to(tl.float32)  # as the linear would have rounded it
        u = u.to(out_ptr.dtype.element_ty).to(tl.float32)
    else:
        g = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)  # gate [BLOCK]
        u = tl.load(x_ptr + row * stride_x + n_inter + cols, mask=mask, other=0.0).to(tl.float32)  # up
    if ACT == 0:  # silu(g) = g * sigmoid(g)
        a = g * tl.sigmoid(g)
    else:  # 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))), tanh(z) = 2 sigmoid(2z) - 1
        z = 0.7978845608028654 * (g + 0.044715 * g * g * g)
        a = g * tl.sigmoid(2.0 * z)
    a = a.to(out_ptr.dtype.element_ty).to(tl.float32)  # the reference rounds the activation
    tl.store(out_ptr + row * stride_o + cols, (a * u).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def rotary_kernel(
    pos_ptr, q_ptr, k_ptr, cs_ptr, stride_qt, stride_qh, stride_kt, stride_kh, stride_cs,
    NUM_Q_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    hb = tl.program_id(1)
    q_blocks = (NUM_Q_HEADS + BLOCK_H - 1) // BLOCK_H
    pos = tl.load(pos_ptr + t).to(tl.int64)
    offs_d = tl.arange(0, HALF_PAD)
    dmask = offs_d < HALF
    cos = tl.load(cs_ptr + pos * stride_cs + offs_d, mask=dmask, other=0.0)[None, :]  # [1, HALF] fp32
    sin = tl.load(cs_ptr + pos * stride_cs + HALF + offs_d, mask=dmask, other=0.0)[None, :]
    # q heads first, then k heads; "stride * 0 +" keeps both branches' head stride a runtime i32
    # even when Triton specialises a stride argument equal to 1 into a constant
    if hb < q_blocks:
        base = q_ptr + t * stride_qt
        stride_h = stride_qt * 0 + stride_qh
        offs_h = hb * BLOCK_H + tl.arange(0, BLOCK_H)
        hmask = offs_h < NUM_Q_HEADS
    else:
        base = k_ptr + t * stride_kt
        stride_h = stride_kt * 0 + stride_kh
        offs_h = (hb - q_blocks) * BLOCK_H + tl.arange(0, BLOCK_H)
        hmask = offs_h < NUM_KV_HEADS
    mask = hmask[:, None] & dmask[None, :]
    p1 = base + offs_h[:, None] * stride_h + offs_d[None, :]  # [BLOCK_H, HALF_PAD]
    x1 = tl.load(p1, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(p1 + HALF, mask=mask, other=0.0).to(tl.float32)
    tl.store(p1, (x1 * cos - x2 * sin).to(q_ptr.dtype.element_ty), mask=mask)
    tl.store(p1 + HALF, (x2 * cos + x1 * sin).to(q_ptr.dtype.element_ty), mask=mask)


# ---- launchers ------------------------------------------------------------------------------------
def _act_and_mul(x, act: str) -> torch.Tensor:
    if x.shape[-1] % 2:
        raise ValueError(f"the last dim of x {tuple(x.shape)} must be even (gate | up)")
    inter = x.shape[-1] // 2
    partials = isinstance(x, SplitKPartials)
    dtype = x.dtype
    out = torch.empty((*x.shape[:-1], inter), dtype=dtype, device=x.device)
    if partials:  # ws [S, M, 2I] fp32, contiguous
        x2, bias, n_split, stride_split = x.ws, x.bias, x.num_splits, x.ws.stride(0)
        stride_x = x.ws.stride(1)
    else:
        x2 = x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        bias, n_split, stride_split, stride_x = None, 1, 0, x2.stride(0)
    rows = out.numel() // inter if inter else 0
    if rows == 0 or inter == 0:
        return out
    cfg = _config()
    block = min(cfg["act_block_ws" if partials else "act_block"], triton.next_power_of_2(inter))
    o2 = out.view(rows, inter)
    act_and_mul_kernel[(rows, triton.cdiv(inter, block))](
        x2, bias if bias is not None else x2, o2, stride_x, o2.stride(0), inter, n_split, stride_split,
        ACT=_ACT_CODES[act], BLOCK=block, FROM_WS=partials, HAS_BIAS=bias is not None,
        ZERO_WS=partials and x.accumulator, num_warps=_warps_for(block, cfg, 4), **pdl_kwargs(out.device),
    )
    return out


def silu_and_mul(x) -> torch.Tensor:
    """SwiGLU: ``[..., 2 * I] -> [..., I]`` as ``silu(x[..., :I]) * x[..., I:]`` (Triton).

    ``x`` may be a ``SplitKPartials`` of ``[M, 2 * I]`` (the gate/up GEMV's fp32 partials): they are
    summed here (plus bias, rounded to its dtype) instead of by a separate reduce launch.

    Raises:
        ValueError: odd last dimension.
    """
    return _act_and_mul(x, "silu")


def gelu_tanh_and_mul(x) -> torch.Tensor:
    """GeGLU with tanh-approximated GELU (Gemma): ``[..., 2 * I] -> [..., I]`` (Triton); ``x`` as
    for ``silu_and_mul``.

    Raises:
        ValueError: odd last dimension.
    """
    return _act_and_mul(x, "gelu_tanh")


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                     cos_sin_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NeoX-style (rotate-half) rotary embedding applied IN PLACE to ``q`` and ``k`` (Triton).

    Args:
        positions: ``[T]`` int32/int64 token positions (< ``cos_sin_cache.shape[0]``; not checked,
            to avoid a host sync).
        q: ``[T, Hq, D]`` or ``[T, Hq * D]``; k: ``[T, Hkv, D]`` or ``[T, Hkv * D]``; same float dtype,
            contiguous last dim; rows may be strided (views into a fused qkv projection output).
        cos_sin_cache: ``[max_position, D]`` fp32, ``cos`` in the first ``D/2`` columns, ``sin`` in
            the last ``D/2`` (the layout of ``kernels.reference.rotary_embedding``).

    Returns:
        ``(q, k)``: the same tensors, rotated.

    Raises:
        ValueError: mismatched shapes, dtypes or a strided head dimension.
    """
    if cos_sin_cache.dim() != 2 or cos_sin_cache.shape[1] % 2:
        raise ValueError(f"cos_sin_cache must be [max_position, D] with even D, got {tuple(cos_sin_cache.shape)}")
    d = cos_sin_cache.shape[1]
    T = positions.shape[0]
    qv = q.view(T, -1, d) if q.dim() == 2 else q
    kv = k.view(T, -1, d) if k.dim() == 2 else k
    if qv.dim() != 3 or kv.dim() != 3 or qv.shape[0] != T or kv.shape[0] != T or qv.shape[2] != d or kv.shape[2] != d:
        raise ValueError(f"q {tuple(q.shape)} / k {tuple(k.shape)} do not match positions [{T}] and head_dim {d}")
    if q.dtype != k.dtype or qv.stride(-1) != 1 or kv.stride(-1) != 1:
        raise ValueError(f"q and k need the same dtype ({q.dtype}, {k.dtype}) and a contiguous head_dim")
    if cos_sin_cache.dtype != torch.float32:
        cos_sin_cache = cos_sin_cache.float()
    if T == 0:
        return q, k
    hq, hkv = qv.shape[1], kv.shape[1]
    cfg = _config()
    half = d // 2
    half_pad = triton.next_power_of_2(half)
    block_h = min(cfg["rope_block_h"], triton.next_power_of_2(max(hq, hkv)))
    grid = (T, triton.cdiv(hq, block_h) + triton.cdiv(hkv, block_h))
    rotary_kernel[grid](
        positions, qv, kv, cos_sin_cache, qv.stride(0), qv.stride(1), kv.stride(0), kv.stride(1),
        cos_sin_cache.stride(0), NUM_Q_HEADS=hq, NUM_KV_HEADS=hkv, HALF=half, HALF_PAD=half_pad, BLOCK_H=block_h,
        num_warps=_warps_for(block_h * half_pad, cfg, 4),
    )
    return q, k


# ---- ISA report -----------------------------------------------------------------------------------
def isa_specs() -> list[dict]:
    """Per arch: Llama-3-8B shapes (SwiGLU over 14336, from the tensor and from split-K partials,
    rotary 32/8 heads x 128), Gemma-3 GeGLU and its 256-wide rotary, SmolLM2's 9/3 x 64 rotary."""
    act_sig = {"x_ptr": "*fp16", "b_ptr": "*fp16", "out_ptr": "*fp16", "stride_x": "i32", "stride_o": "i32",
               "n_inter": "i32", "n_split": "i32", "stride_split": "i32", "ACT": "constexpr", "BLOCK": "constexpr",
               "FROM_WS": "constexpr", "HAS_BIAS": "constexpr", "ZERO_WS": "constexpr"}
    ws_sig = dict(act_sig, x_ptr="*fp32")
    rope_sig = {"pos_ptr": "*i64", "q_ptr": "*fp16", "k_ptr": "*fp16", "cs_ptr": "*fp32",
                **{s: "i32" for s in ("stride_qt", "stride_qh", "stride_kt", "stride_kh", "stride_cs")},
                **{c: "constexpr" for c in ("NUM_Q_HEADS", "NUM_KV_HEADS", "HALF", "HALF_PAD", "BLOCK_H")}}
    specs = []
    for arch, cfg in CONFIGS.items():
        if arch == "default":
            continue
        for act, inter, ws in (("silu", 14336, False), ("gelu_tanh", 2048, False), ("silu", 14336, True)):
            block = min(cfg["act_block_ws" if ws else "act_block"], triton.next_power_of_2(inter))
            specs.append({"name": f"{act}_and_mul[i{inter}{'_splitk' if ws else ''}]", "fn": act_and_mul_kernel,
                          "signature": ws_sig if ws else act_sig,
                          "constexprs": {"ACT": _ACT_CODES[act], "BLOCK": block, "FROM_WS": ws, "HAS_BIAS": False,
                                         "ZERO_WS": ws},
                          "num_warps": _warps_for(block, cfg, 4), "num_stages": 1, "arch": arch,
                          "divisible_by_16": ["stride_x", "stride_o", "n_inter", "stride_split"]})
        for hq, hkv, d in ((32, 8, 128), (4, 1, 256), (9, 3, 64)):
            half_pad = triton.next_power_of_2(d // 2)
            block_h = min(cfg["rope_block_h"], triton.next_power_of_2(max(hq, hkv)))
            specs.append({"name": f"rotary[{hq}x{hkv}_d{d}]", "fn": rotary_kernel, "signature": rope_sig,
                          "constexprs": {"NUM_Q_HEADS": hq, "NUM_KV_HEADS": hkv, "HALF": d // 2, "HALF_PAD": half_pad,
                                         "BLOCK_H": block_h},
                          "num_warps": _warps_for(block_h * half_pad, cfg, 4), "num_stages": 1, "arch": arch,
                          "divisible_by_16": ["stride_qt", "stride_qh", "stride_kt", "stride_kh", "stride_cs"]})
    return specs
