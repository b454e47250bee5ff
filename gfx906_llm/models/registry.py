"""Hugging Face architecture name -> model class, imported lazily."""

from __future__ import annotations

import importlib

from torch import nn

# architecture -> (module, class)
_MODELS: dict[str, tuple[str, str]] = {
    "LlamaForCausalLM": ("gfx906_llm.models.llama", "LlamaForCausalLM"),
    "MistralForCausalLM": ("gfx906_llm.models.llama", "LlamaForCausalLM"),
    "Qwen2ForCausalLM": ("gfx906_llm.models.llama", "LlamaForCausalLM"),
    "Qwen3ForCausalLM": ("gfx906_llm.models.llama", "LlamaForCausalLM"),
    "Gemma3ForCausalLM": ("gfx906_llm.models.gemma3", "Gemma3ForCausalLM"),
}


def supported_architectures() -> list[str]:
    return sorted(_MODELS)


def register_model(architecture: str, module: str, cls: str) -> None:
    _MODELS[architecture] = (module, cls)


def get_model_class(architecture: str) -> type[nn.Module]:
    """The class for ``architecture``.

    Raises:
        ValueError: unknown architecture (names it and the supported list).
    """
    if architecture not in _MODELS:
        raise ValueError(
            f"unsupported model architecture {architecture!r}; supported: {', '.join(supported_architectures())}"
        )
    module, cls = _MODELS[architecture]
    return getattr(importlib.import_module(module), cls)
