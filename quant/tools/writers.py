"""Write quantised checkpoints in the formats other engines read.

Formats (tensor names are the linear's state-dict prefix plus the suffix shown; K = in_features,
N = out_features, G = K / group_size groups, codes are ``bits`` wide, ``pf = 32 // bits``):

GPTQ v1 (AutoGPTQ ``QuantLinear.pack``, GPTQModel ``checkpoint_format="gptq"``, vLLM ``gptq``):
    ``qweight`` int32 ``[K/pf, N]``: code of (k, n) in word ``[k // pf, n]`` at bit ``bits*(k % pf)``.
    ``qzeros``  int32 ``[G, N/pf]``: ``zero - 1`` of (g, n) in word ``[g, n // pf]`` at bit
    ``bits*(n % pf)`` (the v1 off-by-one; v2 stores ``zero``).
    ``scales``  fp16 ``[G, N]``;  ``g_idx`` int32 ``[K]``;  value = ``scales[g_idx[k], n] *
    (q - (qzeros_nibble + 1))``. ``quantize_config.json`` and config.json ``quantization_config``.
AWQ GEMM (AutoAWQ ``WQLinear_GEMM.from_linear``, vLLM ``awq``), 4 bits only:
    ``qweight`` int32 ``[K, N/8]``: nibble i of word ``[k, c]`` holds column ``8c + [0,2,4,6,1,3,5,7][i]``.
    ``qzeros``  int32 ``[G, N/8]``: zeros packed the same way (zero itself, no offset).
    ``scales``  fp16 ``[G, N]``; value = ``(q - zero) * scale``. No act-order.
compressed-tensors ``pack-quantized`` (compressed_tensors ``PackedQuantizationCompressor``,
llm-compressor W4A16, vLLM ``compressed-tensors`` WNA16):
    ``weight_packed`` int32 ``[N, K*bits/32]``: signed code ``q - 2**(bits-1)`` stored offset by
    ``2**(bits-1)``, element k of a row at global bit ``k*bits``; ``weight_scale`` ``[N, G]`` in the
    model dtype; ``weight_shape`` int64 ``[2]`` = (N, K); asymmetric: ``weight_zero_point`` int32
    ``[N*bits/32, G]`` (signed zeros packed along N). Act-order only as ``actorder="weight"``
    (static groups, no g_idx): compressed-tensors >= 0.12 removed ``actorder="group"`` and its
    ``weight_g_idx``.

Unquantised tensors (embeddings, norms, lm_head, biases) are written in the output dtype.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from gfx906_llm.quant.tools.rtn import QuantizedWeight

FORMATS = ("gptq", "awq", "compressed-tensors")
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AutoAWQ order_map: nibble i <- column AWQ_ORDER[i]
TOOL_NAME = "gfx906-llm"


def _pack_rows(codes: np.ndarray, bits: int, order: tuple[int, ...] | None = None) -> np.ndarray:
    """Pack uint codes ``[R, C]`` along C (C % (32/bits) == 0) -> int32 ``[R, C*bits/32]``;
    element ``order[i]`` of each run of ``32/bits`` goes to bit ``bits*i``."""
    pf = 32 // bits
    r, c = codes.shape
    assert c % pf == 0, (c, pf)
    v = codes.astype(np.uint32).reshape(r, c // pf, pf)
    if order is not None:
        v = v[:, :, list(order)]
    out = np.zeros((r, c // pf), dtype=np.uint32)
    for i in range(pf):
        out |= (v[:, :, i] & np.uint32(2**bits - 1)) << np.uint32(bits * i)
    return out.view(np.int32)


def _check(qw: QuantizedWeight, bits_ok: tuple[int, ...], fmt: str) -> tuple[int, int]:
    n, k = qw.shape
    if qw.bits not in bits_ok:
        raise ValueError(f"{fmt} format: bits={qw.bits} not supported; accepted: {bits_ok}")
    pf = 32 // qw.bits
    if k % pf or n % pf:
        raise ValueError(f"{fmt} format needs in/out features divisible by {pf}, got K={k} N={n}")
    return n, k


def pack_gptq(qw: QuantizedWeight) -> dict[str, torch.Tensor]:
    """GPTQ v1 tensors of one linear (suffix -> tensor); see the module docstring.

    Raises:
        ValueError: bits not in (2, 4, 8), K or N not divisible by 32/bits, or a zero point of 0
            with ``sym=False`` (v1 stores ``zero - 1``; quantise with ``min_zero=1``).
    """
    _check(qw, (2, 4, 8), "gptq")
    if int(qw.zeros.min()) < 1:
        raise ValueError("GPTQ v1 cannot store a zero point of 0; quantise with min_zero=1")
    qweight = _pack_rows(qw.qweight.numpy(), qw.bits).T  # [N, K/pf] packed along K -> [K/pf, N]
    qzeros = _pack_rows((qw.zeros.numpy().T - 1), qw.bits)  # [G, N/pf]
    return {
        "qweight": torch.from_numpy(np.ascontiguousarray(qweight)),
        "qzeros": torch.from_numpy(qzeros),
        "scales": qw.scales.T.contiguous().half(),
        "g_idx": qw.g_idx.to(torch.int32).contiguous(),
    }


def pack_awq(qw: QuantizedWeight) -> dict[str, torch.Tensor]:
    """AWQ GEMM tensors of one linear; see the module docstring.

    Raises:
        ValueError: bits != 4, N not divisible by 8, or act-order (AWQ has no g_idx).
    """
    _check(qw, (4,), "awq")
    if qw.desc_act:
        raise ValueError("AWQ format has no g_idx: quantise without act-order (desc_act)")
    q = qw.qweight.numpy().T  # [K, N]
    return {
        "qweight": torch.from_numpy(_pack_rows(np.ascontiguousarray(q), 4, AWQ_ORDER)),
        "qzeros": torch.from_numpy(_pack_rows(qw.zeros.numpy().T, 4, AWQ_ORDER)),
        "scales": qw.scales.T.contiguous().half(),
    }


def pack_compressed_tensors(qw: QuantizedWeight, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """compressed-tensors pack-quantized tensors of one linear (packed by the compressed-tensors
    package's ``pack_to_int32`` when installed, else by the same layout in numpy).

    Raises:
        ValueError: bits not in (2, 4, 8), shapes not divisible by 32/bits, or a non-trivial
            g_idx (quantise act-order with static groups for this format).
    """
    n, k = _check(qw, (2, 4, 8), "compressed-tensors")
    if qw.desc_act:
        raise ValueError("compressed-tensors removed actorder='group' (g_idx): use static groups (actorder='weight')")
    off = 2 ** (qw.bits - 1)
    signed = qw.qweight.to(torch.int16) - off  # [N, K] in [-off, off-1]
    zp_signed = qw.zeros.to(torch.int16) - off  # [N, G]
    try:
        from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

        packed = pack_to_int32(signed.to(torch.int8), qw.bits)
        zp_packed = pack_to_int32(zp_signed.to(torch.int8), qw.bits, packed_dim=0)
    except ImportError:
        packed = torch.from_numpy(_pack_rows(qw.qweight.numpy(), qw.bits))
        zp_packed = torch.from_numpy(np.ascontiguousarray(_pack_rows(qw.zeros.numpy().T, qw.bits).T))
    out = {
        "weight_packed": packed.contiguous(),
        "weight_scale": qw.scales.to(dtype).contiguous(),
        "weight_shape": torch.tensor([n, k], dtype=torch.int64),
    }
    if not qw.sym:
        out["weight_zero_point"] = zp_packed.contiguous()
    return out


def gptq_quantize_config(bits: int, group_size: int, desc_act: bool, sym: bool, damp_percent: float = 0.01,
                         true_sequential: bool = True, method: str = "gptq", static_groups: bool = False) -> dict[str, Any]:
    """``quantize_config.json`` as GPTQModel writes it (also config.json's quantization_config)."""
    return {
        "bits": bits,
        "group_size": group_size,
        "desc_act": desc_act,
        "sym": sym,
        "lm_head": False,
        "damp_percent": damp_percent,
        "true_sequential": true_sequential,
        "static_groups": static_groups,
        "quant_method": "gptq",
        "checkpoint_format": "gptq",
        "pack_dtype": "int32",
        "meta": {"quantizer": [f"{TOOL_NAME}:0.1.0"], "algorithm": method},
    }


def awq_quantization_config(bits: int, group_size: int, sym: bool) -> dict[str, Any]:
    """config.json ``quantization_config`` as transformers' AwqConfig / AutoAWQ write it. The GEMM
    layout always stores zeros, so ``zero_point`` is true (a symmetric code has zeros of 8)."""
    return {"quant_method": "awq", "bits": bits, "group_size": group_size, "zero_point": True,
            "version": "gemm", "modules_to_not_convert": None}


def ct_quantization_config(bits: int, group_size: int, sym: bool, desc_act: bool) -> dict[str, Any]:
    """config.json ``quantization_config`` as compressed-tensors' ``ModelCompressor.update_config``
    writes it for an llm-compressor W4A16 (``pack-quantized``) model."""
    weights: dict[str, Any] = {
        "num_bits": bits, "type": "int", "symmetric": sym,
        "group_size": None if group_size == -1 else group_size,
        "strategy": "channel" if group_size == -1 else "group",
        "dynamic": False, "actorder": "weight" if desc_act else None, "observer": "minmax",
    }
    try:
        import compressed_tensors

        version = compressed_tensors.__version__
    except ImportError:
        version = "0.12.0"
    return {
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None,
                                      "output_activations": None, "format": "pack-quantized"}},
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "ignore": ["lm_head"],
        "kv_cache_scheme": None,
        "global_compression_ratio": None,
        "quant_method": "compressed-tensors",
        "version": version,
        "sparsity_config": {},
        "transform_config": {},
    }


_COPY = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
         "merges.txt", "added_tokens.json", "generation_config.json", "chat_template.jinja", "chat_template.json")


def write_checkpoint(out_dir: str, src_dir: str, fmt: str, quantized: dict[str, QuantizedWeight],
                     other: dict[str, torch.Tensor], *, bits: int, group_size: int, sym: bool, desc_act: bool,
                     method: str, dtype: torch.dtype = torch.float16, static_groups: bool = False) -> None:
    """Write ``model.safetensors``, config.json (with ``quantization_config``), the format's own
    config file and the tokenizer files of ``src_dir`` into ``out_dir``.

    Args:
        quantized: ``{"model.layers.0.mlp.down_proj": QuantizedWeight}``.
        other: every other tensor of the state dict (embeddings, norms, ...), written in ``dtype``.
    Raises:
        ValueError: ``fmt`` not in FORMATS, or a weight the format cannot hold.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} not supported; accepted: {FORMATS}")
    tensors: dict[str, torch.Tensor] = {}
    for name, t in other.items():
        tensors[name] = t.detach().to(dtype).contiguous() if t.is_floating_point() else t.contiguous()
    for name, qw in quantized.items():
        if fmt == "gptq":
            packed = pack_gptq(qw)
        elif fmt == "awq":
            packed = pack_awq(qw)
        else:
            packed = pack_compressed_tensors(qw, dtype)
        for suffix, t in packed.items():
            tensors[f"{name}.{suffix}"] = t
        if qw.bias is not None:
            tensors[f"{name}.bias"] = qw.bias.to(dtype)
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})

    with open(os.path.join(src_dir, "config.json")) as f:
        config = json.load(f)
    if fmt == "gptq":
        qcfg = gptq_quantize_config(bits, group_size, desc_act, sym, method=method, static_groups=static_groups)
        with open(os.path.join(out_dir, "quantize_config.json"), "w") as f:
            json.dump(qcfg, f, indent=2)
    elif fmt == "awq":
        qcfg = awq_quantization_config(bits, group_size, sym)
        with open(os.path.join(out_dir, "quant_config.json"), "w") as f:  # AutoAWQ's own file
            json.dump({"zero_point": True, "q_group_size": group_size, "w_bit": bits, "version": "GEMM"}, f, indent=2)
    else:
        qcfg = ct_quantization_config(bits, group_size, sym, desc_act)
    config["quantization_config"] = qcfg
    name = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}[dtype]
    config["dtype"] = name
    config["torch_dtype"] = name
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    for fname in _COPY:
        src = os.path.join(src_dir, fname)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(out_dir, fname))
