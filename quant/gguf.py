"""GGUF weights kept quantised: ``GGUFConfig`` (``@register_quant("gguf")``), ``GGUFLinearMethod``,
the ``GGUFWeight`` hand-over type, ``embedding_lookup`` and the block formats' constants.

Formats: llama.cpp ``ggml/src/ggml-common.h`` / ``ggml-quants.c`` and gguf-py ``gguf/quants.py``;
the constants below are vendored from gguf-py ``gguf/constants.py`` (``GGMLQuantizationType``,
``GGML_QUANT_SIZES``) so that nothing here needs the ``gguf`` package (absent on GPU machines).

How a linear layer's weights live:
    * ``create_weights`` registers one parameter ``weight`` (uint8, initially empty) with
      ``gguf_weight = True`` and a ``weight_loader``; the GGUF loader calls
      ``weight.weight_loader(weight, GGUFWeight(...), shard_id)`` once per GGUF tensor. A merged
      layer (q/k/v, gate/up) gets one GGUF tensor per shard, each with its own qtype (Q4_K_M files
      mix Q4_K and Q6_K). The raw bytes of all shards are appended to ``weight`` (flat uint8).
    * ``process_weights_after_loading``: on a GPU with Triton kernels, runs of adjacent shards of
      one type are merged (``merge_shard_runs``: one launch for q+k, gate+up), then every shard
      is repacked once into the kernel layout (``gguf_torch.pack_planes``: same bytes per weight, aligned
      planes) and ``weight`` becomes that flat buffer; on the CPU the raw GGUF bytes stay.
    * ``apply``: per shard, into its column slice of the output: CPU -> ``gguf_torch.dequantize``
      (fp32) + matmul; GPU -> GEMV (M <= ``gemv_max_m``; Q4_0/Q4_K/Q6_K/Q8_0 as int8 dot
      products with q8_1 activations quantised once per call, as llama.cpp's MMVQ) or fused
      dequantise+GEMM / dequantise + BLAS (Triton).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gfx906_llm.quant.base import QuantConfig, QuantMethod, register_quant

QK_K = 256


class QT(enum.IntEnum):
    """GGML tensor types (the values of gguf-py ``GGMLQuantizationType``)."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    IQ4_NL = 20
    IQ4_XS = 23
    BF16 = 30


#: type -> (elements per block, bytes per block), gguf-py ``GGML_QUANT_SIZES``
GGML_QUANT_SIZES: dict[int, tuple[int, int]] = {
    QT.F32: (1, 4),
    QT.F16: (1, 2),
    QT.BF16: (1, 2),
    QT.Q4_0: (32, 2 + 16),
    QT.Q4_1: (32, 2 + 2 + 16),
    QT.Q5_0: (32, 2 + 4 + 16),
    QT.Q5_1: (32, 2 + 2 + 4 + 16),
    QT.Q8_0: (32, 2 + 32),
    QT.Q2_K: (256, 2 + 2 + QK_K // 16 + QK_K // 4),
    QT.Q3_K: (256, 2 + QK_K // 4 + QK_K // 8 + 12),
    QT.Q4_K: (256, 2 + 2 + QK_K // 2 + 12),
    QT.Q5_K: (256, 2 + 2 + QK_K // 2 + QK_K // 8 + 12),
    QT.Q6_K: (256, 2 + QK_K // 2 + QK_K // 4 + QK_K // 16),
    QT.IQ4_NL: (32, 2 + 16),
    QT.IQ4_XS: (256, 2 + 2 + QK_K // 2 + QK_K // 64),
}


def row_bytes(qtype: int, k: int) -> int:
    """Bytes of one GGUF row of ``k`` elements; ValueError if ``k`` is not whole blocks."""
    if int(qtype) not in GGML_QUANT_SIZES:
        raise ValueError(f"GGML type {qtype!r} is not supported; supported: {sorted(GGML_QUANT_SIZES)}")
    elems, nbytes = GGML_QUANT_SIZES[int(qtype)]
    if k % elems:
        raise ValueError(f"row of {k} elements is not whole {QT(int(qtype)).name} blocks of {elems}")
    return k // elems * nbytes


@dataclass
class GGUFWeight:
    """One GGUF tensor as the loader hands it over.

    Attributes:
        data: ``numpy.uint8 [rows, row_bytes]`` raw GGUF bytes (``GGUFReader`` ``tensor.data``;
            float tensors may come as their float array and are viewed as bytes).
        qtype: ``gguf.GGMLQuantizationType`` (or its int value).
        shape: logical ``(out_features, in_features)`` (``reversed(tensor.shape)``).
    """

    data: np.ndarray
    qtype: Any
    shape: tuple[int, int]

    def raw(self) -> torch.Tensor:
        """``uint8 [out, row_bytes]`` CPU tensor over the bytes (ValueError on a size mismatch)."""
        out, k = int(self.shape[0]), int(self.shape[1])
        rb = row_bytes(self.qtype, k)
        arr = np.ascontiguousarray(self.data).view(np.uint8).reshape(-1)
        if arr.size != out * rb:
            raise ValueError(f"GGUF tensor {QT(int(self.qtype)).name} {self.shape}: expected "
                             f"{out * rb} bytes, got {arr.size}")
        return torch.from_numpy(arr.copy()).view(out, rb)


_SHARD_NAMES = {"q": 0, "k": 1, "v": 2}


def _shard_index(shard_id: Any, n_shards: int) -> int:
    if shard_id is None:
        idx = 0
    elif isinstance(shard_id, str) and shard_id in _SHARD_NAMES:
        idx = _SHARD_NAMES[shard_id]
    elif isinstance(shard_id, int):
        idx = shard_id
    else:
        raise ValueError(f"shard_id {shard_id!r} is not None, an int or one of 'q', 'k', 'v'")
    if not 0 <= idx < n_shards:
        raise ValueError(f"shard_id {shard_id!r} -> index {idx} out of range [0, {n_shards})")
    return idx


@dataclass
class _Shard:
    qtype: int
    n: int
    k: int
    offset: int  # byte offset of the raw rows in layer.weight (CPU layout)
    nbytes: int
    planes: Any = None  # GGUFPlanes once repacked for the GPU kernels


def merge_shard_runs(shards: list[_Shard]) -> list[_Shard]:
    """Adjacent output shards of one block type and input size whose raw rows are contiguous
    become one shard (their rows stacked: still a valid GGUF tensor), so one kernel launch covers
    them: q and k of a Q4_K_M attention (v is often Q6_K), gate and up."""
    out = [shards[0]]
    for s in shards[1:]:
        p = out[-1]
        if s.qtype == p.qtype and s.k == p.k and p.offset + p.nbytes == s.offset:
            out[-1] = _Shard(p.qtype, p.n + s.n, p.k, p.offset, p.nbytes + s.nbytes)
        else:
            out.append(s)
    return out


class GGUFLinearMethod(QuantMethod):
    """Linear layer over GGUF-quantised shards (see the module docstring)."""

    def create_weights(self, layer: nn.Module, input_size: int, output_sizes: list[int],
                       params_dtype: torch.dtype) -> None:
        weight = nn.Parameter(torch.empty(0, dtype=torch.uint8), requires_grad=False)
        weight.gguf_weight = True
        weight.output_dim = None
        weight.packed_factor = 1
        weight.weight_loader = self.weight_loader
        layer.register_parameter("weight", weight)
        layer.gguf_input_size = int(input_size)
        layer.gguf_output_sizes = [int(s) for s in output_sizes]
        layer.gguf_params_dtype = params_dtype
        layer.gguf_shards = [None] * len(output_sizes)
        weight.gguf_layer_shards = layer.gguf_shards
        weight.gguf_layer_sizes = (layer.gguf_input_size, layer.gguf_output_sizes)

    @staticmethod
    def weight_loader(param: nn.Parameter, loaded: GGUFWeight, shard_id: Any = None) -> None:
        """Append one GGUF tensor's raw bytes to ``param`` as shard ``shard_id``.

        Raises:
            ValueError: ``loaded`` is not a GGUFWeight, its shape does not match the shard, an
                unsupported qtype, or a bad ``shard_id``.
        """
        if not isinstance(loaded, GGUFWeight):
            raise ValueError(f"GGUF linear weights take a GGUFWeight, got {type(loaded).__name__}")
        shards = param.gguf_layer_shards
        k, sizes = param.gguf_layer_sizes
        idx = _shard_index(shard_id, len(shards))
        n = sizes[idx]
        if tuple(int(s) for s in loaded.shape) != (n, k):
            raise ValueError(f"shard {shard_id!r}: GGUF tensor shape {tuple(loaded.shape)} != expected {(n, k)}")
        raw = loaded.raw().reshape(-1).to(param.device)
        offset = param.data.numel()
        param.data = torch.cat([param.data, raw])
        shards[idx] = _Shard(int(loaded.qtype), n, k, offset, raw.numel())

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        missing = [i for i, s in enumerate(layer.gguf_shards) if s is None]
        if missing:
            raise ValueError(f"GGUF layer has unloaded shards {missing} of {len(layer.gguf_shards)}")
        param = layer.weight
        if not _use_kernels(param.device):
            return
        from gfx906_llm.quant.gguf_torch import pack_planes

        layer.gguf_shards[:] = merge_shard_runs(layer.gguf_shards)  # in place: the parameter shares the list
        packed = [pack_planes(self._raw(param, s), s.qtype, s.k) for s in layer.gguf_shards]
        total = sum(p.nbytes for p in packed)
        flat = torch.empty(total, dtype=torch.uint8, device=param.device)
        off = 0
        for s, p in zip(layer.gguf_shards, packed):
            flat[off:off + p.nbytes].copy_(p.buffer)
            p.rebase(flat[off:off + p.nbytes])
            s.planes, s.offset, s.nbytes = p, off, p.nbytes
            off += p.nbytes
        param.data = flat

    @staticmethod
    def _raw(param: torch.Tensor, s: _Shard) -> torch.Tensor:
        return param.data[s.offset:s.offset + s.nbytes].view(s.n, -1)

    def dequantized_shard(self, layer: nn.Module, idx: int) -> torch.Tensor:
        """fp32 ``[n, k]`` weight of shard ``idx`` (for checks and the CPU path)."""
        from gfx906_llm.quant.gguf_torch import dequantize

        s = layer.gguf_shards[idx]
        if s.planes is not None:
            from gfx906_llm.kernels.gfx906.gguf_dequant import gguf_dequantize

            return gguf_dequantize(s.planes)
        return dequantize(self._raw(layer.weight, s), s.qtype)

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        k = layer.gguf_input_size
        if x.shape[-1] != k:
            raise ValueError(f"input feature size {x.shape[-1]} != layer input size {k}")
        x2 = x.reshape(-1, k)  # [M, K]
        if x2.stride(1) != 1:
            x2 = x2.contiguous()
        m = x2.shape[0]
        n_total = sum(layer.gguf_output_sizes)
        out = torch.empty(m, n_total, dtype=x.dtype, device=x.device)  # [M, N]
        col = 0
        xq = None  # q8_1 activations, quantised once and shared by the shards (integer-dot GEMV)
        for i, s in enumerate(layer.gguf_shards):
            b = None if bias is None else bias[col:col + s.n]
            o = out[:, col:col + s.n]
            if s.planes is None:
                w = self.dequantized_shard(layer, i).to(x.dtype)
                o.copy_(torch.nn.functional.linear(x2, w, b))
            elif s.planes.w is not None:
                o.copy_(torch.nn.functional.linear(x2, s.planes.w.to(x.dtype), b))
            else:
                from gfx906_llm.kernels.gfx906 import gguf_gemm, gguf_gemv

                if m <= gguf_gemv.gemv_max_m():
                    if xq is None and gguf_gemv.uses_mmvq(s.planes):
                        from gfx906_llm.kernels.gfx906.gguf_q8_1 import quantize_q8_1

                        xq = quantize_q8_1(x2)
                    gguf_gemv.gguf_gemv(x2, s.planes, o, b, xq=xq)
                else:
                    gguf_gemm.gguf_gemm(x2, s.planes, o, b)
            col += s.n
        return out.reshape(*x.shape[:-1], n_total)

    def embedding(self, layer: nn.Module, token_ids: torch.Tensor) -> torch.Tensor:
        """Rows ``token_ids`` of a single-shard layer's weight (a tied ``token_embd``):
        ``[T, k]`` fp32, dequantising only those rows."""
        s = layer.gguf_shards[0]
        if s.planes is None:
            return embedding_lookup(self._raw(layer.weight, s), s.qtype, token_ids)
        if s.planes.w is not None:
            return s.planes.w[token_ids.long()].float()
        from gfx906_llm.kernels.gfx906.gguf_dequant import gguf_dequantize

        return gguf_dequantize(s.planes, rows=token_ids, check_rows=False)  # ids checked at add_request


def embedding_lookup(raw: Any, qtype: Any, token_ids: torch.Tensor) -> torch.Tensor:
    """Dequantise only the rows ``token_ids`` of a GGUF ``token_embd``.

    Args:
        raw: ``uint8 [vocab, row_bytes]`` raw GGUF bytes (torch tensor on any device) or a
            ``GGUFWeight``.
        qtype: GGML type id of ``raw`` (ignored for a GGUFWeight, which carries its own).
        token_ids: ``[T]`` integer tensor.

    Returns:
        ``fp32 [T, d]`` on ``raw``'s device.
    """
    from gfx906_llm.quant.gguf_torch import dequantize

    if isinstance(raw, GGUFWeight):
        raw, qtype = raw.raw(), raw.qtype
    ids = token_ids.to(device=raw.device, dtype=torch.long).reshape(-1)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= raw.shape[0]):
        raise ValueError(f"token ids must lie in [0, {raw.shape[0]}), got [{int(ids.min())}, {int(ids.max())}]")
    return dequantize(raw[ids], int(qtype))


def _use_kernels(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    from gfx906_llm.platform import detect_platform, use_triton

    return use_triton(detect_platform())


@register_quant("gguf")
class GGUFConfig(QuantConfig):
    """Keep GGUF tensors quantised; every linear layer, the token embedding and the output head
    get ``GGUFLinearMethod``."""

    quantizes_embeddings = True

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> "GGUFConfig":
        if cfg and cfg.get("quant_method", "gguf") != "gguf":
            raise ValueError(f"GGUFConfig got quant_method={cfg.get('quant_method')!r}, expected 'gguf'")
        return cls()

    def get_method(self, layer: nn.Module, prefix: str) -> QuantMethod | None:
        return GGUFLinearMethod()
