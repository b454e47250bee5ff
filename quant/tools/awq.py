"""AWQ: Lin, Tang, Tang, Yang, Dang, Gan, Han 2023, "AWQ: Activation-aware Weight Quantization for
LLM Compression and Acceleration" (arXiv:2306.00978), as AutoAWQ's ``AwqQuantizer`` runs it on
llama-style decoder layers:

* Groups of linears that share an input, each with the op producing that input (``prev_op``) and
  the module whose output is compared (``module2inspect``):
  ``input_layernorm -> q/k/v`` (self_attn), ``v_proj -> o_proj`` (only when their weight shapes
  match, i.e. no GQA), ``post_attention_layernorm`` (Gemma: ``pre_feedforward_layernorm``)
  ``-> gate/up`` (mlp), ``up_proj -> down_proj`` (down_proj).
* Scale search: ``s = mean_t |x_t|^alpha`` (per input channel, normalised by
  ``sqrt(max s * min s)``) for alpha in ``{0, 1/n_grid, ..., (n_grid-1)/n_grid}``; each candidate
  quantises ``W * s`` group-wise, divides by ``s`` again, runs ``module2inspect`` on calibration
  inputs and keeps the alpha with the smallest output MSE. alpha = 0 is plain RTN, so the chosen
  scale never does worse than RTN on the search data.
* The scale is folded into ``prev_op`` (RMSNorm weight, or the rows of v_proj / up_proj) and into
  the linears' input columns: an exact re-parametrisation before quantisation.
* Clipping search (optional): per output row and group, the clip ``max|w| * (1 - i/20)`` for
  i < 10 that minimises that group's output error ``E_t[(x_g (w_g - q(clip(w_g))))^2]``,
  computed from the group's input Gram matrix. Skipped for q/k (as AutoAWQ does).
* Final codes: asymmetric min/max round-to-nearest (AutoAWQ ``pseudo_quantize_tensor``).

Layer inputs come from the previous layer's full-precision output, as in AutoAWQ.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch import nn

from gfx906_llm.quant.tools.calibration import capture_layer_inputs, get_decoder_layers, run_layer
from gfx906_llm.quant.tools.rtn import QuantizedWeight, check_settings, quantize_rtn


def _fake_quant(w: torch.Tensor, bits: int, group_size: int, sym: bool) -> torch.Tensor:
    return quantize_rtn(w, bits, group_size, sym, include_zero=False).dequantize()


def _take(obj: Any, full: int, n: int) -> Any:
    """Slice every tensor whose first dim is the calibration batch ``full`` down to ``n``."""
    if isinstance(obj, torch.Tensor):
        return obj[:n] if obj.dim() > 0 and obj.shape[0] == full and full != 1 else obj
    if isinstance(obj, tuple):
        return tuple(_take(o, full, n) for o in obj)
    if isinstance(obj, list):
        return [_take(o, full, n) for o in obj]
    if isinstance(obj, dict):
        return {k: _take(v, full, n) for k, v in obj.items()}
    return obj


def _fold_into_norm(norm: nn.Module, s: torch.Tensor) -> None:
    """``norm.weight`` such that the norm's output is divided by ``s`` (Gemma norms scale by 1+w)."""
    if "gemma" in type(norm).__name__.lower():
        norm.weight.data = ((1.0 + norm.weight.data.float()) / s - 1.0).to(norm.weight.dtype)
    else:
        norm.weight.data = (norm.weight.data.float() / s).to(norm.weight.dtype)


def layer_groups(layer: nn.Module) -> list[dict[str, Any]]:
    """AWQ groups of a llama-style decoder layer (see the module docstring).

    Raises:
        ValueError: the layer lacks self_attn.{q,k,v,o}_proj or mlp.{gate,up,down}_proj.
    """
    try:
        attn, mlp = layer.self_attn, layer.mlp
        q, k, v, o = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj
        gate, up, down = mlp.gate_proj, mlp.up_proj, mlp.down_proj
    except AttributeError as e:
        raise ValueError(f"AWQ supports llama-style layers (self_attn.q/k/v/o_proj, mlp.gate/up/down_proj): {e}")
    ffn_norm = getattr(layer, "pre_feedforward_layernorm", None) or layer.post_attention_layernorm
    groups = [dict(prev=layer.input_layernorm, kind="norm", linears=[q, k, v], inspect=attn, name="qkv")]
    if v.weight.shape == o.weight.shape:
        groups.append(dict(prev=v, kind="linear", linears=[o], inspect=o, name="o"))
    groups.append(dict(prev=ffn_norm, kind="norm", linears=[gate, up], inspect=mlp, name="gate_up"))
    groups.append(dict(prev=up, kind="linear", linears=[down], inspect=down, name="down"))
    return groups


def search_scale(
    x: torch.Tensor,
    x_search: torch.Tensor,
    linears: list[nn.Linear],
    inspect: Callable[[torch.Tensor], torch.Tensor],
    bits: int,
    group_size: int,
    sym: bool,
    n_grid: int = 20,
    skip_first: int = 0,
) -> tuple[torch.Tensor, list[float]]:
    """Grid search of AWQ's per-channel scale for ``linears`` sharing the input ``x``.

    Args:
        x: inputs ``[S, L, K]`` (or ``[T, K]``) used for the activation statistic ``mean |x|``.
        x_search: inputs ``[S', L, K]`` (or ``[T', K]``) fed to ``inspect`` to measure the MSE.
        inspect: the module whose output is compared (uses the linears' current weights).
        skip_first: positions at the start of each ``[S, L, K]`` sample left out of the statistic
            and of the MSE (the attention sink; see ``awq_quantize_model``).
    Returns:
        (best scale ``[K]`` float32, the MSE of every alpha ``i / n_grid`` in grid order).
    """
    def body(t: torch.Tensor) -> torch.Tensor:
        return t[:, skip_first:] if t.dim() == 3 and t.shape[1] > skip_first else t

    x_mean = body(x).reshape(-1, x.shape[-1]).abs().float().mean(0)  # [K]
    originals = [lin.weight.data.clone() for lin in linears]
    fp_out = body(inspect(x_search).float())
    losses: list[float] = []
    best, best_s = float("inf"), torch.ones_like(x_mean)
    try:
        for i in range(n_grid):
            alpha = i / n_grid
            s = x_mean.pow(alpha).clamp(min=1e-4)
            s = s / (s.max() * s.min()).sqrt()
            for lin, w0 in zip(linears, originals):
                lin.weight.data = (_fake_quant(w0.float() * s, bits, group_size, sym) / s).to(w0.dtype)
            loss = float((body(inspect(x_search).float()) - fp_out).pow(2).mean())
            losses.append(loss)
            if loss < best:
                best, best_s = loss, s.clone()
    finally:
        for lin, w0 in zip(linears, originals):
            lin.weight.data = w0
    return best_s, losses


def search_clip(w: torch.Tensor, x: torch.Tensor, bits: int, group_size: int, sym: bool,
                n_grid: int = 20, max_shrink: float = 0.5) -> torch.Tensor:
    """Best clip ``[N, K]`` (absolute max per row and group, repeated over the group's columns)
    for weight ``w`` ``[N, K]`` with inputs ``x`` ``[..., K]``: per (row, group), the clip
    ``max|w| * (1 - i/n_grid)``, ``i < max_shrink * n_grid``, with the smallest output MSE
    ``d^T G d`` (``d`` the group's weight error, ``G = E[x_g x_g^T]``), AutoAWQ ``_search_best_clip``."""
    n, k = w.shape
    gs = k if group_size == -1 else group_size
    xt = x.reshape(-1, k).float()
    wf = w.float()
    best_max = torch.empty(n, k)
    for c0 in range(0, k, gs):
        c1 = min(c0 + gs, k)
        wg = wf[:, c0:c1]  # [N, g]
        gram = xt[:, c0:c1].T @ xt[:, c0:c1] / xt.shape[0]  # [g, g]
        org_max = wg.abs().amax(1, keepdim=True)  # [N, 1]
        best_err = torch.full((n, 1), float("inf"))
        best = org_max.clone()
        for i in range(int(max_shrink * n_grid)):
            max_val = org_max * (1 - i / n_grid)
            cur = torch.maximum(torch.minimum(wg, max_val), -max_val)
            d = wg - _fake_quant(cur, bits, -1, sym)  # [N, g]
            err = ((d @ gram) * d).sum(1, keepdim=True)  # [N, 1]
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = torch.where(better, max_val, best)
        best_max[:, c0:c1] = best
    return best_max


@torch.no_grad()
def awq_quantize_model(
    model: nn.Module,
    input_ids: torch.Tensor,
    bits: int = 4,
    group_size: int = 128,
    sym: bool = False,
    n_grid: int = 20,
    search_samples: int = 4,
    clip: bool = True,
    min_zero: int = 0,
    skip_first: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, QuantizedWeight]:
    """AWQ-quantise every linear of the decoder layers of a transformers llama-style causal LM.

    Args:
        model: float32 CPU model, modified in place (scales folded, weights fake-quantised).
        input_ids: int64 ``[S, L]`` calibration samples; the scale search runs the inspected
            modules on the first ``search_samples`` of them, statistics and clipping use all.
        skip_first: positions at the start of every sample (the attention sink, whose activations
            are orders of magnitude larger in a few channels) left out of ``mean |x|``, the search
            MSE and the clipping statistics, so they describe ordinary tokens (as in gptq.py).
    Returns:
        ``{"model.layers.0.self_attn.q_proj": QuantizedWeight, ...}``.
    """
    layers, prefix = get_decoder_layers(model)
    check_settings(bits, group_size)
    hidden, layer_kwargs = capture_layer_inputs(model, input_ids)
    full = hidden.shape[0]
    ns = max(1, min(search_samples, full))
    out: dict[str, QuantizedWeight] = {}
    for li, layer in enumerate(layers):
        t0 = time.perf_counter()
        names = {m: name for name, m in layer.named_modules() if isinstance(m, nn.Linear)}
        inputs: dict[nn.Module, torch.Tensor] = {}
        attn_kwargs: dict[str, Any] = {}

        def lin_hook(mod: nn.Module, args: tuple) -> None:
            inputs[mod] = args[0]

        def attn_hook(mod: nn.Module, args: tuple, kwargs: dict) -> None:
            attn_kwargs.update({k: v for k, v in kwargs.items() if k != "hidden_states"})

        groups = layer_groups(layer)
        handles = [m.register_forward_pre_hook(lin_hook) for m in names]
        handles.append(layer.self_attn.register_forward_pre_hook(attn_hook, with_kwargs=True))
        try:
            next_hidden = run_layer(layer, hidden, layer_kwargs[li])  # fp output feeds layer li+1
        finally:
            for h in handles:
                h.remove()
        akw = _take(attn_kwargs, full, ns)

        def run_attn(xs: torch.Tensor) -> torch.Tensor:
            return layer.self_attn(hidden_states=xs, **akw)[0]

        scales = []
        for g in groups:
            x = inputs[g["linears"][0]]  # [S, L, K]
            inspect = run_attn if g["name"] == "qkv" else g["inspect"]
            s, _ = search_scale(x, x[:ns], g["linears"], inspect, bits, group_size, sym, n_grid, skip_first)
            scales.append(s)
        for g, s in zip(groups, scales):  # fold: prev_op outputs / s, linears' inputs * s
            if g["kind"] == "norm":
                _fold_into_norm(g["prev"], s)
            else:
                prev = g["prev"]
                prev.weight.data = prev.weight.data / s[:, None]
                if prev.bias is not None:
                    prev.bias.data = prev.bias.data / s
            for lin in g["linears"]:
                lin.weight.data = lin.weight.data * s
                inputs[lin] = inputs[lin] / s
        for mod, name in names.items():
            w = mod.weight.data
            if clip and not any(t in name for t in ("q_proj", "k_proj")):
                xin = inputs[mod]
                xin = xin[:, skip_first:] if xin.dim() == 3 and xin.shape[1] > skip_first else xin
                mv = search_clip(w, xin, bits, group_size, sym).to(w.dtype)  # [N, K]
                w = torch.maximum(torch.minimum(w, mv), -mv)
            qw = quantize_rtn(w, bits, group_size, sym, include_zero=False, min_zero=min_zero, bias=mod.bias)
            mod.weight.data = qw.dequantize().to(mod.weight.dtype)
            out[f"{prefix}.{li}.{name}"] = qw
        hidden = next_hidden
        if log:
            log(f"awq layer {li}: {len(names)} linears in {time.perf_counter() - t0:.2f}s")
    return out
