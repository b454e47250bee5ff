"""Split-K partial sums of a linear layer's output, handed to the next op instead of summed alone.

The W4A16 GEMV (``kernels/gfx906/w4a16_gemv.py``) splits K over programs at decode-sized M: each
program writes an fp32 partial ``ws [S, M, N]``, and a second launch (``splitk_reduce.py``) sums
them. When the linear's consumer can read the partials itself (the SiLU-and-multiply of the MLP,
the fused rotary + KV-cache write of attention), the linear returns a ``SplitKPartials`` and that
second launch disappears: the consumer sums the S partials of the columns it reads anyway. The
value is exactly what the linear would have returned: ``(ws.sum(0) + bias)`` rounded to ``dtype``
(consumers round the same way, so both paths agree up to the summation order).

Accumulator form (``accumulator=True``, CUDA's decode GEMV): instead of S partial rows the
programs ``atomic_add`` their fp32 partials into one ``[M, N]`` slice of the device's persistent,
zeroed accumulator (``accumulator_buffer``), so ``ws`` is ``[1, M, N]``: the consumer reads one
row instead of S, and even the residual-add RMSNorm (one program per row) can take the output of
o_proj / down_proj without a reduce launch. The price: (1) whoever reads an accumulator must
write zeros back (every consumer kernel, ``materialize`` and the torch paths do), and only one
accumulator output may be live at a time (a linear's output is consumed before the next linear
runs in every model here); (2) fp32 atomics add in arrival order, so the last bits of the sum
can differ between runs (the rounding to fp16/bf16 hides nearly all of it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SplitKPartials:
    """``ws [S, M, N]`` fp32 contiguous; ``bias [N]`` (any float dtype) or None; ``dtype``: the
    linear's output dtype (fp16/bf16/fp32); ``accumulator``: ``ws`` (then ``[1, M, N]``) is a
    slice of ``accumulator_buffer`` that the reader must zero after reading."""

    ws: torch.Tensor
    bias: torch.Tensor | None
    dtype: torch.dtype
    accumulator: bool = False

    def __post_init__(self):
        if self.ws.dim() != 3 or self.ws.dtype != torch.float32 or not self.ws.is_contiguous():
            raise ValueError(f"ws must be a contiguous fp32 [S, M, N] tensor, got {tuple(self.ws.shape)} "
                             f"{self.ws.dtype}")
        if self.bias is not None and tuple(self.bias.shape) != (self.ws.shape[2],):
            raise ValueError(f"bias {tuple(self.bias.shape)} does not match N = {self.ws.shape[2]}")
        if self.accumulator and self.ws.shape[0] != 1:
            raise ValueError(f"an accumulator holds one partial, got {self.ws.shape[0]}")

    @property
    def shape(self) -> torch.Size:
        """The logical ``[M, N]``."""
        return self.ws.shape[1:]

    @property
    def num_splits(self) -> int:
        return self.ws.shape[0]

    @property
    def device(self) -> torch.device:
        return self.ws.device

    def materialize(self) -> torch.Tensor:
        """The summed ``[M, N]`` tensor in ``dtype`` (the Triton reduce launch on GPUs, torch on the
        CPU); an accumulator is zeroed after the read."""
        M, N = self.shape
        out = torch.empty((M, N), dtype=self.dtype, device=self.ws.device)
        if self.ws.is_cuda:
            from gfx906_llm.kernels.gfx906.splitk_reduce import splitk_reduce
            from gfx906_llm.platform import detect_platform

            return splitk_reduce(self.ws, self.bias, out, detect_platform().config_key, zero=self.accumulator)
        acc = self.ws.sum(0)
        if self.bias is not None:
            acc = acc + self.bias.float()
        out.copy_(acc)
        if self.accumulator:
            self.ws.zero_()
        return out


_ACCUMULATORS: dict[torch.device, torch.Tensor] = {}
_RETIRED: list[torch.Tensor] = []  # outgrown buffers stay allocated: captured graphs may hold them
MIN_ACCUMULATOR = 1 << 20  # fp32 elements (4 MiB): 16 rows of N = 65536


def accumulator_buffer(device: torch.device, numel: int) -> torch.Tensor:
    """The first ``numel`` elements of ``device``'s persistent fp32 accumulator, all zero (every
    reader zeroes what it read: see the module docstring). It grows on demand, never during a
    CUDA-graph capture (graphs keep its address; the decode warm-up runs every GEMV row count
    before capture, so it is sized by then).

    Raises:
        RuntimeError: it must grow while the current stream is being captured.
    """
    if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" share one buffer
        device = torch.device("cuda", torch.cuda.current_device())
    buf = _ACCUMULATORS.get(device)
    if buf is None or buf.numel() < numel:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(f"split-K accumulator of {numel} floats needed during graph capture; "
                               "run an eager step of this size first")
        if buf is not None:
            _RETIRED.append(buf)
        buf = torch.zeros(max(numel, MIN_ACCUMULATOR, 2 * buf.numel() if buf is not None else 0),
                          dtype=torch.float32, device=device)
        _ACCUMULATORS[device] = buf
    return buf[:numel]


def reset_accumulators() -> None:
    """Zero every device's accumulator: after a forward pass that raised between a linear and its
    consumer (what the engine does when a step fails), so that the next step starts clean."""
    for buf in _ACCUMULATORS.values():
        buf.zero_()


def as_tensor(x: "torch.Tensor | SplitKPartials") -> torch.Tensor:
    """``x`` itself, or the materialised sum of partials."""
    return x.materialize() if isinstance(x, SplitKPartials) else x
