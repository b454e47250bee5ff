"""GGUF files: metadata to a Hugging Face config, tensors to Hugging Face parameter names.

Read with gguf-py's ``GGUFReader`` (memory-mapped); the config and tokenizer come from
transformers' own GGUF support (``from_pretrained(dir, gguf_file=name)``). Format:
https://github.com/ggml-org/ggml/blob/master/docs/gguf.md. llama.cpp's converter permutes the
rows of Q and K for the ``llama`` architecture (interleaved rotary); they are permuted back here
so that the model uses Hugging Face's rotate-half rotary.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

# GGUF tensor name (after "blk.N.") -> HF module path (after "model.layers.N.")
_LAYER_MAP = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# per-architecture overrides (Gemma 3 has four norms per layer)
_ARCH_LAYER_MAP = {
    "gemma3": {
        "post_attention_norm": "post_attention_layernorm",
        "ffn_norm": "pre_feedforward_layernorm",
        "post_ffw_norm": "post_feedforward_layernorm",
    },
}
_GLOBAL_MAP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# GGUF general.architecture -> HF architecture
GGUF_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
}
# architectures whose Q/K rows llama.cpp's converter permuted
_PERMUTED_QK = {"llama", "mistral"}
# architectures whose RMSNorm weights llama.cpp's converter stored as 1 + w
_NORM_PLUS_ONE = {"gemma3"}

_BLK = re.compile(r"^blk\.(\d+)\.([a-z_0-9]+)\.(weight|bias)$")


def _reader_cls():
    from gguf import GGUFReader

    class FastGGUFReader(GGUFReader):
        """GGUFReader over a plain ndarray view of its memmap: numpy's memmap subclass pays an
        ``__array_finalize__`` per slice, which made parsing a 49k-token vocabulary take seconds."""

        @property
        def data(self):
            return self._data

        @data.setter
        def data(self, value):
            self._data = value.view(np.ndarray) if isinstance(value, np.memmap) else value

    return FastGGUFReader


def open_gguf(path: str | Path):
    """``gguf.GGUFReader`` for ``path`` (memory-mapped, read-only).

    Raises:
        ValueError: the file is missing or not a valid GGUF file (names the file and the cause).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such GGUF file")
    try:
        return _reader_cls()(path, "r")
    except Exception as e:  # gguf-py raises ValueError/struct errors/IndexError on bad files
        raise ValueError(f"{path}: not a valid GGUF file ({type(e).__name__}: {e})") from None


def gguf_architecture(reader) -> str:
    field = reader.fields.get("general.architecture")
    if field is None:
        raise ValueError("GGUF file has no general.architecture")
    return bytes(field.parts[field.data[0]]).decode()


def hf_name(gguf_name: str, arch: str) -> str | None:
    """Hugging Face parameter name for a GGUF tensor name, or None when unknown."""
    m = _BLK.match(gguf_name)
    if m:
        layer, part, kind = m.groups()
        module = _ARCH_LAYER_MAP.get(arch, {}).get(part, _LAYER_MAP.get(part))
        return None if module is None else f"model.layers.{layer}.{module}.{kind}"
    base, _, kind = gguf_name.rpartition(".")
    module = _GLOBAL_MAP.get(base)
    return None if module is None else f"{module}.{kind}"


def _unpermute_rows(n_head: int):
    """Row order that undoes llama.cpp's ``permute`` (convert_hf_to_gguf.py, LlamaModel)."""

    def index(rows: int) -> np.ndarray:
        half = rows // n_head // 2
        return np.arange(rows).reshape(n_head, half, 2).swapaxes(1, 2).reshape(rows)

    return index


class GGUFTensor:
    """A lazily read GGUF tensor. ``materialize(param)`` returns raw blocks (a
    ``gfx906_llm.quant.gguf.GGUFWeight``) for parameters marked ``gguf_weight``, else a float32
    torch tensor dequantised with gguf-py's numpy dequantisers."""

    def __init__(self, rt, row_index=None, add: float = 0.0):
        self.rt = rt
        self.row_index = row_index
        self.add = add  # Gemma: llama.cpp stores norm weights as 1 + w
        self.shape = tuple(int(x) for x in reversed(rt.shape.tolist()))  # numpy order: [rows, cols]

    def materialize(self, param):
        data = self.rt.data
        if getattr(param, "gguf_weight", False):
            from gfx906_llm.quant.gguf import GGUFWeight

            raw = np.asarray(data).view(np.uint8).reshape(self.shape[0], -1)
            if self.row_index is not None:
                raw = raw[self.row_index(raw.shape[0])]
            return GGUFWeight(np.ascontiguousarray(raw), self.rt.tensor_type, self.shape)
        from gguf.quants import dequantize

        arr = dequantize(data, self.rt.tensor_type).reshape(self.shape)
        if self.row_index is not None:
            arr = arr[self.row_index(arr.shape[0])]
        if self.add:
            arr = arr + np.float32(self.add)
        return torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))


def iter_gguf_weights(reader, num_heads: int, num_kv_heads: int) -> Iterator[tuple[str, GGUFTensor]]:
    """``(hf_name, GGUFTensor)`` for every tensor of the file with a known name."""
    arch = gguf_architecture(reader)
    permute = arch in _PERMUTED_QK
    for rt in reader.tensors:
        name = hf_name(rt.name, arch)
        if name is None:
            continue
        row_index = None
        if permute and name.endswith(("q_proj.weight", "k_proj.weight")):
            row_index = _unpermute_rows(num_heads if ".q_proj." in name else num_kv_heads)
        add = -1.0 if arch in _NORM_PLUS_ONE and name.endswith("norm.weight") else 0.0
        yield name, GGUFTensor(rt, row_index, add)


def gguf_has_tensor(reader, gguf_name: str) -> bool:
    return any(t.name == gguf_name for t in reader.tensors)
