"""RMSNorm with the optional residual add (pre-norm decoder blocks), Triton; one program per row.

Same semantics as ``gfx906_llm.kernels.reference.rms_norm`` / ``fused_add_rms_norm`` (the CPU
path and the test oracle): arithmetic in fp32, the residual sum rounded to the tensor dtype
before the norm. The input may also be a linear's split-K partials or its split-K accumulator
(``gfx906_llm.layers.splitk``): the norm after o_proj / down_proj then sums them itself and no
reduce launch runs between the two.

Sources: RMSNorm (Zhang & Sennrich 2019, arXiv:1910.07467; Gemma's ``1 + weight`` as
``offset=1.0``); the fused residual add follows vLLM's ``csrc/layernorm_kernels.cu``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gfx906_llm.kernels.gfx906.pdl import pdl_kwargs, pdl_launch, pdl_wait
from gfx906_llm.layers.splitk import SplitKPartials

# One program per row holds the whole row (BLOCK = next power of 2 of the hidden size) in
# registers, so the row is read once; num_warps = BLOCK / (8 * warp size), capped at max_warps.
# gfx906 (wave64): hidden 4096 -> 8 warps x 64 lanes x 8 elements; the cross-wave sum goes through
# LDS (a few hundred bytes of the 64 KiB). Capping at 8 warps keeps a hidden-8192 row at 16 fp32
# per lane (x, residual) in VGPRs [ISA: no scratch]. From a split-K accumulator the row is fp32
# (16 per lane at 4096) and is zeroed behind the read: 40 VGPRs on gfx906.
CONFIGS: dict[str, dict] = {
    "gfx906": {"max_warps": 8, "warp_size": 64}, "gfx90a": {"max_warps": 8, "warp_size": 64},
    "gfx942": {"max_warps": 8, "warp_size": 64}, "gfx1100": {"max_warps": 8, "warp_size": 32},
    "cuda": {"max_warps": 8, "warp_size": 32}, "default": {"max_warps": 8, "warp_size": 32},
}


def _config() -> dict:
    from gfx906_llm.platform import detect_platform

    return CONFIGS.get(detect_platform().config_key, CONFIGS["default"])


def _warps_for(elements: int, cfg: dict) -> int:
    """Warps so that each lane holds ~8 elements (one 16-byte fp16 load), within [1, max_warps]."""
    return max(1, min(cfg["max_warps"], elements // (8 * cfg["warp_size"])))


@triton.jit
def rms_norm_kernel(
    x_ptr, r_ptr, w_ptr, out_ptr, rout_ptr, b_ptr,
    sx_o, sx_i, sr_o, sr_i, inner, n_cols, n_split, stride_split, eps, offset,
    HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr, FROM_WS: tl.constexpr, HAS_BIAS: tl.constexpr,
    ZERO_WS: tl.constexpr, PDL: tl.constexpr = False,
):
    pdl_launch(PDL)  # pdl.py
    # row = (outer, inner) index into x [..., (inner,) n_cols]: lets q/k norms read [T, H, D] views of qkv
    row = tl.program_id(0).to(tl.int64)
    ro = row // inner
    ri = row % inner
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    # the weight first: it comes from HBM (evicted by the weight stream between layers) while x
    # and the residual were just written (L2). A constant, so with PDL it is loaded before the
    # wait, while the previous kernel still runs; without PDL its latency overlaps x's.
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    pdl_wait(PDL)  # x, the residual and every store come after this
    if FROM_WS:  # x: fp32 split-K partials [n_split, rows, n_cols] (or the accumulator, n_split 1)
        x = tl.zeros([BLOCK], dtype=tl.float32)
        for s in range(n_split):
            p = x_ptr + s * stride_split + row * n_cols + cols
            x += tl.load(p, mask=mask, other=0.0)
            if ZERO_WS:  # a split-K accumulator: zeroed for the next GEMV (layers/splitk.py)
                tl.store(p, tl.zeros([BLOCK], dtype=tl.float32), mask=mask)
        if HAS_BIAS:
            x += tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        x = x.to(out_ptr.dtype.element_ty).to(tl.float32)  # as the linear would have rounded it
    else:
        x = tl.load(x_ptr + ro * sx_o + ri * sx_i + cols, mask=mask, other=0.0).to(tl.float32)  # [BLOCK]
    if HAS_RESIDUAL:
        r = tl.load(r_ptr + ro * sr_o + ri * sr_i + cols, mask=mask, other=0.0).to(tl.float32)
        s = (x + r).to(rout_ptr.dtype.element_ty)  # the reference adds in the tensor dtype
        tl.store(rout_ptr + row * n_cols + cols, s, mask=mask)
        x = s.to(tl.float32)
    var = tl.sum(x * x, axis=0) / n_cols
    y = x * tl.rsqrt(var + eps)
    tl.store(out_ptr + row * n_cols + cols, (y * (offset + w)).to(out_ptr.dtype.element_ty), mask=mask)


def _row_view(t: torch.Tensor, n: int) -> tuple[torch.Tensor, int, int, int]:
    """(tensor, outer stride, inner stride, inner count) addressing rows of ``n`` contiguous values."""
    if t.stride(-1) != 1:
        t = t.contiguous()
    if t.dim() == 2:
        return t, t.stride(0), 0, 1
    if t.dim() == 3:
        return t, t.stride(0), t.stride(1), t.shape[1]
    t = t.reshape(-1, n)
    return t, t.stride(0), 0, 1


MAX_NORM_SPLITS = 4  # more split-K partials than this are summed by the reduce launch first


def _norm(x, residual, weight, eps, offset):
    if isinstance(x, SplitKPartials):
        if x.num_splits > MAX_NORM_SPLITS:  # one program per row would stream S rows of fp32
            x = x.materialize()
        else:
            return _norm_partials(x, residual, weight, eps, offset)
    if x.dim() < 1 or weight.dim() != 1 or x.shape[-1] != weight.shape[0]:
        raise ValueError(f"x {tuple(x.shape)} must end in the weight's size {tuple(weight.shape)}")
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype):
        raise ValueError(f"residual {tuple(residual.shape)} {residual.dtype} must match x {tuple(x.shape)} {x.dtype}")
    n = x.shape[-1]
    shape = x.shape
    x2 = x if x.dim() > 1 else x[None]
    out = torch.empty(shape, dtype=x.dtype, device=x.device)
    rout = torch.empty(shape, dtype=x.dtype, device=x.device) if residual is not None else out
    rows = x2.numel() // n if n else 0
    if rows == 0:
        return out, rout
    x2, sx_o, sx_i, inner = _row_view(x2, n)
    if residual is not None:
        r2, sr_o, sr_i, r_inner = _row_view(residual if residual.dim() > 1 else residual[None], n)
        if r_inner != inner:  # a 4D+ input was flattened differently: make both plain rows
            x2, sx_o, sx_i, inner = _row_view(x2.reshape(-1, n), n)
            r2, sr_o, sr_i, _ = _row_view(residual.reshape(-1, n), n)
    else:
        r2, sr_o, sr_i = x2, 0, 0
    cfg = _config()
    block = triton.next_power_of_2(n)
    # one row lives in registers (hidden 16384: 32 fp32 per lane over 8 wave64s; wider rows would
    # spill to scratch but stay correct); refuse sizes no model has
    if block > 65536:
        raise ValueError(f"hidden size {n} > 65536 is not supported by the one-pass RMSNorm kernel")
    rms_norm_kernel[(rows,)](
        x2, r2, weight, out, rout, weight, sx_o, sx_i, sr_o, sr_i, inner, n, 1, 0, float(eps), float(offset),
        HAS_RESIDUAL=residual is not None, BLOCK=block, FROM_WS=False, HAS_BIAS=False, ZERO_WS=False,
        num_warps=_warps_for(block, cfg), **pdl_kwargs(out.device),
    )
    return out, rout


def _norm_partials(x: SplitKPartials, residual, weight, eps, offset):
    """``_norm`` of the value of 2-D split-K partials ``ws [S, M, N]`` (S <= MAX_NORM_SPLITS)."""
    M, n = x.shape
    if weight.dim() != 1 or n != weight.shape[0]:
        raise ValueError(f"x {tuple(x.shape)} must end in the weight's size {tuple(weight.shape)}")
    if residual is not None and (tuple(residual.shape) != (M, n) or residual.dtype != x.dtype):
        raise ValueError(f"residual {tuple(residual.shape)} {residual.dtype} must match x {(M, n)} {x.dtype}")
    out = torch.empty((M, n), dtype=x.dtype, device=x.device)
    rout = torch.empty((M, n), dtype=x.dtype, device=x.device) if residual is not None else out
    if M == 0:
        return out, rout
    if residual is not None and residual.stride(-1) != 1:
        residual = residual.contiguous()
    cfg = _config()
    block = triton.next_power_of_2(n)
    if block > 65536:
        raise ValueError(f"hidden size {n} > 65536 is not supported by the one-pass RMSNorm kernel")
    r = residual if residual is not None else out
    rms_norm_kernel[(M,)](
        x.ws, r, weight, out, rout, x.bias if x.bias is not None else weight, n, 0, r.stride(0), 0, 1, n,
        x.num_splits, x.ws.stride(0), float(eps), float(offset), HAS_RESIDUAL=residual is not None, BLOCK=block,
        FROM_WS=True, HAS_BIAS=x.bias is not None, ZERO_WS=x.accumulator,
        num_warps=_warps_for(block, cfg), **pdl_kwargs(out.device),
    )
    return out, rout


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, offset: float = 0.0) -> torch.Tensor:
    """RMSNorm ``x / rms(x) * (offset + weight)`` in fp32, result in ``x.dtype`` (Triton).

    Args:
        x: ``[..., N]`` fp16/bf16/fp32 with a contiguous last dim preferred (a [T, H, D] view with
            any outer strides, such as q/k heads inside a fused qkv output, is read in place).
        weight: ``[N]`` (any float dtype). ``offset=1.0`` is Gemma's ``1 + weight``.

        ``x`` may also be a 2-D ``gfx906_llm.layers.splitk.SplitKPartials`` (a linear's split-K
            partials or accumulator): summed here (up to ``MAX_NORM_SPLITS`` partials; more go
            through the reduce launch first), plus bias, rounded to the linear's dtype.

    Returns:
        A new contiguous ``[..., N]`` tensor.

    Raises:
        ValueError: ``x``'s last dim does not match ``weight``, or is above 65536.
    """
    return _norm(x, None, weight, eps, offset)[0]


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                       offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``s = x + residual`` (rounded to the dtype); returns ``(rms_norm(s), s)`` in one pass (Triton).

    Both outputs are new tensors (inputs are left untouched, except that a split-K accumulator
    ``x`` is zeroed after the read), so callers may keep references. ``x`` as for ``rms_norm``.

    Raises:
        ValueError: shape/dtype mismatch between ``x``, ``residual`` and ``weight``.
    """
    return _norm(x, residual, weight, eps, offset)


def isa_specs() -> list[dict]:
    """Per arch: Llama-3-8B's hidden 4096 with and without the residual and from the split-K
    accumulator, q/k-norm rows of 128, SmolLM2's 576-wide norm."""
    norm_sig = {"x_ptr": "*fp16", "r_ptr": "*fp16", "w_ptr": "*fp16", "out_ptr": "*fp16", "rout_ptr": "*fp16",
                "b_ptr": "*fp16", "sx_o": "i32", "sx_i": "i32", "sr_o": "i32", "sr_i": "i32", "inner": "i32",
                "n_cols": "i32", "n_split": "i32", "stride_split": "i32", "eps": "fp32", "offset": "fp32",
                **{c: "constexpr" for c in ("HAS_RESIDUAL", "BLOCK", "FROM_WS", "HAS_BIAS", "ZERO_WS")}}
    specs = []
    for arch, cfg in CONFIGS.items():
        if arch == "default":
            continue
        for n, res, acc in ((4096, True, False), (4096, False, False), (576, True, False), (128, False, False),
                            (4096, True, True)):
            block = triton.next_power_of_2(n)
            specs.append({"name": f"rms_norm[{'add_' if res else ''}n{n}{'_acc' if acc else ''}]", "fn": rms_norm_kernel,
                          "signature": dict(norm_sig, x_ptr="*fp32") if acc else norm_sig,
                          "constexprs": {"HAS_RESIDUAL": res, "BLOCK": block, "FROM_WS": acc, "HAS_BIAS": False,
                                         "ZERO_WS": acc},
                          "num_warps": _warps_for(block, cfg), "num_stages": 1, "arch": arch,
                          "divisible_by_16": ["sx_o", "sx_i", "sr_o", "sr_i", "n_cols"] if n % 16 == 0 else []})
    return specs
