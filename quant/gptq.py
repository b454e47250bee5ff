"""GPTQ checkpoints (AutoGPTQ / GPTQModel ``quant_method: "gptq"``), 4 and 8 bits.

Format (Frantar et al. 2022, arXiv:2210.17323; tensors as AutoGPTQ's ``QuantLinear`` and
GPTQModel's ``TorchQuantLinear`` save them), for a linear of K inputs and N outputs:

* ``qweight`` int32 ``[K / pack, N]``, ``pack = 32 / bits`` values along K per word, lowest first;
* ``qzeros`` int32 ``[K / g, N / pack]``, packed along N; ``checkpoint_format`` (or ``format``)
  ``"gptq"`` (v1) stores ``zero - 1`` and is read as ``(field + 1) & (2**bits - 1)`` (AutoGPTQ's
  torch dequantisation), ``"gptq_v2"`` stores the zero;
* ``scales`` ``[K / g, N]`` fp16; ``g_idx`` int32 ``[K]`` (group of each input feature);
* ``W[n, k] = (q[k, n] - zero[g_idx[k], n]) * scales[g_idx[k], n]``; ``group_size: -1`` is one
  group per column; ``desc_act: true`` (act-order) makes ``g_idx`` a scattered assignment, which
  the internal layout turns into a row permutation (``packing.act_order_perm``): the weight rows
  are sorted by group at load and the kernels gather activations through ``perm``.

Config keys read: ``bits``, ``group_size``, ``sym``, ``desc_act``, ``checkpoint_format``/``format``,
``lm_head``, GPTQModel's ``dynamic`` per-module overrides (``-:REGEX`` skips a module, ``+:REGEX``
or ``REGEX`` overrides ``bits``/``group_size``/``sym``/``desc_act``; ``re.match`` on the name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from gfx906_llm.quant.base import QuantConfig, QuantMethod, register_quant
from gfx906_llm.quant.packing import (PackedWeight, act_order_perm, check_bits, check_group_size,
                                      pack_internal, unpack_int32)
from gfx906_llm.quant.w4a16 import PackedLinearMethod, decide_per_shard, make_param, per_shard_loader, rows_agree

_FORMATS = ("gptq", "gptq_v2")


@dataclass(frozen=True)
class _Scheme:
    bits: int
    group_size: int
    sym: bool
    desc_act: bool


@register_quant("gptq")
@dataclass
class GPTQConfig(QuantConfig):
    """A GPTQ checkpoint's settings (``quantization_config`` / ``quantize_config.json``)."""

    bits: int = 4
    group_size: int = 128
    sym: bool = True
    desc_act: bool = False
    checkpoint_format: str = "gptq"
    lm_head: bool = False
    dynamic: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> "GPTQConfig":
        """Raises ValueError for unsupported bits, group sizes or checkpoint formats."""
        fmt = str(cfg.get("checkpoint_format", cfg.get("format", "gptq")) or "gptq").lower()
        if fmt not in _FORMATS:
            raise ValueError(f"GPTQ checkpoint_format={fmt!r} is not supported; supported: {_FORMATS}")
        c = cls(bits=int(cfg.get("bits", 4)), group_size=int(cfg.get("group_size", 128)),
                sym=bool(cfg.get("sym", True)), desc_act=bool(cfg.get("desc_act", False)), checkpoint_format=fmt,
                lm_head=bool(cfg.get("lm_head", False)), dynamic=dict(cfg.get("dynamic") or {}))
        c._validate(_Scheme(c.bits, c.group_size, c.sym, c.desc_act))
        for over in c.dynamic.values():
            c._validate(c._override(over))
        return c

    @staticmethod
    def _validate(s: _Scheme) -> None:
        check_group_size(s.group_size, s.bits)

    def _override(self, over: dict[str, Any]) -> _Scheme:
        base = _Scheme(self.bits, self.group_size, self.sym, self.desc_act)
        keys = {k: over[k] for k in ("bits", "group_size", "sym", "desc_act") if k in over}
        return replace(base, **keys)

    def scheme_for(self, name: str) -> _Scheme | None:
        """The scheme of the checkpoint module ``name``, or None if it is left unquantised."""
        if name.endswith("lm_head") and not self.lm_head:
            return None
        for pattern, over in self.dynamic.items():
            if pattern.startswith("-:"):
                if re.match(pattern[2:], name):
                    return None
            elif re.match(pattern[2:] if pattern.startswith("+:") else pattern, name):
                return self._override(over)
        return _Scheme(self.bits, self.group_size, self.sym, self.desc_act)

    def get_method(self, layer: nn.Module, prefix: str) -> QuantMethod | None:
        n = len(getattr(layer, "output_sizes", [1]))
        scheme = decide_per_shard(prefix, n, self.scheme_for)
        if scheme is None:
            return None
        return GPTQLinearMethod(scheme.bits, scheme.group_size, self.checkpoint_format == "gptq")


class GPTQLinearMethod(PackedLinearMethod):
    """Creates ``qweight``/``qzeros``/``scales``/``g_idx`` and repacks them to the internal layout."""

    checkpoint_params = ("qweight", "qzeros", "scales", "g_idx")

    def __init__(self, bits: int, group_size: int, v1_zeros: bool):
        self.bits, self.group_size, self.v1_zeros = bits, group_size, v1_zeros

    def create_weights(self, layer: nn.Module, input_size: int, output_sizes: list[int],
                       params_dtype: torch.dtype) -> None:
        pack = check_bits(self.bits)
        K, N = input_size, sum(output_sizes)
        g = K if self.group_size == -1 else self.group_size
        if K % pack or K % g or any(s % pack for s in output_sizes):
            raise ValueError(f"GPTQ layer [{output_sizes}, {K}] incompatible with bits={self.bits}, group_size="
                             f"{self.group_size}: K must divide by {pack} and {g}, each output size by {pack}")
        make_param(layer, "qweight", (K // pack, N), torch.int32, output_dim=1)
        make_param(layer, "qzeros", (K // g, N // pack), torch.int32, output_dim=1, packed_factor=pack)
        make_param(layer, "scales", (K // g, N), params_dtype, output_dim=1)
        g_idx = make_param(layer, "g_idx", (len(output_sizes), K), torch.int32, output_dim=None,
                           weight_loader=per_shard_loader)
        g_idx.data.copy_((torch.arange(K, dtype=torch.int32) // g).expand(len(output_sizes), K))

    def to_packed(self, layer: nn.Module) -> PackedWeight:
        bits = self.bits
        K = layer.g_idx.shape[1]
        g = K if self.group_size == -1 else self.group_size
        q = unpack_int32(layer.qweight.data, bits, dim=0)  # [K, N]
        zeros = unpack_int32(layer.qzeros.data, bits, dim=1)  # [K/g, N]
        if self.v1_zeros:
            zeros = (zeros + 1) & (2**bits - 1)
        g_idx = rows_agree(layer.g_idx.data, "g_idx (act-order permutations)")
        perm = act_order_perm(g_idx, g, K)
        return pack_internal(q, layer.scales.data, zeros, bits, self.group_size, perm)
