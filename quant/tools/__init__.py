"""Tools that turn an fp16/bf16 Hugging Face model folder into quantised checkpoints.

Algorithms: ``gptq`` (GPTQ, Frantar et al. 2022), ``awq`` (AWQ, Lin et al. 2023), ``rtn``
(round-to-nearest). Formats (``writers``): GPTQ v1 (AutoGPTQ / GPTQModel / vLLM ``gptq``), AWQ GEMM
(AutoAWQ / vLLM ``awq``) and compressed-tensors ``pack-quantized`` (llm-compressor / vLLM).
``cli.main`` is the ``gfx906-llm quantize`` entry point; ``hf_export`` turns a GGUF into an fp16
Hugging Face folder. Importing this package imports torch only (transformers on use).
"""

from gfx906_llm.quant.tools.rtn import QuantizedWeight, quantize_rtn

__all__ = ["QuantizedWeight", "quantize_rtn"]
