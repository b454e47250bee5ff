"""GPTQ: Frantar, Ashkboos, Hoefler, Alistarh 2022, "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers" (arXiv:2210.17323), Algorithm 1, as the reference code
(IST-DASLab/gptq ``gptq.py``, kept by AutoGPTQ / GPTQModel) runs it:

* Hessian of the layer-wise objective ``||W X - W_q X||^2``: ``H = 2 X X^T / T`` over the T
  calibration tokens reaching the layer (inputs ``X`` ``[K, T]``).
* Dead inputs (``H_kk == 0``) get ``H_kk = 1`` and a zero weight column; dampening adds
  ``percdamp * mean(diag H)`` to the diagonal; ``Hinv`` is the upper Cholesky factor of ``H^-1``.
* Columns are quantised one by one; the error of column k, divided by ``Hinv_kk``, is pushed onto
  the not-yet-quantised columns of the block through row k of ``Hinv``; after each block of 128
  columns the accumulated error updates the rest of the matrix at once (lazy batch update).
* Group-wise scales/zeros are computed when a group's first column is reached, from the weights
  as already updated by the error propagation (``static_groups=False``).
* act-order (``desc_act``): columns are processed in order of decreasing ``H_kk``; groups are
  formed in that order and ``g_idx[k]`` records the group of original column k.

One deviation from the reference, on by default in the CLI (``--sink-weight 16``; 0 restores the
reference): position 0 of every calibration window, the attention sink, enters each Hessian with
the weight of 16 median tokens instead of its own norm (``hessian_from_inputs``). With the
reference weighting GPTQ was no better than round-to-nearest on SmolLM2 (see there).

``gptq_quantize_model`` runs a Hugging Face decoder layer by layer on the calibration batch: the
inputs of layer i come from layers < i already quantised, and inside a layer each linear is
quantised in a forward pre-hook the moment its input arrives, so o_proj sees quantised q/k/v,
down_proj sees quantised gate/up (GPTQModel's ``true_sequential=True``).
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable

import torch
from torch import nn

from gfx906_llm.quant.tools.calibration import capture_layer_inputs, get_decoder_layers, run_layer
from gfx906_llm.quant.tools.rtn import QuantizedWeight, check_settings, find_params, num_groups, quantize_codes


DEFAULT_SINK_WEIGHT = 16.0  # gptq_quantize_model / CLI default; see hessian_from_inputs


def hessian_from_inputs(x: torch.Tensor, sink_weight: float | None = None) -> torch.Tensor:
    """``H = 2 X^T X / T`` (float32 ``[K, K]``) from inputs ``x`` ``[..., K]`` (T = tokens).

    ``sink_weight`` (None: the reference Hessian): ``x`` is ``[S, L, K]`` and position 0 of every
    sample is the attention sink (the BOS token that starts every calibration window and every
    prompt). Its row is rescaled so that its squared norm is ``sink_weight`` times the median of
    the other tokens'. The reference weighs it by its norm: in SmolLM2's late down_proj inputs its
    squared norm is ~2000x an ordinary token's and it dominates ``H`` (GPTQ then ruins the
    ordinary tokens: layer 28 down_proj held-out error 0.25 against RTN's 0.15), while elsewhere
    it is 1 token in 256 and GPTQ pushes the ordinary tokens' error into the directions only the
    sink uses, although every later token attends to it. Perplexity (see the module docstring of
    tests/quant/test_e2e_quantized.py): g128 sym 26.1 (reference) -> 22.5 with weight 16.

    Raises:
        ValueError: sink_weight <= 0, or ``x`` not ``[S, L >= 2, K]`` with a sink weight.
    """
    x2 = x.reshape(-1, x.shape[-1]).float()  # [T, K]
    if sink_weight is not None:
        if not sink_weight > 0:
            raise ValueError(f"sink_weight={sink_weight} must be > 0")
        if x.dim() != 3 or x.shape[1] < 2:
            raise ValueError(f"sink_weight needs inputs [S, L >= 2, K], got {tuple(x.shape)}")
        x3 = x.float().clone()  # [S, L, K]
        n2 = x3.pow(2).sum(-1)  # [S, L]
        target = sink_weight * n2[:, 1:].median().clamp(min=1e-12)
        x3[:, 0] *= (target / n2[:, 0].clamp(min=1e-30)).sqrt()[:, None]
        x2 = x3.reshape(-1, x.shape[-1])
    return (x2.T @ x2) * (2.0 / x2.shape[0])


def prepare_hessian(H: torch.Tensor, desc_act: bool = False, percdamp: float = 0.01) -> dict[str, torch.Tensor]:
    """The weight-independent part of GPTQ for one Hessian ``H`` ``[K, K]``: dead inputs, the
    act-order permutation and the upper Cholesky factor of the dampened, permuted ``H^-1``
    (shared by q/k/v and by gate/up, whose inputs are the same).

    Raises:
        ValueError: percdamp outside (0, 1) or H not square.
    """
    if not 0.0 < percdamp < 1.0:
        raise ValueError(f"percdamp={percdamp} out of range (0, 1)")
    if H.dim() != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"H has shape {tuple(H.shape)}, expected [K, K]")
    k = H.shape[0]
    H = H.detach().float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    perm = torch.argsort(torch.diag(H), descending=True) if desc_act else torch.arange(k)
    H = H[perm][:, perm]
    idx = torch.arange(k)
    H[idx, idx] += percdamp * torch.mean(torch.diag(H))
    return {"dead": dead, "perm": perm, "Hinv": _upper_cholesky_of_inverse(H), "desc_act": torch.tensor(desc_act)}


def gptq_quantize_weight(
    weight: torch.Tensor,
    H: torch.Tensor | None,
    bits: int = 4,
    group_size: int = 128,
    sym: bool = True,
    desc_act: bool = False,
    percdamp: float = 0.01,
    blocksize: int = 128,
    min_zero: int = 0,
    bias: torch.Tensor | None = None,
    static_groups: bool = False,
    prepared: dict[str, torch.Tensor] | None = None,
) -> QuantizedWeight:
    """GPTQ-quantise one linear weight ``[N, K]`` given its Hessian ``H`` ``[K, K]`` (or the
    ``prepare_hessian(H, desc_act, percdamp)`` result as ``prepared``, H then unused).

    ``static_groups=True`` (GPTQModel ``static_groups``, compressed-tensors ``actorder="weight"``):
    every group's scale/zero is computed up front from the original weight over contiguous
    columns, so act-order changes only the processing order and ``g_idx`` stays ``k // group_size``.
    ``min_zero``: see ``rtn.find_params`` (1 for GPTQ v1 checkpoints with ``sym=False``).
    A K that is not a multiple of ``group_size`` ends in a shorter group.

    Raises:
        ValueError: bad bits / group_size / percdamp, or an H that is not ``[K, K]``.
    """
    n, k = weight.shape
    check_settings(bits, group_size)
    if prepared is None:
        if H is None or tuple(H.shape) != (k, k):
            raise ValueError(f"H has shape {None if H is None else tuple(H.shape)}, expected ({k}, {k})")
        prepared = prepare_hessian(H, desc_act, percdamp)
    if bool(prepared["desc_act"]) != desc_act or prepared["Hinv"].shape[0] != k:
        raise ValueError("prepared Hessian does not match desc_act / in_features")
    dead, perm, Hinv = prepared["dead"], prepared["perm"], prepared["Hinv"]  # Hinv [K, K] upper
    gs = k if group_size == -1 else group_size
    if gs < k and blocksize % gs and gs % blocksize:
        blocksize = gs  # keep every group start on a block boundary or inside one block
    W = weight.detach().float().clone()  # [N, K]
    W[:, dead] = 0

    n_groups = num_groups(k, group_size)  # the last group is shorter when gs does not divide K
    scales = torch.zeros(n, n_groups)
    zeros = torch.zeros(n, n_groups)
    if static_groups:
        for g in range(n_groups):
            scales[:, g], zeros[:, g] = find_params(W[:, g * gs : (g + 1) * gs], bits, sym, True, min_zero)
    WT = W[:, perm].T.contiguous()  # [K, N], processing order: row k = column perm[k]
    QT = torch.zeros_like(WT)  # codes, processing order
    scale = zero = None
    # The column loop is many small memory-bound ops: one thread (see _single_thread); the
    # block-wise matmul below gets the threads back.
    for i1 in range(0, k, blocksize):
        i2 = min(i1 + blocksize, k)
        W1 = WT[i1:i2].clone()  # [B, N]
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        with _single_thread():
            for i in range(i2 - i1):
                col = i1 + i
                if static_groups:
                    g = int(perm[col]) // gs
                    scale, zero = scales[:, g], zeros[:, g]
                elif col % gs == 0:
                    # group start: W1 holds this block's updated columns, WT the later blocks'
                    grp = torch.cat([W1[i:], WT[i2:]], dim=0)[:gs].T  # [N, g]
                    scale, zero = find_params(grp, bits, sym, include_zero=True, min_zero=min_zero)
                    scales[:, col // gs], zeros[:, col // gs] = scale, zero
                w = W1[i]  # [N]
                q = quantize_codes(w, scale, zero, bits)
                QT[col] = q
                err = (w - scale * (q - zero)) / Hinv1[i, i]
                W1[i:] -= Hinv1[i, i:, None] * err[None, :]
                Err1[i] = err
        WT[i2:] -= Hinv[i1:i2, i2:].T @ Err1  # lazy batch update of the later columns

    Q = QT.T  # [N, K] processing order
    g_idx = (torch.arange(k) // gs).to(torch.int32)
    if desc_act:
        invperm = torch.argsort(perm)
        Q = Q[:, invperm]
        if not static_groups:
            g_idx = g_idx[invperm]
    return QuantizedWeight(
        qweight=Q.to(torch.uint8).contiguous(),
        scales=scales,
        zeros=zeros.to(torch.int32),
        g_idx=g_idx.contiguous(),
        bits=bits,
        group_size=group_size,
        sym=sym,
        bias=None if bias is None else bias.detach().float().clone(),
    )


def _upper_cholesky_of_inverse(H: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor of ``H^-1``; on failure adds more dampening (as GPTQModel's
    ``damp_auto_increment`` does) up to 10 times."""
    eye = torch.eye(H.shape[0])
    extra = 0.0
    mean_diag = float(torch.mean(torch.diag(H)))
    with _single_thread():  # K <= a few thousand: LAPACK's thread barriers cost more than they save
        for _ in range(10):
            L, info = torch.linalg.cholesky_ex(H + extra * eye)
            if int(info) == 0:
                Hinv = torch.cholesky_inverse(L)
                U, info2 = torch.linalg.cholesky_ex(Hinv, upper=True)
                if int(info2) == 0:
                    return U
            extra = max(extra * 2, 0.01 * mean_diag)
    raise RuntimeError("Hessian is not positive definite even after extra dampening")


@contextlib.contextmanager
def _single_thread():
    """Run small or sequential torch ops on one thread: on a shared 2-core CPU the intra-op pool's
    barriers stalled them for up to seconds (cholesky_inverse of a 576x576 H: 0.002 s to 1.9 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def gptq_quantize_model(
    model: nn.Module,
    input_ids: torch.Tensor,
    bits: int = 4,
    group_size: int = 128,
    sym: bool = True,
    desc_act: bool = False,
    percdamp: float = 0.01,
    min_zero: int = 0,
    static_groups: bool = False,
    skip_first: int = 0,
    sink_weight: float | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, QuantizedWeight]:
    """Quantise every ``nn.Linear`` inside the decoder layers of a Hugging Face causal LM.

    Args:
        model: a transformers ``*ForCausalLM`` in float32 on the CPU (modified in place: each
            quantised linear's weight becomes its dequantised value).
        input_ids: int64 ``[S, L]`` calibration samples (``calibration.calibration_samples``).
        skip_first: leave the first ``skip_first`` positions of every sample out of the Hessians
            (0, the reference behaviour, by default). The first position is the attention sink:
            its activations are orders of magnitude larger in some channels (down_proj inputs up
            to ~500 in SmolLM2's last layers against ~10 elsewhere) and dominate ``H``. Leaving it
            out lowers the held-out error of ordinary tokens (SmolLM2 layer 28 down_proj,
            ``||XW^T - XW_q^T||``: RTN 651, GPTQ 1123, GPTQ without the sink 430) but raised
            SmolLM2's perplexity (g128: 27.2 -> 34.0, fp16 17.0): every token attends to the
            sink, so its keys and values must stay accurate.
        sink_weight: give position 0 of every sample (the sink) the weight of ``sink_weight``
            median tokens in every Hessian (``hessian_from_inputs``; None: the reference Hessian,
            the CLI default is ``DEFAULT_SINK_WEIGHT``). Ignored when ``skip_first > 0``.
            SmolLM2 g128 perplexity on 2,868 held-out tokens (fp16 18.55): sym 26.1 -> 22.5,
            asym 21.9 (RTN sym 27.9, RTN asym 23.6).
    Returns:
        ``{"model.layers.0.self_attn.q_proj": QuantizedWeight, ...}`` (names as in the state dict,
        without ``.weight``).
    """
    layers, prefix = get_decoder_layers(model)
    hidden, layer_kwargs = capture_layer_inputs(model, input_ids)
    out: dict[str, QuantizedWeight] = {}
    for li, layer in enumerate(layers):
        t0 = time.perf_counter()
        names = {m: name for name, m in layer.named_modules() if isinstance(m, nn.Linear)}
        h_cache: dict[tuple[int, tuple[int, ...]], tuple[torch.Tensor, dict]] = {}

        def pre_hook(mod: nn.Module, args: tuple, _li: int = li) -> None:
            x = args[0]
            key = (x.data_ptr(), tuple(x.shape))
            if key not in h_cache:  # q/k/v and gate/up share one input: one Hessian
                xs = x[:, skip_first:] if x.dim() == 3 and x.shape[1] > skip_first else x  # [S, L', K]
                sw = sink_weight if skip_first == 0 and xs.dim() == 3 and xs.shape[1] >= 2 else None
                h_cache[key] = (x, prepare_hessian(hessian_from_inputs(xs, sw), desc_act, percdamp))
            qw = gptq_quantize_weight(
                mod.weight, None, bits, group_size, sym, desc_act, percdamp, min_zero=min_zero, bias=mod.bias,
                static_groups=static_groups, prepared=h_cache[key][1],
            )
            mod.weight.data = qw.dequantize().to(mod.weight.dtype)
            full = f"{prefix}.{_li}.{names[mod]}"
            assert full not in out, f"{full} called twice in one layer forward"
            out[full] = qw

        handles = [m.register_forward_pre_hook(pre_hook) for m in names]
        try:
            hidden = run_layer(layer, hidden, layer_kwargs[li])
        finally:
            for h in handles:
                h.remove()
        missing = [n for m, n in names.items() if f"{prefix}.{li}.{n}" not in out]
        if missing:
            raise RuntimeError(f"layer {li}: linears never called during calibration: {missing}")
        if log:
            log(f"gptq layer {li}: {len(names)} linears in {time.perf_counter() - t0:.2f}s")
    return out


def output_error(x: torch.Tensor, weight: torch.Tensor, qw: QuantizedWeight) -> float:
    """``||X W^T - X W_q^T||_F`` (float) for inputs ``x`` ``[T, K]``: the quantity GPTQ minimises."""
    return float(torch.linalg.norm(x.float() @ (weight.float() - qw.dequantize()).T))


__all__ = ["prepare_hessian", "gptq_quantize_weight", "gptq_quantize_model", "hessian_from_inputs", "output_error", "DEFAULT_SINK_WEIGHT"]
