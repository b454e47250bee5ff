"""Calibration data and layer-by-layer activation capture for the quantisation tools.

The calibration text ships with the project (``calibration_data.txt``, about 11 KB of varied
English prose, dialogue, recipes, Python/C/JS/SQL code and shell output, written for the
project); nothing is downloaded. Samples are fixed-length windows over its tokens, spread evenly
from start to end (windows overlap when the text is shorter than ``num_samples * seq_len``).

The capture works on any transformers decoder whose layers sit in one ``nn.ModuleList`` of
``config.num_hidden_layers`` modules called as ``layer(hidden_states, **kwargs)``: each layer's
forward is swapped for a recorder that keeps its kwargs (masks, position embeddings, so models
with per-layer sliding windows get theirs) and passes the hidden states through, and the last
one stops the forward before the final norm and lm_head run.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import torch
from torch import nn


CALIBRATION_TEXTS = ("default", "extended")


def load_calibration_text(name: str = "default") -> str:
    """The project's calibration text: ``"default"`` (``calibration_data.txt``, about 11 KB, 2,808
    SmolLM2 tokens) or ``"extended"`` (that text followed by ``calibration_selfgen.txt``, 158 KB
    written by SmolLM2-135M-Instruct itself, see ``selfgen.py``; 36,300 tokens in all).

    Raises:
        ValueError: unknown name.
    """
    if name not in CALIBRATION_TEXTS:
        raise ValueError(f"calibration text {name!r} unknown; accepted: {CALIBRATION_TEXTS}")
    files = resources.files("gfx906_llm.quant.tools")
    text = files.joinpath("calibration_data.txt").read_text("utf-8")
    if name == "extended":
        text = text.rstrip("\n") + "\n\n" + files.joinpath("calibration_selfgen.txt").read_text("utf-8")
    return text


def calibration_samples(tokenizer: Any, num_samples: int = 32, seq_len: int = 256, text: str | None = None) -> torch.Tensor:
    """int64 ``[num_samples, seq_len]`` windows of ``tokenizer(text)`` (default: the shipped text).

    Deterministic: window starts are spread evenly over the tokens. A BOS token, when the
    tokenizer defines one, starts every window.

    Raises:
        ValueError: num_samples < 1 or seq_len < 8.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples={num_samples} must be >= 1")
    if seq_len < 8:
        raise ValueError(f"seq_len={seq_len} must be >= 8")
    text = load_calibration_text() if text is None else text
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    body = seq_len - (1 if bos is not None else 0)
    while len(ids) < body + 1:
        ids = ids + ids
    ids_t = torch.tensor(ids, dtype=torch.long)
    last = len(ids) - body
    starts = torch.linspace(0, last, num_samples).round().long().tolist()
    rows = [ids_t[s : s + body] for s in starts]
    out = torch.stack(rows)
    if bos is not None:
        out = torch.cat([torch.full((num_samples, 1), bos, dtype=torch.long), out], dim=1)
    return out


def get_decoder_layers(model: nn.Module) -> tuple[nn.ModuleList, str]:
    """(the decoder layers, their state-dict prefix, e.g. ``"model.layers"``).

    Raises:
        ValueError: no ``nn.ModuleList`` of ``config.num_hidden_layers`` modules in the model.
    """
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if n is None and hasattr(model, "config"):
        n = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n and n:
            return mod, name
    raise ValueError(f"cannot find the decoder layers (ModuleList of {n}) in {type(model).__name__}")


class _StopForward(Exception):
    pass


@torch.no_grad()
def capture_layer_inputs(model: nn.Module, input_ids: torch.Tensor) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Run the embedding part of ``model`` on ``input_ids`` ``[S, L]``.

    Returns:
        (hidden states entering layer 0 ``[S, L, D]`` in the model dtype, the kwargs each layer
        receives: a list of ``num_hidden_layers`` dicts).
    """
    layers, _ = get_decoder_layers(model)
    recorded: list[dict[str, Any]] = []
    first: list[torch.Tensor] = []
    saved = [layer.forward for layer in layers]

    def make_recorder(i: int):
        def recorder(hidden_states, *args, **kwargs):
            if args:
                raise RuntimeError("decoder layer called with positional arguments beyond hidden_states")
            if i == 0:
                first.append(hidden_states)
            kwargs = {k: v for k, v in kwargs.items() if k not in ("past_key_values", "past_key_value", "use_cache")}
            recorded.append(kwargs)
            if i == len(layers) - 1:
                raise _StopForward
            return hidden_states

        return recorder

    for i, layer in enumerate(layers):
        layer.forward = make_recorder(i)
    try:
        model(input_ids=input_ids, use_cache=False)
    except _StopForward:
        pass
    finally:
        for layer, fwd in zip(layers, saved):
            layer.forward = fwd
    assert len(recorded) == len(layers) and first, "decoder layers were not all reached"
    return first[0], recorded


def run_layer(layer: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """``layer(hidden, **kwargs)`` -> hidden states ``[S, L, D]`` (first element of a tuple output)."""
    out = layer(hidden, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def load_model_for_calibration(model_dir: str) -> tuple[nn.Module, Any]:
    """(transformers causal LM in float32 on the CPU, eval mode; its tokenizer) from an HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    return model, tok
