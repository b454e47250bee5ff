"""Quantisation: formats (QuantConfig / QuantMethod registry) and the tools that make checkpoints.

Importing this package imports no Triton and touches no GPU; format modules register lazily.
"""

from gfx906_llm.quant.base import (
    QuantConfig,
    QuantMethod,
    UnquantizedLinearMethod,
    get_quant_config_cls,
    register_quant,
    supported_quant_methods,
)

__all__ = [
    "QuantConfig",
    "QuantMethod",
    "UnquantizedLinearMethod",
    "get_quant_config_cls",
    "register_quant",
    "supported_quant_methods",
]
