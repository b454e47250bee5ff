"""Build a model from a Hugging Face folder or a GGUF file, with its tokenizer and chat template."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from gfx906_llm.config import ModelConfig, resolve_dtype
from gfx906_llm.platform import Platform, use_triton

logger = logging.getLogger(__name__)

_MODEL_TYPE_TO_ARCH = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
}


@dataclass
class LoadedModel:
    model: nn.Module
    model_config: ModelConfig
    tokenizer: Any
    eos_token_ids: frozenset[int]
    dtype: torch.dtype
    path: Path
    format: str  # "hf" | "gguf"
    weight_bytes: int
    load_seconds: float
    extra: dict = field(default_factory=dict)


def resolve_model_path(model: str | None) -> Path:
    """A model argument -> a path: None or a demo-model name downloads the pinned demo model; a
    folder holding exactly one ``.gguf`` and no config.json means that file.

    Raises:
        ValueError: the path does not exist or holds no model.
    """
    from gfx906_llm import demo_models

    if model is None:
        return demo_models.fetch(demo_models.DEFAULT_MODEL)
    if model in demo_models.DEMO_MODELS and not Path(model).exists():
        return demo_models.fetch(model)
    p = Path(model).expanduser()
    if p.is_file():
        if p.suffix != ".gguf":
            raise ValueError(f"{p}: a model file must be .gguf (or give a Hugging Face folder)")
        return p
    if p.is_dir():
        if (p / "config.json").is_file():
            return p
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return ggufs[0]
        raise ValueError(f"{p}: no config.json and {len(ggufs)} .gguf files; give the file or a HF folder")
    raise ValueError(
        f"model {model!r} is neither a path nor a demo model ({', '.join(sorted(demo_models.DEMO_MODELS))})"
    )


def _eos_ids(tokenizer: Any, *sources: Any) -> frozenset[int]:
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    for src in sources:
        v = getattr(src, "eos_token_id", None) if not isinstance(src, dict) else src.get("eos_token_id")
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, (list, tuple)):
            ids.update(int(x) for x in v)
    return frozenset(ids)


def _hf_sources(path: Path, tokenizer_path: str | None):
    from transformers import AutoConfig, AutoTokenizer

    try:
        hf = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{path / 'config.json'}: cannot be read as a model config ({e})") from None
    tok = AutoTokenizer.from_pretrained(tokenizer_path or path)
    gen = {}
    if (path / "generation_config.json").is_file():
        try:
            gen = json.loads((path / "generation_config.json").read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path / 'generation_config.json'}: invalid JSON ({e})") from None
    return hf, tok, gen


def _gguf_sources(path: Path, tokenizer_path: str | None):
    """Reader, HF config and tokenizer of a GGUF file.

    transformers derives the config and tokenizer from the GGUF metadata (parsing the whole file
    twice); the result is saved as a plain HF config/tokenizer folder under the cache directory,
    keyed by the file's name, size and mtime, so later starts read it back in well under a second.
    """
    from transformers import AutoConfig, AutoTokenizer

    from gfx906_llm.demo_models import cache_dir
    from gfx906_llm.loader.gguf import open_gguf

    reader = open_gguf(path)  # validates the file first, with a clear error
    st = path.stat()
    meta = cache_dir() / "gguf-meta" / f"{path.stem}-{st.st_size}-{int(st.st_mtime)}"
    if (meta / "config.json").is_file():
        hf = AutoConfig.from_pretrained(meta)
        tok = AutoTokenizer.from_pretrained(tokenizer_path or meta)
        return reader, hf, tok
    try:
        hf = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    except (ValueError, KeyError, OSError) as e:
        raise ValueError(f"{path}: cannot derive a model config from the GGUF metadata ({e})") from None
    if tokenizer_path:
        return reader, hf, AutoTokenizer.from_pretrained(tokenizer_path)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    try:
        tmp = meta.with_name(meta.name + f".tmp{os.getpid()}")
        hf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, meta)
    except OSError as e:  # a read-only cache only costs time
        logger.debug("could not cache GGUF metadata in %s: %s", meta, e)
    return reader, hf, tok


def load_model(model: str | None, platform: Platform, dtype: str = "auto", tokenizer: str | None = None,
               quantization: str | None = None) -> LoadedModel:
    """Load ``model`` onto ``platform.device``.

    Args:
        model: HF folder, ``.gguf`` file, demo-model name or None (the SmolLM2 demo model).
        dtype: ``auto`` or a dtype name (``EngineConfig.dtype``).
        quantization: None (the checkpoint's format; GGUF blocks kept where Triton kernels run,
            dequantised at load elsewhere), ``"gguf"`` (keep GGUF blocks) or ``"none"``
            (dequantise GGUF at load); for HF folders it must match the checkpoint.

    Raises:
        ValueError: unreadable/malformed files (named), unsupported architecture or format.
    """
    from gfx906_llm.models.registry import get_model_class
    from gfx906_llm.quant.base import get_quant_config_cls

    t0 = time.monotonic()
    path = resolve_model_path(model)
    is_gguf = path.suffix == ".gguf"
    if is_gguf:
        reader, hf, tok = _gguf_sources(path, tokenizer)
        gen: dict = {}
    else:
        reader = None
        hf, tok, gen = _hf_sources(path, tokenizer)
    if not getattr(hf, "architectures", None):
        arch = _MODEL_TYPE_TO_ARCH.get(getattr(hf, "model_type", ""))
        if arch is None:
            raise ValueError(f"{path}: unsupported model_type {getattr(hf, 'model_type', None)!r}")
        hf.architectures = [arch]
    cfg = ModelConfig.from_hf(hf)
    cls = get_model_class(cfg.architecture)  # ValueError names the supported list
    quant_config = None
    qcfg_dict = getattr(hf, "quantization_config", None)
    if is_gguf:
        if quantization not in (None, "gguf", "none"):
            raise ValueError(f"{path.name} is a GGUF file: --quantization must be gguf or none, not {quantization!r}")
        if quantization == "gguf" or (quantization is None and use_triton(platform)):
            # GPU: weights stay in their GGUF blocks and the fused kernels dequantise them;
            # CPU / torch path: dequantised once at load (gguf-py)
            quant_config = get_quant_config_cls("gguf").from_hf({})
    elif qcfg_dict:
        if not isinstance(qcfg_dict, dict):
            qcfg_dict = qcfg_dict.to_dict()
        method = qcfg_dict.get("quant_method")
        if quantization not in (None, method):
            raise ValueError(f"{path}: the checkpoint is {method}, but --quantization {quantization} was given")
        quant_config = get_quant_config_cls(method).from_hf(qcfg_dict)
    elif quantization not in (None, "none"):
        raise ValueError(f"{path}: the checkpoint is not quantised, but --quantization {quantization} was given")
    run_dtype = resolve_dtype(dtype, cfg.checkpoint_dtype, platform)
    device = torch.device(platform.device)

    prev_dtype = torch.get_default_dtype()
    torch.set_default_dtype(run_dtype)
    try:
        with device:
            net = cls(cfg, quant_config)
    finally:
        torch.set_default_dtype(prev_dtype)
    if is_gguf:
        from gfx906_llm.loader.gguf import iter_gguf_weights

        weights = iter_gguf_weights(reader, cfg.num_attention_heads, cfg.num_key_value_heads)
        total = len(reader.tensors)
    else:
        from gfx906_llm.loader.safetensors import iter_safetensors, safetensors_files

        files = safetensors_files(path)
        weights = iter_safetensors(files)
        total = None
    bar = tqdm(weights, total=total, desc=f"Loading {path.name}", unit="tensor", leave=False,
               disable=None)
    with torch.no_grad():
        net.load_weights(bar)
    net.eval()
    if device.type == "cuda":
        torch.cuda.synchronize()
    nbytes = sum(p.numel() * p.element_size() for p in net.parameters())
    dt = time.monotonic() - t0
    logger.info("loaded %s (%s, %s) in %.1f s: weights take %.1f MiB on %s", path.name, cfg.architecture,
                str(run_dtype).replace("torch.", ""), dt, nbytes / 2**20, device)
    return LoadedModel(net, cfg, tok, _eos_ids(tok, hf, gen), run_dtype, path,
                       "gguf" if is_gguf else "hf", nbytes, dt)
