"""RMSNorm with an optional fused residual add.

The kernels come from the platform's kernel table (``gfx906_llm.platform.get_device_op``): the
plain-torch reference for CPU tensors, the Triton kernels of ``kernels/gfx906/rms_norm.py`` on
GPUs (unless ``GFX906_LLM_KERNELS=torch``).
"""

from __future__ import annotations

import torch
from torch import nn

from gfx906_llm.platform import get_device_op


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
            return get_device_op("rms_norm", x.device)(x, self.weight, self.eps, self.offset)
        return get_device_op("fused_add_rms_norm", x.device)(x, residual, self.weight, self.eps, self.offset)
