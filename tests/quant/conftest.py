"""Independent numpy unpackers for the quantised checkpoint formats, and the SmolLM2 fp16 folder.

The unpackers are written from the formats' published descriptions, not from
gfx906_llm.quant.tools.writers (nor the engine's loaders):
* GPTQ v1 (AutoGPTQ ``QuantLinear``): qweight int32 ``[K/pf, N]``, code (k, n) at bits
  ``bits * (k % pf)`` of word ``[k // pf, n]``; qzeros int32 ``[G, N/pf]`` hold ``zero - 1``;
  scales ``[G, N]``; ``W[n, k] = scales[g_idx[k], n] * (q - zero)``.
* AWQ GEMM (vLLM ``awq_triton`` / AutoAWQ ``unpack_awq``): qweight int32 ``[K, N/8]``, column
  ``8c + j`` in nibble ``AWQ_REVERSE_ORDER[j] = [0, 4, 1, 5, 2, 6, 3, 7][j]`` of word ``[k, c]``;
  qzeros the same over ``[G, N/8]``; ``W = (q - zero) * scale``.
* compressed-tensors pack-quantized (``pack_to_int32`` docs): element i of a row at global bit
  ``i * bits``, stored as signed value + ``2**(bits-1)``; zero points packed along dim 0.
"""

from __future__ import annotations

import json
import os
import types

import numpy as np
import pytest

AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]


def _nibbles(words: np.ndarray, bits: int) -> np.ndarray:
    """uint codes ``[..., W, 32/bits]``: code i of each word at bits ``[bits*i, bits*i + bits)``."""
    w = words.astype(np.int64) & 0xFFFFFFFF
    pf = 32 // bits
    return (w[..., None] >> (bits * np.arange(pf))) & (2**bits - 1)


def unpack_gptq_v1(qweight, qzeros, scales, g_idx, bits):
    """float32 ``W`` ``[N, K]`` of one GPTQ v1 linear (numpy inputs)."""
    kp, n = qweight.shape
    q = _nibbles(qweight.T, bits).reshape(n, -1)  # [N, K]: word row r holds k = r*pf + i
    z = _nibbles(qzeros, bits).reshape(qzeros.shape[0], -1) + 1  # [G, N]
    g = g_idx.astype(np.int64)
    return scales.astype(np.float32)[g].T * (q - z[g].T)


def unpack_awq(qweight, qzeros, scales, group_size):
    """float32 ``W`` ``[N, K]`` of one AWQ GEMM linear."""
    k, c = qweight.shape
    nib = _nibbles(qweight, 4)  # [K, N/8, 8]: nibble position -> value
    q = nib[:, :, AWQ_REVERSE_ORDER].reshape(k, c * 8)  # [K, N]
    zn = _nibbles(qzeros, 4)
    z = zn[:, :, AWQ_REVERSE_ORDER].reshape(qzeros.shape[0], -1)  # [G, N]
    gs = k if group_size == -1 else group_size
    g = np.arange(k) // gs
    return ((q - z[g]) * scales.astype(np.float32)[g]).T


def unpack_ct(weight_packed, weight_scale, weight_shape, bits, group_size, zero_point=None, g_idx=None):
    """float32 ``W`` ``[N, K]`` of one compressed-tensors pack-quantized linear."""
    n, k = (int(v) for v in weight_shape)
    off = 2 ** (bits - 1)
    q = _nibbles(weight_packed, bits).reshape(n, -1)[:, :k] - off  # [N, K] signed
    gs = k if group_size in (-1, None) else group_size
    g = (np.arange(k) // gs) if g_idx is None else g_idx.astype(np.int64)
    zp = np.zeros_like(weight_scale, dtype=np.int64)
    if zero_point is not None:
        zp = _nibbles(zero_point.T, bits).reshape(zero_point.shape[1], -1)[:, :n].T - off  # [N, G]
    return weight_scale.astype(np.float32)[:, g] * (q - zp[:, g])


def dequantize_checkpoint(folder: str) -> dict[str, np.ndarray]:
    """Every tensor of ``folder/model.safetensors`` with quantised linears turned back into float
    ``<prefix>.weight`` ``[N, K]`` by the unpackers above (format from config.json)."""
    from safetensors.numpy import load_file

    with open(os.path.join(folder, "config.json")) as f:
        qc = json.load(f)["quantization_config"]
    t = load_file(os.path.join(folder, "model.safetensors"))
    out: dict[str, np.ndarray] = {}
    method = qc["quant_method"]
    if method == "gptq":
        suffixes, key = ("qweight", "qzeros", "scales", "g_idx"), "qweight"
    elif method == "awq":
        suffixes, key = ("qweight", "qzeros", "scales"), "qweight"
    else:
        suffixes, key = ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point", "weight_g_idx"), "weight_packed"
    prefixes = [name[: -len(key) - 1] for name in t if name.endswith("." + key)]
    for p in prefixes:
        if method == "gptq":
            w = unpack_gptq_v1(t[p + ".qweight"], t[p + ".qzeros"], t[p + ".scales"], t[p + ".g_idx"], qc["bits"])
        elif method == "awq":
            w = unpack_awq(t[p + ".qweight"], t[p + ".qzeros"], t[p + ".scales"], qc["group_size"])
        else:
            wa = qc["config_groups"]["group_0"]["weights"]
            w = unpack_ct(t[p + ".weight_packed"], t[p + ".weight_scale"], t[p + ".weight_shape"], wa["num_bits"],
                          wa["group_size"], t.get(p + ".weight_zero_point"), t.get(p + ".weight_g_idx"))
        out[p + ".weight"] = w.astype(np.float32)
    for name, v in t.items():
        if not any(name == p + "." + s for p in prefixes for s in suffixes):
            out[name] = v
    return out


@pytest.fixture
def unpackers():
    return types.SimpleNamespace(gptq=unpack_gptq_v1, awq=unpack_awq, ct=unpack_ct, checkpoint=dequantize_checkpoint)


@pytest.fixture(scope="session")
def smollm2_gguf_model(smollm2_gguf_path):
    """transformers' dequantised fp32 model of the SmolLM2 GGUF (loaded once)."""
    from gfx906_llm.quant.tools.hf_export import load_gguf_model

    return load_gguf_model(smollm2_gguf_path)


@pytest.fixture(scope="session")
def smollm2_fp16_dir(smollm2_gguf_path, smollm2_gguf_model, tmp_path_factory):
    """The SmolLM2 fp16 Hugging Face folder exported from the GGUF (made once per session)."""
    from gfx906_llm.quant.tools.hf_export import export_gguf_to_hf

    out = str(tmp_path_factory.mktemp("smollm2_fp16"))
    return export_gguf_to_hf(smollm2_gguf_path, out, model=smollm2_gguf_model)
