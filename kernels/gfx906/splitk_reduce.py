"""Split-K reduction as its own launch: ``out[m, n] = sum_s ws[s, m, n] (+ bias[n])``, Triton.

The W4A16 GEMV (``w4a16_gemv.py``) splits K over programs; each writes an fp32 partial
``ws [SPLIT_K, M, N]``. Summing them inside the GEMV needs the last program of each column tile
to learn that it is last (a GPU-scope fence and a ticket atomic after its partial store, then
the partial loads): on an H200 that chain cost 2.0-3.7 us per call at the Llama-3-8B shapes
(benchmarks/NOTES_w4a16.md, session 3). A second, tiny launch orders the partials by the kernel
boundary instead. The sum runs over the split index in a fixed tree (one ``tl.sum`` over a
``[next_pow2(SPLIT_K), BLOCK]`` tile), so the result is deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gfx906_llm.kernels.gfx906.pdl import pdl_kwargs, pdl_start

# One program per (BLOCK columns, row) loads all SPLIT_K partials of its columns at once (L2 hits:
# the GEMV has just written them) and sums them: latency-bound, a few hundred KB per call.
# gfx906 (wave64): 128 columns on 2 waves; at 32 splits 16-32 VGPRs of partials per lane and a
#   cross-wave sum through LDS once per program. Other targets: the same tile (4 warps on wave32).
CONFIGS: dict[str, dict] = {
    "gfx906": {"BLOCK": 128, "num_warps": 2},
    "gfx90a": {"BLOCK": 128, "num_warps": 2},
    "gfx942": {"BLOCK": 128, "num_warps": 2},
    "gfx1100": {"BLOCK": 128, "num_warps": 4},
    "cuda": {"BLOCK": 128, "num_warps": 4},
    "default": {"BLOCK": 32, "num_warps": 1},
}


@triton.jit
def splitk_reduce_kernel(ws_ptr, bias_ptr, out_ptr, M, N, stride_om, SPLIT_K: tl.constexpr,
                         S_PAD: tl.constexpr, BLOCK: tl.constexpr, HAS_BIAS: tl.constexpr, ZERO: tl.constexpr,
                         PDL: tl.constexpr = False):
    pdl_start(PDL)  # pdl.py
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    offs_n = pid_n * BLOCK + tl.arange(0, BLOCK)
    offs_s = tl.arange(0, S_PAD)
    mask_n = offs_n < N
    ptrs = ws_ptr + (offs_s[:, None] * M + m) * N + offs_n[None, :]  # [S_PAD, BLOCK]
    part = tl.load(ptrs, mask=(offs_s < SPLIT_K)[:, None] & mask_n[None, :], other=0.0)
    acc = tl.sum(part, axis=0)
    if ZERO:  # an accumulator (gfx906_llm/layers/splitk.py): leave it zeroed for the next GEMV
        tl.store(ptrs, tl.zeros([S_PAD, BLOCK], dtype=tl.float32), mask=(offs_s < SPLIT_K)[:, None] & mask_n[None, :])
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    tl.store(out_ptr + m * stride_om + offs_n, acc.to(out_ptr.dtype.element_ty), mask=mask_n)


def splitk_reduce(ws: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor, cfg_key: str,
                  zero: bool = False) -> torch.Tensor:
    """Sum ``ws [S, M, N]`` fp32 over S into ``out [M, N]`` (fp16/bf16/fp32, last dim contiguous),
    plus ``bias [N]`` when given; ``zero``: write zeros over ``ws`` after reading it (a split-K
    accumulator). Returns ``out``."""
    S, M, N = ws.shape
    cfg = CONFIGS.get(cfg_key, CONFIGS["default"])
    splitk_reduce_kernel[(triton.cdiv(N, cfg["BLOCK"]), M)](
        ws, bias if bias is not None else ws, out, M, N, out.stride(0), SPLIT_K=S,
        S_PAD=triton.next_power_of_2(S), BLOCK=cfg["BLOCK"], HAS_BIAS=bias is not None, ZERO=zero,
        num_warps=cfg["num_warps"], **pdl_kwargs(ws.device))
    return out


def sum_or_defer(ws: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor, cfg_key: str, defer: bool,
                 accumulator: bool = False):
    """The end of a split-K launch: ``splitk_reduce`` into ``out`` (returned), or with ``defer``
    the partials as a ``gfx906_llm.layers.splitk.SplitKPartials`` for the consumer to sum;
    ``accumulator``: ``ws [1, M, N]`` is the atomically summed accumulator (zeroed by the reader)."""
    if defer:
        from gfx906_llm.layers.splitk import SplitKPartials

        return SplitKPartials(ws, bias, out.dtype, accumulator)
    return splitk_reduce(ws, bias, out, cfg_key, zero=accumulator)


def isa_specs() -> list[dict]:
    """The reduction of 32 splits (Llama-3-8B o_proj at batch 1), per arch."""
    sig = {"ws_ptr": "*fp32", "bias_ptr": "*fp16", "out_ptr": "*fp16", "M": "i32", "N": "i32", "stride_om": "i32",
           **{c: "constexpr" for c in ("SPLIT_K", "S_PAD", "BLOCK", "HAS_BIAS", "ZERO")}}
    return [{"name": "splitk_reduce[s32]", "fn": splitk_reduce_kernel, "signature": sig,
             "constexprs": {"SPLIT_K": 32, "S_PAD": 32, "BLOCK": cfg["BLOCK"], "HAS_BIAS": False,
                           "ZERO": False},
             "num_warps": cfg["num_warps"], "num_stages": 1, "arch": arch,
             "divisible_by_16": ["ws_ptr", "bias_ptr", "out_ptr", "N", "stride_om"]}
            for arch, cfg in CONFIGS.items() if arch != "default"]
