"""Linear layers whose weights are created and applied by a QuantMethod (quant/base.py).

Names follow vLLM (QKVParallelLinear, MergedColumnParallelLinear, RowParallelLinear) so that
tensor parallelism can slot in later; today every layer holds the whole matrix.
"""

from __future__ import annotations

import torch
from torch import nn

from gfx906_llm.quant.base import QuantConfig, UnquantizedLinearMethod


def default_weight_loader(param: nn.Parameter, loaded: torch.Tensor, shard_id: int | None = None,
                          shard_offsets: list[int] | None = None) -> None:
    """Copy ``loaded`` into ``param``, or into shard ``shard_id``'s slice along ``param.output_dim``.

    Raises:
        ValueError: the shapes do not match (names both).
    """
    target = param.data
    if shard_id is not None and getattr(param, "output_dim", None) is not None:
        packed = getattr(param, "packed_factor", 1)
        start = shard_offsets[shard_id] // packed
        size = (shard_offsets[shard_id + 1] - shard_offsets[shard_id]) // packed
        target = target.narrow(param.output_dim, start, size)
    if tuple(target.shape) != tuple(loaded.shape):
        raise ValueError(f"shape mismatch: checkpoint tensor {tuple(loaded.shape)} vs parameter slice {tuple(target.shape)}")
    target.copy_(loaded.to(target.dtype) if loaded.dtype != target.dtype and target.is_floating_point() else loaded)


class LinearBase(nn.Module):
    """``y = x @ W.T + b`` for ``W`` of logical shape ``[sum(output_sizes), input_size]``.

    Args:
        input_size: in features.
        output_sizes: out features of each shard (one entry unless merged, e.g. q/k/v).
        bias: whether the layer has a bias (kept unquantised, in ``params_dtype``).
        quant_config: the checkpoint's QuantConfig, or None for plain weights.
        prefix: the layer's parameter path (``model.layers.0.self_attn.qkv_proj``), given to the
            QuantConfig to decide per layer.
    """

    def __init__(self, input_size: int, output_sizes: list[int], bias: bool = False,
                 quant_config: QuantConfig | None = None, prefix: str = "",
                 params_dtype: torch.dtype | None = None):
        super().__init__()
        params_dtype = params_dtype or torch.get_default_dtype()
        self.input_size = input_size
        self.output_sizes = list(output_sizes)
        self.output_size = sum(output_sizes)
        self.shard_offsets = [0]
        for s in output_sizes:
            self.shard_offsets.append(self.shard_offsets[-1] + s)
        self.prefix = prefix
        method = quant_config.get_method(self, prefix) if quant_config is not None else None
        self.quant_method = method or UnquantizedLinearMethod()
        self.quant_method.create_weights(self, input_size, self.output_sizes, params_dtype)
        if bias:
            b = nn.Parameter(torch.zeros(self.output_size, dtype=params_dtype), requires_grad=False)
            b.output_dim = 0
            b.packed_factor = 1
            self.register_parameter("bias", b)
        else:
            self.bias = None

    def load_shard(self, param: nn.Parameter, loaded, shard_id: int | None) -> None:
        loader = getattr(param, "weight_loader", None)
        if loader is not None:
            loader(param, loaded, shard_id)
        else:
            default_weight_loader(param, loaded, shard_id, self.shard_offsets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_method.apply(self, x, self.bias)

    def forward_deferred(self, x: torch.Tensor):
        """``forward`` for ``x [M, K]`` that may return a ``gfx906_llm.layers.splitk.SplitKPartials``
        (the split-K partials of the W4A16 GEMV, left for the consumer to sum) instead of the
        tensor; methods without split-K partials return the tensor."""
        deferred = getattr(self.quant_method, "apply_deferred", None)
        if deferred is None:
            return self.forward(x)
        return deferred(self, x, self.bias)

    def extra_repr(self) -> str:
        return f"in={self.input_size}, out={self.output_sizes}, method={type(self.quant_method).__name__}"


class ReplicatedLinear(LinearBase):
    def __init__(self, input_size: int, output_size: int, **kw):
        super().__init__(input_size, [output_size], **kw)


class RowParallelLinear(ReplicatedLinear):
    """Output projection (o_proj, down_proj): input split across ranks under tensor parallelism."""


class MergedColumnParallelLinear(LinearBase):
    """Several projections of the same input in one matmul (gate_proj + up_proj)."""


class QKVParallelLinear(LinearBase):
    """q, k and v projections in one matmul: shards of ``num_heads * head_dim``,
    ``num_kv_heads * head_dim`` and ``num_kv_heads * head_dim`` outputs."""

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int, num_kv_heads: int, **kw):
        super().__init__(hidden_size, [num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim], **kw)
