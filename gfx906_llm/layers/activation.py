"""Gated activations: ``[..., 2 * I] -> [..., I]`` (kernel table op on GPUs, reference on the CPU)."""

from __future__ import annotations

import torch
from torch import nn

from gfx906_llm.platform import get_device_op


class SiluAndMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return get_device_op("silu_and_mul", x.device)(x)


class GeluTanhAndMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return get_device_op("gelu_tanh_and_mul", x.device)(x)


def get_act_and_mul(name: str) -> nn.Module:
    """``silu`` -> SiluAndMul; ``gelu_pytorch_tanh``/``gelu`` -> GeluTanhAndMul.

    Raises:
        ValueError: unsupported activation name.
    """
    if name in ("silu", "swish"):
        return SiluAndMul()
    if name in ("gelu_pytorch_tanh", "gelu_tanh", "gelu"):
        return GeluTanhAndMul()
    raise ValueError(f"unsupported hidden_act {name!r}; supported: silu, gelu_pytorch_tanh")
