"""The shared weight-only (W4A16 / W8A16) linear method: one internal layout for every format.

GPTQ, AWQ and compressed-tensors methods (``gptq.py``, ``awq.py``, ``compressed_tensors.py``)
create their checkpoint parameters under the format's own names and convert them once, in
``process_weights_after_loading``, into the internal layout of ``quant/packing.py``; from then on
this class runs every layer the same way:

* on a GPU (unless ``GFX906_LLM_KERNELS=torch``): the fused Triton kernels of
  ``gfx906_llm.kernels.gfx906.w4a16_gemv`` / ``w4a16_gemm`` (GEMV for ``M <= 16`` rows, tiled
  GEMM above, dequantise-then-matmul from the arch's ``dequant_min_m``, which on CUDA depends on
  ``K * N``: ``w4a16_gemm.choose_path``); ``apply_deferred`` may hand the GEMV's split-K
  partials to the consumer (``gfx906_llm.layers.splitk``);
* on the CPU: plain torch, dequantising to fp32 and calling ``matmul`` (no Triton).

After processing a layer holds ``w_qweight`` (int32 ``[K_pad / pack, N]``), ``w_scales``
(``[K_pad / g, N]``, fp16 on GPUs), ``w_zeros`` (uint8 or None), ``w_perm`` (int32 ``[K]`` or
None) and ``layer.w4a16_layout`` (bits, group size, in/out features).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from gfx906_llm.quant.base import QuantMethod
from gfx906_llm.quant.packing import PackedWeight, dequantize_internal

#: merged layer name -> the checkpoint's per-shard names (vLLM's packed_modules_mapping)
PACKED_MODULES = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def shard_prefixes(prefix: str, num_shards: int = 1) -> list[str]:
    """The checkpoint names of the layer at ``prefix`` (``...qkv_proj`` -> ``...q_proj``, ...)."""
    head, _, last = prefix.rpartition(".")
    names = PACKED_MODULES.get(last)
    if names is None or num_shards != len(names):
        return [prefix]
    return [f"{head}.{n}" if head else n for n in names]


def decide_per_shard(prefix: str, num_shards: int, decide: Callable[[str], object]) -> object:
    """Apply ``decide`` to each shard name of a merged layer; the shards must agree.

    Raises:
        ValueError: the shards of one merged layer are configured differently.
    """
    answers = [decide(p) for p in shard_prefixes(prefix, num_shards)]
    if any(a != answers[0] for a in answers[1:]):
        raise ValueError(f"the shards of merged layer {prefix!r} are quantised differently ({answers}); "
                         "unsupported")
    return answers[0]


def match_name(name: str, pattern: str) -> bool:
    """compressed-tensors target matching: ``re:REGEX`` (``re.match``) or the exact name."""
    if pattern.startswith("re:"):
        return re.match(pattern[3:], name) is not None
    return name == pattern


def make_param(layer: nn.Module, name: str, shape: tuple[int, ...], dtype: torch.dtype, output_dim: int | None,
               packed_factor: int = 1, weight_loader: Callable | None = None) -> nn.Parameter:
    """Register an empty non-trainable parameter with the loader attributes of ``quant/base.py``."""
    p = nn.Parameter(torch.empty(shape, dtype=dtype), requires_grad=False)
    p.output_dim = output_dim
    p.packed_factor = packed_factor
    if weight_loader is not None:
        p.weight_loader = weight_loader
    layer.register_parameter(name, p)
    return p


def per_shard_loader(param: nn.Parameter, loaded: torch.Tensor, shard_id: int | None = None) -> None:
    """Loader for tensors that do not run along the output (``g_idx``, ``weight_shape``): the
    parameter has one row per shard; each shard's tensor goes to its row.

    Raises:
        ValueError: the tensor does not fit the row.
    """
    row = param.data[0 if shard_id is None else shard_id]
    if loaded.numel() != row.numel():
        raise ValueError(f"per-shard tensor of shape {tuple(loaded.shape)} does not fit {tuple(row.shape)}")
    row.copy_(loaded.reshape(row.shape))


def rows_agree(t: torch.Tensor, what: str) -> torch.Tensor:
    """The common row of a per-shard parameter; ValueError if the shards disagree."""
    if not bool((t == t[:1]).all()):
        raise ValueError(f"the shards of a merged layer have different {what}; unsupported")
    return t[0]


@dataclass(frozen=True)
class W4A16Layout:
    bits: int
    group_size: int
    in_features: int
    out_features: int


class PackedLinearMethod(QuantMethod):
    """Base for the GPTQ / AWQ / compressed-tensors methods: subclasses implement
    ``create_weights`` (checkpoint parameters), ``checkpoint_params`` and ``to_packed``."""

    checkpoint_params: tuple[str, ...] = ()

    def to_packed(self, layer: nn.Module) -> PackedWeight:  # pragma: no cover - abstract
        raise NotImplementedError

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        pw = self.to_packed(layer)
        device = pw.qweight.device
        for name in self.checkpoint_params:
            if hasattr(layer, name):
                delattr(layer, name)
        sdtype = torch.float16 if device.type != "cpu" else torch.float32

        def reg(name: str, t: torch.Tensor | None) -> None:
            layer.register_parameter(name, None if t is None else nn.Parameter(t.contiguous(), requires_grad=False))

        reg("w_qweight", pw.qweight)
        reg("w_scales", pw.scales.to(sdtype))
        reg("w_zeros", pw.zeros)
        reg("w_perm", pw.perm)
        layer.w4a16_layout = W4A16Layout(pw.bits, pw.group_size, pw.in_features, pw.out_features)
        if device.type != "cpu":
            from gfx906_llm.kernels.gfx906.w4a16_gemv import ticket_counters

            ticket_counters(device)  # allocate before any CUDA-graph capture

    @staticmethod
    def packed_weight(layer: nn.Module) -> PackedWeight:
        lay: W4A16Layout = layer.w4a16_layout
        return PackedWeight(layer.w_qweight, layer.w_scales, layer.w_zeros, layer.w_perm, lay.bits,
                            lay.group_size, lay.in_features, lay.out_features)

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x [..., K]`` (fp16/bf16/fp32) -> ``[..., N]`` in ``x.dtype``."""
        return self._apply(layer, x, bias, False)

    def apply_deferred(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None):
        """Like ``apply`` for a 2D ``x [M, K]``, but may return the GEMV's split-K partials as a
        ``gfx906_llm.layers.splitk.SplitKPartials`` instead of summing them (the consumer sums)."""
        return self._apply(layer, x, bias, True)

    def _apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None, defer: bool):
        lay: W4A16Layout = layer.w4a16_layout
        x2 = x.reshape(-1, lay.in_features)  # [M, K]
        if x2.is_cuda and _use_triton():
            from gfx906_llm.kernels.gfx906.w4a16_gemm import w4a16_linear

            if x2.stride(-1) != 1:
                x2 = x2.contiguous()
            y = w4a16_linear(x2, layer.w_qweight, layer.w_scales, layer.w_zeros, layer.w_perm, bias,
                             lay.bits, lay.group_size, lay.in_features, defer_reduce=defer and x.dim() == 2)
            if not isinstance(y, torch.Tensor):
                return y
        else:
            w = dequantize_internal(self.packed_weight(layer), torch.float32)  # [N, K]
            y = x2.to(torch.float32) @ w.t()
            if bias is not None:
                y = y + bias.to(torch.float32)
            y = y.to(x.dtype)
        return y.reshape(*x.shape[:-1], lay.out_features)


def _use_triton() -> bool:
    from gfx906_llm.platform import detect_platform, use_triton

    return use_triton(detect_platform())
