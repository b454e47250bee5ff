"""Shared test helpers: Hugging Face references and near-tie-aware greedy comparisons."""

from __future__ import annotations

import torch


def hf_logprobs(hf_model, prompt_ids: list[int], output_ids: list[int]) -> torch.Tensor:
    """Teacher-forced HF log-probabilities ``[len(output_ids), vocab]`` (fp32) of each output
    position given the prompt and the previous outputs."""
    ids = torch.tensor([prompt_ids + output_ids])
    with torch.no_grad():
        logits = hf_model(ids).logits[0].float()
    return torch.log_softmax(logits[len(prompt_ids) - 1: len(prompt_ids) + len(output_ids) - 1], dim=-1)


def check_greedy_against_reference(ours_ids: list[int], ours_lps: list[float], ref_lp: torch.Tensor,
                                   lp_tol: float = 2e-3, tie_tol: float = 0.05) -> int:
    """Our greedy tokens must be the reference's argmax at every step, except at near-ties
    (reference gap below ``tie_tol``), where the sequences may diverge; our log-probs must match
    the reference's within ``lp_tol`` up to that point. Returns the number of steps compared."""
    for i, (tok, lp) in enumerate(zip(ours_ids, ours_lps)):
        ref_tok = int(ref_lp[i].argmax())
        assert abs(lp - float(ref_lp[i, tok])) < lp_tol, (i, tok, lp, float(ref_lp[i, tok]))
        if tok != ref_tok:
            gap = float(ref_lp[i, ref_tok] - ref_lp[i, tok])
            assert gap < tie_tol, f"step {i}: ours {tok} vs reference {ref_tok}, gap {gap:.4f}"
            return i + 1
    return len(ours_ids)


def assert_same_or_tie(a_ids, a_lps, b_ids, b_lps, tie_tol: float = 1e-3, lp_tol: float = 1e-3):
    """Two greedy runs of our engine (e.g. alone vs batched) agree token for token; where they
    first differ, both must have been at a near-tie (log-probs within ``tie_tol``)."""
    for i, (x, y) in enumerate(zip(a_ids, b_ids)):
        assert abs(a_lps[i] - b_lps[i]) < lp_tol or x != y, (i, a_lps[i], b_lps[i])
        if x != y:
            raise AssertionError(f"greedy outputs diverge at step {i}: {x} vs {y}")
    assert len(a_ids) == len(b_ids)


def engine_logits(llm, ids: list[int], chunks: list[int] | None = None) -> torch.Tensor:
    """Logits ``[len(ids), vocab]`` of every position from our engine's model, feeding the prompt
    in the given chunk sizes through the paged KV cache (teacher forcing)."""
    from gfx906_llm.attention.metadata import forward_context
    from gfx906_llm.engine.request import Request
    from gfx906_llm.engine.scheduler import ScheduledRequest, SchedulerOutput
    from gfx906_llm.sampling_params import SamplingParams
    from gfx906_llm.worker.inputs import build_step_inputs

    e = llm.engine
    req = Request("teacher-forcing", ids, SamplingParams(), 1)
    assert e.block_manager.allocate_slots(req.request_id, len(ids))
    blocks = e.block_manager.get_block_ids(req.request_id)
    rows, done = [], 0
    try:
        for n in chunks or [len(ids)]:
            sched = SchedulerOutput([ScheduledRequest(req, n, done, blocks)], n)
            inp = build_step_inputs(sched, e.config.block_size, e.runner.device)
            with torch.no_grad(), forward_context(inp.attn):
                hidden = e.runner.model(inp.input_ids, inp.positions)
            rows.append(e.runner.model.compute_logits(hidden).float().cpu())
            done += n
    finally:
        e.block_manager.free(req.request_id)
    return torch.cat(rows)


def perplexity(logits: torch.Tensor, ids: list[int]) -> float:
    """exp of the mean negative log-likelihood of ``ids[1:]`` under ``logits[:-1]``."""
    lp = torch.log_softmax(logits[:-1].float(), dim=-1)
    nll = -lp.gather(1, torch.tensor(ids[1:])[:, None]).mean()
    return float(torch.exp(nll))
