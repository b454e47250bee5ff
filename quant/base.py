"""The quantisation interface: a QuantConfig per checkpoint format, a QuantMethod per layer.

A linear layer (``gfx906_llm.layers.linear.LinearBase``) asks its QuantConfig for a
QuantMethod, which creates the layer's parameters (``create_weights``), repacks them once after
the checkpoint is loaded (``process_weights_after_loading``) and runs the matmul (``apply``).
This is vLLM's ``QuantizationConfig`` / ``LinearMethodBase`` split.

Parameter attributes read by the generic loader (``gfx906_llm.layers.linear.default_weight_loader``):
    output_dim (int | None): the dimension of the parameter that runs along the layer's output
        features; merged layers (q/k/v, gate/up) place each shard along it.
    packed_factor (int): how many output features share one element along ``output_dim``
        (AWQ packs 8 int4 outputs per int32); 1 when not packed along the output.
    weight_loader (callable): ``(param, loaded_weight, shard_id | None) -> None`` to override
        the generic loader.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any, Callable

import torch
from torch import nn

# name in quantization_config["quant_method"] -> module that registers it
_LAZY_FORMATS: dict[str, str] = {}
_REGISTRY: dict[str, type["QuantConfig"]] = {}


def register_quant(name: str) -> Callable[[type["QuantConfig"]], type["QuantConfig"]]:
    """Class decorator: register a QuantConfig under ``quantization_config["quant_method"]``."""

    def deco(cls: type[QuantConfig]) -> type[QuantConfig]:
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return deco


def register_lazy(name: str, module: str) -> None:
    """Declare that importing ``module`` registers the format ``name`` (kept import-free)."""
    _LAZY_FORMATS[name] = module


def supported_quant_methods() -> list[str]:
    return sorted(set(_REGISTRY) | set(_LAZY_FORMATS))


def get_quant_config_cls(name: str) -> type["QuantConfig"]:
    """The QuantConfig class for ``name``.

    Raises:
        ValueError: ``name`` is not a supported format (the message lists the supported ones).
    """
    if name not in _REGISTRY and name in _LAZY_FORMATS:
        importlib.import_module(_LAZY_FORMATS[name])
    if name not in _REGISTRY:
        raise ValueError(
            f"unsupported quantization method {name!r}; supported: {supported_quant_methods()}"
        )
    return _REGISTRY[name]


class QuantMethod(ABC):
    """How one layer stores its weights and computes ``y = x @ W.T + b``."""

    @abstractmethod
    def create_weights(
        self, layer: nn.Module, input_size: int, output_sizes: list[int], params_dtype: torch.dtype
    ) -> None:
        """Register the layer's parameters (on the default device) for a ``[sum(output_sizes),
        input_size]`` logical weight made of ``len(output_sizes)`` shards."""

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        """One-time repack after every shard is loaded (default: nothing)."""

    @abstractmethod
    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``[..., input_size]`` activations -> ``[..., sum(output_sizes)]`` in ``x.dtype``."""


class QuantConfig(ABC):
    """A checkpoint's quantisation format, built from its Hugging Face ``quantization_config``."""

    name: str = ""
    #: whether the token embedding and output head also take this config's QuantMethod
    quantizes_embeddings: bool = False

    @classmethod
    @abstractmethod
    def from_hf(cls, cfg: dict[str, Any]) -> "QuantConfig":
        """Build from the ``quantization_config`` dict; ValueError on unsupported settings."""

    @abstractmethod
    def get_method(self, layer: nn.Module, prefix: str) -> QuantMethod | None:
        """The method for the linear layer at ``prefix`` (e.g. ``model.layers.0.mlp.down_proj``),
        or None to leave it unquantised."""

    def supported_act_dtypes(self) -> list[torch.dtype]:
        return [torch.float16, torch.bfloat16, torch.float32]


class UnquantizedLinearMethod(QuantMethod):
    """Plain ``[out, in]`` weight in the model dtype; ``torch.nn.functional.linear``."""

    def create_weights(
        self, layer: nn.Module, input_size: int, output_sizes: list[int], params_dtype: torch.dtype
    ) -> None:
        weight = nn.Parameter(torch.empty(sum(output_sizes), input_size, dtype=params_dtype), requires_grad=False)
        weight.output_dim = 0
        weight.packed_factor = 1
        layer.register_parameter("weight", weight)

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return torch.nn.functional.linear(x, layer.weight, bias)


# Formats, imported on first use (quantization_config["quant_method"] -> module).
register_lazy("gptq", "gfx906_llm.quant.gptq")
register_lazy("awq", "gfx906_llm.quant.awq")
register_lazy("compressed-tensors", "gfx906_llm.quant.compressed_tensors")
register_lazy("gguf", "gfx906_llm.quant.gguf")
