"""q8_1 activation quantiser for the integer-dot GGUF GEMV (``gguf_mmvq``), and its torch oracle.

Format (llama.cpp ``block_q8_1``, ``ggml-common.h``, ``quantize_q8_1`` in ``ggml-cuda/quantize.cu``):
per 32 consecutive values ``d = max|x| / 127`` and ``q = roundf(x / d)`` (round half away from
zero) in int8, plus the sum of the codes. Differences from llama.cpp: ``d`` is kept in fp32 (not
fp16) and the sums as exact integers, per 16-value half and per group; the codes are stored in
split-half order (see ``quantize_q8_1_reference``) so that the GEMV's loads are fully used.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gfx906_llm.kernels.gfx906.pdl import pdl_kwargs, pdl_start
from gfx906_llm.platform import detect_platform


def quantize_q8_1_reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-torch q8_1 quantiser, bit-identical to ``quantize_q8_1`` (the tests' oracle).

    Args:
        x: ``[M, K]`` float activations, ``K % 32 == 0``.

    Returns:
        ``xq`` int8 ``[M, K]`` in split-half order: ``xq[:, 16g + j]`` is the code of element
        ``32g + j`` and ``xq[:, K/2 + 16g + j]`` that of ``32g + 16 + j`` (``j < 16``), so that
        the lanes of a warp, one group each, read both halves with fully used 128-bit loads;
        ``meta`` int32 ``[M, K/32, 4]`` per group: ``d = max|x| / 127`` (fp32 bits), the sums
        of the codes of the two halves, and their total. ``x ~= code * d``.
    """
    m, k = x.shape
    xf = x.float().reshape(m, k // 32, 32)
    amax = xf.abs().amax(-1, keepdim=True)
    # tensor / tensor: a true IEEE division on every device (CUDA torch turns "/ 127.0" into a
    # multiplication by the reciprocal, 1 ulp off the kernel's div_rn for some values)
    d = amax / torch.full_like(amax, 127.0)
    v = torch.where(d > 0, xf / torch.where(d > 0, d, 1.0), torch.zeros_like(xf))
    q = torch.trunc(v + torch.where(v >= 0, 0.5, -0.5)).clamp(-127, 127).to(torch.int32)  # [M, G, 32]
    q = q.reshape(m, k // 32, 2, 16)
    sums = q.sum(-1, dtype=torch.int32)  # [M, G, 2]
    meta = torch.cat([d.view(torch.int32), sums, sums.sum(-1, keepdim=True, dtype=torch.int32)], dim=-1)
    xq = q.transpose(1, 2).reshape(m, k).to(torch.int8)
    return xq, meta


def dequantize_q8_1_reference(xq: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """float64 ``[M, K]`` values ``code * d`` of ``quantize_q8_1(_reference)`` output."""
    m, k = xq.shape
    codes = xq.reshape(m, 2, k // 32, 16).transpose(1, 2).reshape(m, k // 32, 32).double()
    return (codes * meta[..., 0].view(torch.float32).double()[..., None]).reshape(m, k)


@triton.jit
def _q8_1_kernel(x_ptr, xq_ptr, meta_ptr, G, stride_xm, BLOCK_G: tl.constexpr, PDL: tl.constexpr = False):
    pdl_start(PDL)  # pdl.py: x is the previous kernel's output, nothing is read before the wait
    m = tl.program_id(0)
    g = tl.program_id(1) * BLOCK_G + tl.arange(0, BLOCK_G)[:, None, None]  # [BG, 1, 1]
    h = tl.arange(0, 2)[None, :, None]  # [1, 2, 1] half of the group
    j = tl.arange(0, 16)[None, None, :]  # [1, 1, 16]
    gmask = g < G
    x = tl.load(x_ptr + m.to(tl.int64) * stride_xm + g * 32 + h * 16 + j, mask=gmask, other=0.0).to(tl.float32)
    amax = tl.max(tl.max(tl.abs(x), axis=2, keep_dims=True), axis=1, keep_dims=True)  # [BG, 1, 1]
    d = tl.math.div_rn(amax, tl.full(amax.shape, 127.0, tl.float32))
    v = tl.where(d > 0, tl.math.div_rn(x, tl.where(d > 0, d, 1.0)), 0.0)
    q = (v + tl.where(v >= 0, 0.5, -0.5)).to(tl.int32)  # round half away from zero (roundf)
    q = tl.minimum(tl.maximum(q, -127), 127)
    row = m.to(tl.int64) * G
    tl.store(xq_ptr + row * 32 + h * (G * 16) + g * 16 + j, q.to(tl.int8), mask=gmask)
    hs = tl.sum(q, axis=2, keep_dims=True)  # [BG, 2, 1]
    mp = meta_ptr + (row + g) * 4
    tl.store(mp, d.to(tl.int32, bitcast=True), mask=gmask)
    tl.store(mp + 1 + h, hs, mask=gmask)
    tl.store(mp + 3, tl.sum(hs, axis=1, keep_dims=True), mask=gmask)


# A tiny, launch-bound kernel (M x K values per decode step): one program per 16 groups (512
# values) of one row, 4 warps. gfx906 ISA: 19 VGPRs, 10 waves per SIMD, no scratch; the LDS use
# is the cross-lane max / sum of a group. Same settings everywhere (H200: 1.8-2.0 us per call
# in a CUDA graph at K = 4096 .. 14336, M = 1 .. 8, i.e. launch cost).
CONFIGS = {key: {"BLOCK_G": 16, "num_warps": 4} for key in ("gfx906", "gfx90a", "gfx942", "gfx1100", "cuda", "default")}


def quantize_q8_1(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q8_1 activations for the integer-dot GEMV (Triton; same results as the reference).

    Args:
        x: ``[M, K]`` fp16/bf16/fp32, last dim contiguous, ``K % 32 == 0``.

    Returns:
        ``(xq int8 [M, K], meta int32 [M, K/32, 4])``, see ``quantize_q8_1_reference``.

    Raises:
        ValueError: ``K`` not a multiple of 32 or a non-contiguous last dimension.
    """
    m, k = x.shape
    if k % 32 or x.stride(1) != 1:
        raise ValueError(f"quantize_q8_1: need K % 32 == 0 and a contiguous last dim, got {tuple(x.shape)}, "
                         f"strides {x.stride()}")
    G = k // 32
    xq = torch.empty(m, k, dtype=torch.int8, device=x.device)
    meta = torch.empty(m, G, 4, dtype=torch.int32, device=x.device)
    if m:
        cfg = CONFIGS.get(detect_platform().config_key, CONFIGS["default"])
        _q8_1_kernel[(m, triton.cdiv(G, cfg["BLOCK_G"]))](x, xq, meta, G, x.stride(0), BLOCK_G=cfg["BLOCK_G"],
                                                          num_warps=cfg["num_warps"], **pdl_kwargs(x.device))
    return xq, meta




def isa_specs() -> list[dict]:
    """The quantiser as launched (fp16 activations)."""
    return [{"name": "q8_1_quantize", "fn": _q8_1_kernel, "arch": arch,
             "signature": {"x_ptr": "*fp16", "xq_ptr": "*i8", "meta_ptr": "*i32", "G": "i32", "stride_xm": "i32",
                           "BLOCK_G": "constexpr", "PDL": "constexpr"},
             "constexprs": {"BLOCK_G": cfg["BLOCK_G"], "PDL": False}, "num_warps": cfg["num_warps"], "num_stages": 1,
             "divisible_by_16": ["x_ptr", "xq_ptr", "meta_ptr", "stride_xm"]} for arch, cfg in CONFIGS.items()]
