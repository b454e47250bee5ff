"""AWQ checkpoints (AutoAWQ ``quant_method: "awq"``, ``version: "gemm"``), 4 bits with zero points.

Format (Lin et al. 2023, arXiv:2306.00978; tensors as AutoAWQ's ``WQLinear_GEMM.from_linear``
packs them), for a linear of K inputs and N outputs:

* ``qweight`` int32 ``[K, N / 8]`` packed along N: nibble ``t`` (bits ``4t..4t+3``) of word
  ``c`` holds output column ``8c + AWQ_ORDER[t]``, ``AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]``;
* ``qzeros`` int32 ``[K / g, N / 8]`` with the same packing (zeros stored as is);
* ``scales`` fp16 ``[K / g, N]``; ``W[n, k] = (q[k, n] - zero[k // g, n]) * scales[k // g, n]``.

The tensors are unpacked and repacked at load into the internal layout (``quant/packing.py``).
Config keys read: ``bits`` (or ``w_bit``), ``group_size`` (or ``q_group_size``), ``zero_point``,
``version``, ``modules_to_not_convert`` (substring match on the module name, as transformers
and vLLM do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gfx906_llm.quant.base import QuantConfig, QuantMethod, register_quant
from gfx906_llm.quant.packing import AWQ_ORDER, PackedWeight, check_group_size, pack_internal, unpack_int32
from gfx906_llm.quant.w4a16 import PackedLinearMethod, decide_per_shard, make_param


@register_quant("awq")
@dataclass
class AWQConfig(QuantConfig):
    """An AutoAWQ GEMM checkpoint's settings."""

    bits: int = 4
    group_size: int = 128
    zero_point: bool = True
    modules_to_not_convert: list[str] = field(default_factory=list)

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> "AWQConfig":
        """Raises ValueError for anything but 4-bit GEMM-version checkpoints with zero points."""
        bits = int(cfg.get("bits", cfg.get("w_bit", 4)))
        group = int(cfg.get("group_size", cfg.get("q_group_size", 128)))
        version = str(cfg.get("version", "gemm")).lower()
        zp = bool(cfg.get("zero_point", True))
        if bits != 4:
            raise ValueError(f"AWQ bits={bits} unsupported; supported: 4")
        if version != "gemm":
            raise ValueError(f"AWQ version={version!r} unsupported; supported: 'gemm' (GEMV checkpoints use another layout)")
        if not zp:
            raise ValueError("AWQ zero_point=false is unsupported; supported: zero_point=true")
        check_group_size(group, bits)
        return cls(bits, group, zp, list(cfg.get("modules_to_not_convert") or []))

    def get_method(self, layer: nn.Module, prefix: str) -> QuantMethod | None:
        n = len(getattr(layer, "output_sizes", [1]))
        skip = decide_per_shard(prefix, n, lambda name: any(m in name for m in self.modules_to_not_convert))
        return None if skip else AWQLinearMethod(self.group_size)


class AWQLinearMethod(PackedLinearMethod):
    """Creates ``qweight``/``qzeros``/``scales`` (AWQ names) and repacks them at load."""

    checkpoint_params = ("qweight", "qzeros", "scales")
    bits = 4

    def __init__(self, group_size: int):
        self.group_size = group_size

    def create_weights(self, layer: nn.Module, input_size: int, output_sizes: list[int],
                       params_dtype: torch.dtype) -> None:
        K, N = input_size, sum(output_sizes)
        g = K if self.group_size == -1 else self.group_size
        if K % g or any(s % 8 for s in output_sizes):
            raise ValueError(f"AWQ layer [{output_sizes}, {K}] incompatible with group_size={self.group_size}: "
                             f"K must divide by {g}, each output size by 8")
        make_param(layer, "qweight", (K, N // 8), torch.int32, output_dim=1, packed_factor=8)
        make_param(layer, "qzeros", (K // g, N // 8), torch.int32, output_dim=1, packed_factor=8)
        make_param(layer, "scales", (K // g, N), params_dtype, output_dim=1)

    def to_packed(self, layer: nn.Module) -> PackedWeight:
        q = unpack_int32(layer.qweight.data, 4, dim=1, order=AWQ_ORDER)  # [K, N]
        zeros = unpack_int32(layer.qzeros.data, 4, dim=1, order=AWQ_ORDER)  # [K/g, N]
        return pack_internal(q, layer.scales.data, zeros, 4, self.group_size)
