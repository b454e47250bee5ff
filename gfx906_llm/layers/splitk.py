"""Split-K partial sums of a linear layer's output, handed to the next op instead of summed alone.

The W4A16 GEMV (``kernels/gfx906/w4a16_gemv.py``) splits K over programs at decode-sized M: each
program writes an fp32 partial ``ws [S, M, N]``, and a second launch (``splitk_reduce.py``) sums
them. When the linear's consumer can read the partials itself (the SiLU-and-multiply of the MLP,
the fused rotary + KV-cache write of attention), the linear returns a ``SplitKPartials`` and that
second launch disappears: the consumer sums the S partials of the columns it reads anyway. The
value is exactly what the linear would have returned: ``(ws.sum(0) + bias)`` rounded to ``dtype``
(consumers round the same way, so both paths agree up to the summation order).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SplitKPartials:
    """``ws [S, M, N]`` fp32 contiguous; ``bias [N]`` (any float dtype) or None; ``dtype``: the
    linear's output dtype (fp16/bf16/fp32)."""

    ws: torch.Tensor
    bias: torch.Tensor | None
    dtype: torch.dtype

    def __post_init__(self):
        if self.ws.dim() != 3 or self.ws.dtype != torch.float32 or not self.ws.is_contiguous():
            raise ValueError(f"ws must be a contiguous fp32 [S, M, N] tensor, got {tuple(self.ws.shape)} "
                             f"{self.ws.dtype}")
        if self.bias is not None and tuple(self.bias.shape) != (self.ws.shape[2],):
            raise ValueError(f"bias {tuple(self.bias.shape)} does not match N = {self.ws.shape[2]}")

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
        CPU)."""
        M, N = self.shape
        out = torch.empty((M, N), dtype=self.dtype, device=self.ws.device)
        if self.ws.is_cuda:
            from gfx906_llm.kernels.gfx906.splitk_reduce import splitk_reduce
            from gfx906_llm.platform import detect_platform

            return splitk_reduce(self.ws, self.bias, out, detect_platform().config_key)
        acc = self.ws.sum(0)
        if self.bias is not None:
            acc = acc + self.bias.float()
        return out.copy_(acc)


def as_tensor(x: "torch.Tensor | SplitKPartials") -> torch.Tensor:
    """``x`` itself, or the materialised sum of partials."""
    return x.materialize() if isinstance(x, SplitKPartials) else x
