"""RMSNorm with an optional fused residual add.

The kernels come from the platform's kernel table (``gfx906_llm.platform.get_op``), looked up at
the first forward on each device type: the plain-torch reference for CPU tensors (whatever GPU is
detected), the Triton kernels of ``kernels/gfx906/fused_ops.py`` on GPUs (unless
``GFX906_LLM_KERNELS=torch``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from gfx906_llm.kernels import reference

_OPS: dict[tuple[str, str], Callable] = {}


def layer_op(name: str, device: torch.device) -> Callable:
    """The implementation of kernel-table op ``name`` for tensors on ``device`` (cached).

    CPU tensors always get ``kernels.reference.<name>`` (the CPU path and its numerics); other
    devices get ``get_op(name, detect_platform())``. Detection runs at the first call, never at
    import time.
    """
    key = (name, device.type)
    fn = _OPS.get(key)
    if fn is None:
        if device.type == "cpu":
            fn = getattr(reference, name)
        else:
            from gfx906_llm.platform import detect_platform, get_op

            fn = get_op(name, detect_platform())
        _OPS[key] = fn
    return fn


class RMSNorm(nn.Module):
    """RMSNorm over the last dim; ``offset=1.0`` stores Gemma's ``weight - 1`` convention.

    ``forward(x)`` returns the normed x; ``forward(x, residual)`` returns
    ``(norm(x + residual), x + residual)`` (the fused residual add of pre-norm blocks) as new
    tensors.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6, offset: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size), requires_grad=False)
        self.eps = eps
        self.offset = offset

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if residual is None:
            return layer_op("rms_norm", x.device)(x, self.weight, self.eps, self.offset)
        return layer_op("fused_add_rms_norm", x.device)(x, residual, self.weight, self.eps, self.offset)
