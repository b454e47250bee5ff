"""Dump a GGUF model to an fp16 (or bf16/fp32) Hugging Face folder with transformers' own GGUF loading.

transformers dequantises the GGUF tensors with gguf-py (``modeling_gguf_pytorch_utils``), maps
GGUF names to Hugging Face names and builds the config (``AutoConfig.from_pretrained(dir,
gguf_file=name)``) and tokenizer; this module saves all three with ``save_pretrained``. Used to
make "SmolLM2 fp16 folder made from the GGUF", the input of the quantisation tools.

    python -m gfx906_llm.quant.tools.hf_export MODEL.gguf OUT_DIR [--dtype float16]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import torch

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def load_gguf_model(gguf_path: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """transformers' model of ``gguf_path`` with every weight dequantised (``GgufConfig(dequantize=True)``:
    transformers 5 otherwise keeps GGUF blocks packed in ``GgufLinear``), in ``dtype``, eval mode.

    Raises:
        FileNotFoundError: ``gguf_path`` does not exist.
    """
    from transformers import AutoModelForCausalLM, GgufConfig

    if not os.path.isfile(gguf_path):
        raise FileNotFoundError(gguf_path)
    d, name = os.path.split(os.path.abspath(gguf_path))
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=name, dtype=dtype, quantization_config=GgufConfig(dequantize=True)
    )
    return model.eval()


def export_gguf_to_hf(
    gguf_path: str, out_dir: str, dtype: torch.dtype = torch.float16, model: torch.nn.Module | None = None
) -> str:
    """Write config.json, model.safetensors (dequantised, ``dtype``), generation config and the
    tokenizer of ``gguf_path`` into ``out_dir``; returns ``out_dir``.

    Args:
        model: the already loaded ``load_gguf_model(gguf_path)`` (any dtype), to skip a reload.
    Raises:
        FileNotFoundError: ``gguf_path`` does not exist.
        ValueError: ``dtype`` not float16/bfloat16/float32.
        RuntimeError: the GGUF's tensors do not fill the architecture's plain model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES.values():
        raise ValueError(f"dtype {dtype} not supported; accepted: {list(DTYPES)}")
    loaded = load_gguf_model(gguf_path, dtype) if model is None else model
    # A GGUF-loaded model refuses save_pretrained (its quantizer is not serializable): move the
    # weights into a plain model built from the same config, minus the GGUF quantization_config.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in loaded.state_dict().items()}
    missing, unexpected = plain.load_state_dict(state, strict=False)
    tied = set(getattr(plain, "_tied_weights_keys", None) or [])
    if unexpected or any(m not in tied for m in missing):
        raise RuntimeError(f"GGUF tensors do not fit {type(plain).__name__}: missing {missing}, unexpected {unexpected}")
    plain.tie_weights()
    d, name = os.path.split(os.path.abspath(gguf_path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    os.makedirs(out_dir, exist_ok=True)
    plain.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gfx906_llm.quant.tools.hf_export", description=__doc__.split("\n\n")[0])
    p.add_argument("gguf")
    p.add_argument("output")
    p.add_argument("--dtype", choices=list(DTYPES), default="float16")
    a = p.parse_args(argv)
    try:
        export_gguf_to_hf(a.gguf, a.output, DTYPES[a.dtype])
    except (FileNotFoundError, ValueError) as e:
        print(f"hf_export: error: {e}", file=sys.stderr)
        return 2
    print(a.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
