"""Shared test helpers: Hugging Face references and near-tie-aware greedy comparisons."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Iterator

import pytest
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


@contextlib.contextmanager
def serve_subprocess(model_path, *args: str, ready_timeout: float = 240.0) -> Iterator[tuple[str, str]]:
    """Run ``gfx906-llm serve MODEL ARGS`` on a free loopback port; yields ``(base_url, log_path)``
    once /health answers, and stops the server (SIGINT, then kill) afterwards."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.NamedTemporaryFile(prefix="gfx906-llm-server-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "gfx906_llm.cli", "serve", str(model_path), "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"

    def tail() -> str:
        with open(log.name, errors="replace") as f:
            return f.read()[-4000:]

    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{tail()}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {ready_timeout:.0f} s:\n{tail()}")
            time.sleep(0.3)
        yield url, log.name
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.unlink(log.name)


def compare_greedy_with_hf_gguf(gguf_path, prompts: list[list[int]], outs) -> list[int]:
    """Load ``gguf_path`` in transformers (fp32, gguf-py dequantisation) and check each of our
    greedy outputs (requested with ``logprobs=0``) against it with
    ``check_greedy_against_reference``; returns the steps compared per prompt."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32).eval()
    compared = []
    for ids, out in zip(prompts, outs):
        o = out.outputs[0]
        lps = [o.logprobs[i][t].logprob for i, t in enumerate(o.token_ids)]
        compared.append(check_greedy_against_reference(o.token_ids, lps, hf_logprobs(hf, ids, o.token_ids)))
    return compared


def pdl_graph_outputs(monkeypatch, fn, settings: dict[str, dict[str, str]], replays: int = 1) -> dict:
    """``fn()``'s output per named environment setting (e.g. ``{"on": {"GFX906_LLM_PDL": "1"}}``):
    run once eagerly, then captured in a CUDA graph and replayed ``replays`` times (launch options
    such as PDL are read when the graph is captured); a clone of the captured output each."""
    from gfx906_llm.kernels.gfx906 import pdl

    got = {}
    for name, env in settings.items():
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        pdl._enabled.cache_clear()
        fn()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = fn()
        for _ in range(replays):
            g.replay()
        torch.cuda.synchronize()
        got[name] = out.clone()
    pdl._enabled.cache_clear()
    return got
