"""Name-based weight loading shared by every model.

Checkpoint names are Hugging Face's (``model.layers.0.self_attn.q_proj.weight``); a model's
``packed_modules_mapping`` folds q/k/v and gate/up into their merged layers. A tensor may be a
torch tensor or a lazy object with ``materialize(param) -> torch.Tensor | object`` (the GGUF
loader's, which hands raw quantised blocks to parameters that keep them, and dequantises for
the rest).
"""

from __future__ import annotations

import logging
from typing import Iterable

from torch import nn

from gfx906_llm.layers.linear import LinearBase, default_weight_loader

logger = logging.getLogger(__name__)


def load_weights_by_name(model: nn.Module, weights: Iterable[tuple[str, object]],
                         packed_modules_mapping: dict[str, tuple[str, int]],
                         skip_suffixes: tuple[str, ...] = ()) -> set[str]:
    """Load ``(name, tensor)`` pairs into ``model``'s parameters.

    Returns:
        The names of the parameters that were loaded.

    Raises:
        ValueError: a parameter of the model got no tensor (names the first few), or a shape
            mismatch (names the tensor).
    """
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    loaded: set[str] = set()
    shards_seen: dict[str, set[int]] = {}
    unexpected: list[str] = []
    for name, tensor in weights:
        if name.endswith(skip_suffixes):
            continue
        module_path, _, attr = name.rpartition(".")
        parent, _, leaf = module_path.rpartition(".")
        shard_id = None
        if leaf in packed_modules_mapping:
            merged, shard_id = packed_modules_mapping[leaf]
            module_path = f"{parent}.{merged}" if parent else merged
        pname = f"{module_path}.{attr}"
        param = params.get(pname)
        if param is None:
            unexpected.append(name)
            continue
        if hasattr(tensor, "materialize"):
            tensor = tensor.materialize(param)
        module = modules.get(module_path)
        try:
            if isinstance(module, LinearBase):
                module.load_shard(param, tensor, shard_id)
            elif hasattr(param, "weight_loader"):
                param.weight_loader(param, tensor)
            else:
                default_weight_loader(param, tensor)
        except ValueError as e:
            raise ValueError(f"tensor {name!r}: {e}") from None
        if shard_id is None:
            loaded.add(pname)
        else:
            shards_seen.setdefault(pname, set()).add(shard_id)
            if len(shards_seen[pname]) == len(module.output_sizes):
                loaded.add(pname)
    if unexpected:
        logger.warning("ignored %d checkpoint tensors with no parameter, e.g. %s", len(unexpected), unexpected[:3])
    for mod in model.modules():
        method = getattr(mod, "quant_method", None)
        if method is not None:
            method.process_weights_after_loading(mod)
    missing = sorted(set(params) - loaded)
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} tensors the model needs, e.g. {missing[:5]}")
    return loaded


