"""compressed-tensors checkpoints (llm-compressor ``quant_method: "compressed-tensors"``), the
``pack-quantized`` format for weight-only int4 / int8 (W4A16, W8A16).

Format (``compressed_tensors.compressors.pack_quantized``, ``pack_to_int32`` / ``unpack_from_int32``;
``QuantizationArgs`` in ``compressed_tensors.quantization.quant_args``), per quantised linear of K
inputs and N outputs, ``pack = 32 / num_bits``:

* ``weight_packed`` int32 ``[N, K / pack]``: signed values ``q`` in ``[-2**(b-1), 2**(b-1))``
  stored as ``q + 2**(b-1)`` (uint4b8 for symmetric 4 bits), packed along K, lowest bits first;
* ``weight_scale`` ``[N, K / g]`` for ``strategy: "group"``, ``[N, 1]`` for ``"channel"``;
* ``weight_zero_point`` int32 ``[N / pack, K / g]`` (signed zero + offset, packed along N) when
  ``symmetric: false``; absent (zero 0) when symmetric;
* ``weight_shape`` int ``[2]`` = ``(N, K)``; ``weight_g_idx`` int32 ``[K]`` for the old
  ``actorder: "group"`` (handled like GPTQ act-order);
* ``W[n, k] = (q[n, k] - zero[n, k // g]) * scale[n, k // g]``.

A layer is quantised by the first config group whose ``targets`` match it (``"Linear"`` matches
every linear layer; otherwise a module name or ``re:REGEX``); names or regexes in ``ignore`` stay
unquantised (``get_method`` returns None). Merged layers (``qkv_proj``, ``gate_up_proj``) are
matched through their per-shard names (``q_proj``, ...), which must agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gfx906_llm.quant.base import QuantConfig, QuantMethod, register_quant
from gfx906_llm.quant.packing import (PackedWeight, act_order_perm, check_bits, check_group_size,
                                      pack_internal, unpack_int32)
from gfx906_llm.quant.w4a16 import (PackedLinearMethod, decide_per_shard, make_param, match_name,
                                    per_shard_loader, rows_agree)

_FORMAT = "pack-quantized"


@dataclass(frozen=True)
class CTWeightScheme:
    """The ``weights`` QuantizationArgs of one config group (the supported subset)."""

    num_bits: int
    symmetric: bool
    group_size: int  # -1 for "channel"
    actorder_group: bool

    @classmethod
    def from_args(cls, w: dict[str, Any]) -> "CTWeightScheme":
        """Raises ValueError for anything but int 4/8-bit, group or channel, static weights."""
        bits = int(w.get("num_bits", 8))
        check_bits(bits)
        if str(w.get("type", "int")).lower() != "int":
            raise ValueError(f"compressed-tensors weights type={w.get('type')!r} unsupported; supported: 'int'")
        if w.get("dynamic", False):
            raise ValueError("compressed-tensors dynamic weight quantisation is unsupported")
        strategy = str(w.get("strategy", "tensor")).lower()
        if strategy == "group":
            g = int(w.get("group_size") or 0)
            if g <= 0:
                raise ValueError(f"compressed-tensors group_size={w.get('group_size')} unsupported; strategy 'group' "
                                 "needs a positive group_size")
            check_group_size(g, bits)
        elif strategy == "channel":
            g = -1
        else:
            raise ValueError(f"compressed-tensors weight strategy={strategy!r} unsupported; supported: 'group', 'channel'")
        actorder = w.get("actorder")
        return cls(bits, bool(w.get("symmetric", True)), g, str(actorder).lower() == "group")


@register_quant("compressed-tensors")
@dataclass
class CompressedTensorsConfig(QuantConfig):
    """The config groups (targets -> weight scheme) and ignore list of a compressed-tensors model."""

    groups: list[tuple[list[str], CTWeightScheme]] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> "CompressedTensorsConfig":
        """Raises ValueError for formats other than pack-quantized, activation quantisation or
        sparsity."""
        top_fmt = cfg.get("format")
        if cfg.get("sparsity_config"):
            raise ValueError("compressed-tensors sparsity_config is unsupported")
        groups = []
        for name, grp in (cfg.get("config_groups") or {}).items():
            fmt = grp.get("format") or top_fmt
            if fmt != _FORMAT:
                raise ValueError(f"compressed-tensors format={fmt!r} (group {name}) unsupported; supported: {_FORMAT!r}")
            if grp.get("input_activations") or grp.get("output_activations"):
                raise ValueError(f"compressed-tensors group {name} quantises activations; only weight-only "
                                 "W4A16/W8A16 is supported")
            if not grp.get("weights"):
                raise ValueError(f"compressed-tensors group {name} has no weights scheme")
            groups.append((list(grp.get("targets") or []), CTWeightScheme.from_args(grp["weights"])))
        if not groups:
            raise ValueError("compressed-tensors config has no config_groups")
        return cls(groups, list(cfg.get("ignore") or []))

    def scheme_for(self, name: str) -> CTWeightScheme | None:
        if any(match_name(name, pat) for pat in self.ignore):
            return None
        for targets, scheme in self.groups:
            if any(t == "Linear" or match_name(name, t) for t in targets):
                return scheme
        return None

    def get_method(self, layer: nn.Module, prefix: str) -> QuantMethod | None:
        n = len(getattr(layer, "output_sizes", [1]))
        scheme = decide_per_shard(prefix, n, self.scheme_for)
        return None if scheme is None else CompressedTensorsLinearMethod(scheme)


class CompressedTensorsLinearMethod(PackedLinearMethod):
    """Creates ``weight_packed``/``weight_scale``/``weight_zero_point``/``weight_shape``
    (/``weight_g_idx``) and repacks them at load."""

    checkpoint_params = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx")

    def __init__(self, scheme: CTWeightScheme):
        self.scheme = scheme
        self.bits = scheme.num_bits

    def create_weights(self, layer: nn.Module, input_size: int, output_sizes: list[int],
                       params_dtype: torch.dtype) -> None:
        s = self.scheme
        pack = check_bits(s.num_bits)
        K, N = input_size, sum(output_sizes)
        g = K if s.group_size == -1 else s.group_size
        if K % pack or K % g or (not s.symmetric and any(o % pack for o in output_sizes)):
            raise ValueError(f"compressed-tensors layer [{output_sizes}, {K}] incompatible with num_bits="
                             f"{s.num_bits}, group_size={s.group_size}")
        make_param(layer, "weight_packed", (N, K // pack), torch.int32, output_dim=0)
        make_param(layer, "weight_scale", (N, K // g), params_dtype, output_dim=0)
        if not s.symmetric:
            make_param(layer, "weight_zero_point", (N // pack, K // g), torch.int32, output_dim=0, packed_factor=pack)
        shape = make_param(layer, "weight_shape", (len(output_sizes), 2), torch.int64, output_dim=None,
                           weight_loader=per_shard_loader)
        shape.data.copy_(torch.tensor([[o, K] for o in output_sizes]))
        if s.actorder_group:
            gi = make_param(layer, "weight_g_idx", (len(output_sizes), K), torch.int32, output_dim=None,
                            weight_loader=per_shard_loader)
            gi.data.copy_((torch.arange(K, dtype=torch.int32) // g).expand(len(output_sizes), K))
        layer.ct_output_sizes = list(output_sizes)

    def to_packed(self, layer: nn.Module) -> PackedWeight:
        s = self.scheme
        K = layer.weight_packed.shape[1] * (32 // s.num_bits)
        want = torch.tensor([[o, K] for o in layer.ct_output_sizes])
        if not torch.equal(layer.weight_shape.data.cpu().to(torch.int64), want):
            raise ValueError(f"weight_shape {layer.weight_shape.data.tolist()} != layer shards {want.tolist()}")
        q = unpack_int32(layer.weight_packed.data, s.num_bits, dim=1).t()  # [K, N], stored q + 2**(b-1)
        zeros = None
        if not s.symmetric:
            zeros = unpack_int32(layer.weight_zero_point.data, s.num_bits, dim=0).t()  # [K/g, N]
        perm = None
        if s.actorder_group:
            g = K if s.group_size == -1 else s.group_size
            perm = act_order_perm(rows_agree(layer.weight_g_idx.data, "weight_g_idx"), g, K)
        return pack_internal(q, layer.weight_scale.data.t(), zeros, s.num_bits, s.group_size, perm)
