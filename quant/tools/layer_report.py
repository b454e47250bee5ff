"""Per-layer diagnostic of the quantisation tools: each method's relative output error on real
activations, on the calibration text and on a held-out text.

For a linear with weight ``W`` ``[N, K]`` and inputs ``X`` ``[T, K]`` captured from the
full-precision model, the error of a quantised ``W_q`` is ``||X W^T - X W_q^T||_F / ||X W^T||_F``
(the quantity GPTQ minimises, Frantar et al. 2022, eq. 1, made relative). Each linear is
quantised alone from the full-precision inputs (no sequential propagation), so the numbers
compare the quantisers, not their effect on later layers. Columns:

* ``cal``: the calibration tokens the Hessian / AWQ statistics were computed from;
* ``cal-sink``: the same without position 0 of each window (the attention sink: its activations
  are orders of magnitude larger in a few channels in SmolLM2's later layers);
* ``held``, ``held-sink``: a held-out text, with and without its position 0.

``awq`` here searches the AWQ scale and clip for the linear alone (``inspect`` = the linear), a
simplification of the per-block search ``awq.awq_quantize_model`` runs.

    python -m gfx906_llm.quant.tools.layer_report MODEL_DIR HELDOUT.txt [--linears a,b,...]
        [--num-samples 32] [--seq-len 256] [--calibration FILE] [--group-size 128]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

import torch
from torch import nn

from gfx906_llm.quant.tools.awq import search_clip, search_scale
from gfx906_llm.quant.tools.gptq import DEFAULT_SINK_WEIGHT, gptq_quantize_weight, hessian_from_inputs
from gfx906_llm.quant.tools.rtn import quantize_rtn

DEFAULT_LINEARS = ("model.layers.2.self_attn.q_proj", "model.layers.10.self_attn.o_proj",
                   "model.layers.15.mlp.gate_proj", "model.layers.15.mlp.down_proj",
                   "model.layers.28.mlp.down_proj")


def relative_error(x: torch.Tensor, w: torch.Tensor, wq: torch.Tensor) -> float:
    """``||x (w - wq)^T|| / ||x w^T||`` for ``x`` ``[T, K]``, ``w``/``wq`` ``[N, K]`` (float)."""
    return float(torch.linalg.norm(x @ (w - wq).T) / torch.linalg.norm(x @ w.T))


def awq_single(w: torch.Tensor, x: torch.Tensor, bits: int, group_size: int, sym: bool = False) -> torch.Tensor:
    """AWQ (scale search + clip search) of one linear ``w`` ``[N, K]`` on inputs ``x`` ``[S, L, K]``;
    returns the dequantised float32 weight in the original (unscaled) input basis."""
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data = w.clone()
    with torch.no_grad():
        s, _ = search_scale(x, x[:4], [lin], lin, bits, group_size, sym)
        ws = w * s
        mv = search_clip(ws, x / s, bits, group_size, sym)
        return quantize_rtn(torch.maximum(torch.minimum(ws, mv), -mv), bits, group_size, sym).dequantize() / s


def methods(bits: int, group_size: int) -> dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]]:
    """name -> f(W [N, K], H [K, K], X_cal [S, L, K]) -> dequantised W_q [N, K] (float32).
    ``H`` is the reference Hessian; the ``-sink`` variants recompute it with ``DEFAULT_SINK_WEIGHT``."""
    g = group_size

    def sinkw(x: torch.Tensor) -> torch.Tensor:
        return hessian_from_inputs(x, DEFAULT_SINK_WEIGHT)

    return {
        "rtn-sym": lambda w, h, x: quantize_rtn(w, bits, g, True).dequantize(),
        "rtn-asym": lambda w, h, x: quantize_rtn(w, bits, g, False).dequantize(),
        "gptq-sym": lambda w, h, x: gptq_quantize_weight(w, h, bits, g, True).dequantize(),
        "gptq-sym-act": lambda w, h, x: gptq_quantize_weight(w, h, bits, g, True, desc_act=True).dequantize(),
        "gptq-asym": lambda w, h, x: gptq_quantize_weight(w, h, bits, g, False).dequantize(),
        "gptq-sym-sink": lambda w, h, x: gptq_quantize_weight(w, sinkw(x), bits, g, True).dequantize(),
        "gptq-sym-act-sink": lambda w, h, x: gptq_quantize_weight(w, sinkw(x), bits, g, True, desc_act=True).dequantize(),
        "awq-asym": lambda w, h, x: awq_single(w, x, bits, g),
    }


@torch.no_grad()
def capture_inputs(model: nn.Module, names: list[str], batches: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """Inputs ``[S, L, K]`` of the named linears for each batch of ``input_ids`` ``[S, L]``."""
    mods = dict(model.named_modules())
    missing = [n for n in names if n not in mods]
    if missing:
        raise ValueError(f"no such linears: {missing}")
    caps: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    hooks = [mods[n].register_forward_pre_hook(lambda m, a, n=n: caps[n].append(a[0].detach().float())) for n in names]
    try:
        for ids in batches:
            model(input_ids=ids, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return caps


def layer_report(model: nn.Module, names: list[str], cal_ids: torch.Tensor, held_ids: torch.Tensor,
                 bits: int = 4, group_size: int = 128) -> list[dict]:
    """One row per (linear, method): relative errors ``cal``, ``cal-sink``, ``held``, ``held-sink``."""
    caps = capture_inputs(model, names, [cal_ids, held_ids])
    mods = dict(model.named_modules())
    rows = []
    for n in names:
        xc, xh = caps[n]  # [S, L, K]
        k = xc.shape[-1]
        w = mods[n].weight.data.float()
        h = hessian_from_inputs(xc)
        sets = {"cal": xc.reshape(-1, k), "cal-sink": xc[:, 1:].reshape(-1, k),
                "held": xh.reshape(-1, k), "held-sink": xh[:, 1:].reshape(-1, k)}
        for name, fn in methods(bits, group_size).items():
            wq = fn(w, h, xc)
            rows.append({"linear": n, "method": name, **{s: round(relative_error(x, w, wq), 4) for s, x in sets.items()}})
    return rows


def main(argv: list[str] | None = None) -> int:
    from gfx906_llm.quant.tools.calibration import calibration_samples, load_model_for_calibration

    p = argparse.ArgumentParser(prog="python -m gfx906_llm.quant.tools.layer_report", description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("heldout", help="text file not in the calibration data")
    p.add_argument("--linears", default=",".join(DEFAULT_LINEARS))
    p.add_argument("--num-samples", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--calibration", default=None, help="calibration text file (default: the shipped one)")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--held-tokens", type=int, default=1024)
    a = p.parse_args(argv)
    model, tok = load_model_for_calibration(a.model_dir)
    text = None if a.calibration is None else open(a.calibration, encoding="utf-8").read()
    cal = calibration_samples(tok, a.num_samples, a.seq_len, text=text)
    held = tok(open(a.heldout, encoding="utf-8").read(), add_special_tokens=False)["input_ids"][: a.held_tokens - 1]
    bos = tok.bos_token_id
    held_ids = torch.tensor([([bos] if bos is not None else []) + held])
    rows = layer_report(model, a.linears.split(","), cal, held_ids, a.bits, a.group_size)
    print(f"{'linear':34s} {'method':13s} {'cal':>7s} {'cal-sink':>8s} {'held':>7s} {'held-sink':>9s}")
    for r in rows:
        print(f"{r['linear']:34s} {r['method']:13s} {r['cal']:7.4f} {r['cal-sink']:8.4f} {r['held']:7.4f} {r['held-sink']:9.4f}")
    json.dump(rows, sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
