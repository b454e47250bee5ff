"""Token sampling on the device: penalties, temperature, top-k, top-p, min-p, seeds, logprobs.

Log-probabilities are those of the raw model distribution (before penalties and temperature),
as vLLM V1 returns them by default. Sampling uses the exponential race (``argmax p / q`` with
``q = -log(U) ~ Exp(1)``), equivalent to drawing from ``p``, so a per-request ``torch.Generator`` makes a
seeded request reproducible whatever else shares its batch.

``Sampler.launch`` enqueues the sampling and starts one non-blocking device-to-host copy of the
results (pinned memory) followed by a CUDA event; ``PendingSample.result()`` waits on that event.
Between the two the host may enqueue the next step, which reads ``PendingSample.token_ids`` on
the device (async scheduling). Nothing in ``launch`` synchronises with the device: host-built
parameter tensors go up from pinned memory with ``non_blocking``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gfx906_llm.engine.request import Request


def to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A host list as a device tensor without a stream synchronisation (a pageable copy with
    ``non_blocking=False`` waits for the stream, i.e. for the step in flight)."""
    if device.type == "cuda":
        return torch.tensor(values, dtype=dtype, pin_memory=True).to(device, non_blocking=True)
    return torch.tensor(values, dtype=dtype, device=device)


@dataclass
class SamplerOutput:
    token_ids: list[int]
    logprobs: list[float] | None  # raw logprob of each sampled token
    ranks: list[int] | None  # 1 = most likely
    top_ids: list[list[int]] | None  # per row, up to max requested top logprobs
    top_logprobs: list[list[float]] | None


def _apply_penalties(logits: torch.Tensor, reqs: list[Request]) -> bool:
    """Repetition, presence and frequency penalties, in place; True when any row has one."""
    rows = [i for i, r in enumerate(reqs) if r.params.repetition_penalty != 1.0
            or r.params.presence_penalty != 0.0 or r.params.frequency_penalty != 0.0]
    if not rows:
        return False
    V = logits.shape[1]
    dev = logits.device
    for i in rows:
        p = reqs[i].params
        out = torch.tensor(reqs[i].output_token_ids, dtype=torch.long, device=dev)
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(reqs[i].all_token_ids, dtype=torch.long, device=dev).unique()
            vals = logits[i, seen]
            logits[i, seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        if out.numel() and (p.presence_penalty != 0.0 or p.frequency_penalty != 0.0):
            counts = torch.bincount(out, minlength=V).to(logits.dtype)
            logits[i] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(logits.dtype)
    return True


def _apply_min_tokens(logits: torch.Tensor, reqs: list[Request], num_pending: int = 0) -> bool:
    """Ban EOS and stop token ids while a request has fewer than ``min_tokens`` outputs;
    ``num_pending``: tokens each request has sampled on the device but not yet on the host.
    True when a row was edited."""
    edited = False
    for i, r in enumerate(reqs):
        if len(r.output_token_ids) + num_pending < r.params.min_tokens:
            banned = list(r.params.stop_token_ids)
            if not r.params.ignore_eos:
                banned += list(r.eos_token_ids)
            if banned:
                logits[i, to_device(banned, torch.long, logits.device)] = float("-inf")
                edited = True
    return edited


def _top_k_top_p_min_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                       min_p: torch.Tensor, reqs: list[Request] | None = None) -> torch.Tensor:
    """Mask (to -inf) what top-k / top-p / min-p drop. ``logits`` ``[S, V]`` already tempered;
    which filters apply is decided from ``reqs`` on the host when given (no device sync)."""
    V = logits.shape[1]
    if reqs is None:
        need_min_p = bool((min_p > 0).any())
        need_k = bool(((top_k > 0) & (top_k < V)).any())
        need_p = bool((top_p < 1.0).any())
    else:
        need_min_p = any(r.params.min_p > 0 for r in reqs)
        need_k = any(0 < r.params.top_k < V for r in reqs)
        need_p = any(r.params.top_p < 1.0 for r in reqs)
    if need_min_p:
        probs = logits.softmax(-1)
        thresh = probs.max(-1, keepdim=True).values * min_p[:, None]
        logits = logits.masked_fill(probs < thresh, float("-inf"))
    if not (need_k or need_p):
        return logits
    sorted_logits, idx = logits.sort(-1, descending=True)
    mask = torch.zeros_like(sorted_logits, dtype=torch.bool)
    if need_k:
        k = torch.where(top_k > 0, top_k, V).clamp(max=V)
        mask |= torch.arange(V, device=logits.device)[None, :] >= k[:, None]
    if need_p:
        probs = sorted_logits.softmax(-1)
        cum = probs.cumsum(-1)
        mask |= (cum - probs) > top_p[:, None]  # keep the smallest prefix whose mass reaches top_p
    sorted_logits = sorted_logits.masked_fill(mask, float("-inf"))
    return torch.empty_like(logits).scatter_(1, idx, sorted_logits)


def argmax_rows(x: torch.Tensor, chunks: int = 64) -> torch.Tensor:
    """``x.argmax(-1)`` for ``x [S, V]`` in two stages when ``V % chunks == 0``: the first index of
    each row's maximum, as ``argmax``. A single-row argmax over a 128k vocabulary is one thread
    block in torch (27.6 us on an H200, more than 1% of an 8B decode step); maxima of ``chunks``
    slices first spread it over the GPU. On GPUs the same two stages are two Triton launches
    (``kernels/gfx906/step_io.py``; torch takes five). Returns int64 ``[S]``."""
    if x.is_cuda:
        from gfx906_llm.kernels.gfx906.step_io import argmax_rows_triton

        return argmax_rows_triton(x)
    S, V = x.shape
    if V % chunks or V < 4 * chunks:
        return x.argmax(-1)
    xs = x.view(S, chunks, V // chunks)
    idx = xs.argmax(-1, keepdim=True)  # [S, chunks, 1]: first maximum of each slice (max(dim) may
    vals = xs.gather(2, idx).squeeze(2)  # return any tied index; argmax returns the first)
    c = vals.argmax(-1, keepdim=True)  # [S, 1]: first slice holding the row's maximum
    return (c * (V // chunks) + idx.squeeze(2).gather(1, c)).squeeze(1)


@dataclass
class PendingSample:
    """Sampling enqueued on the device. ``token_ids`` ``[S]`` int64 stays on the device (the next
    step may read it); ``result()`` waits for the host copy and returns the SamplerOutput."""

    token_ids: torch.Tensor  # [S] int64, device
    host: torch.Tensor  # [3, S] float64 (token, logprob, rank) or [S] int64 (token only); pinned on GPUs
    top_ids: torch.Tensor | None  # [S, k] int64
    top_logprobs: torch.Tensor | None  # [S, k] fp32
    event: object | None  # torch.cuda.Event recorded after the copies (None on the CPU)

    def result(self) -> SamplerOutput:
        if self.event is not None:
            self.event.synchronize()
        if self.top_ids is None:
            return SamplerOutput(self.host.tolist(), None, None, None, None)
        return SamplerOutput(self.host[0].long().tolist(), self.host[1].tolist(), self.host[2].long().tolist(),
                             self.top_ids.tolist(), self.top_logprobs.tolist())


class Sampler:
    """``sample(logits [S, V] fp32, reqs, generators) -> SamplerOutput`` (one host copy), or
    ``launch(...) -> PendingSample`` and ``PendingSample.result()`` later."""

    def sample(self, logits: torch.Tensor, reqs: list[Request],
               generators: dict[str, torch.Generator]) -> SamplerOutput:
        return self.launch(logits, reqs, generators).result()

    def launch(self, logits: torch.Tensor, reqs: list[Request], generators: dict[str, torch.Generator],
               num_pending: int = 0, greedy_ids: torch.Tensor | None = None) -> PendingSample:
        """Enqueue sampling of ``logits [S, V]`` (row i for ``reqs[i]``) and the copy to the host.

        ``greedy_ids``: ``[S]`` int64 on the device, ``argmax_rows(logits)`` computed already (the
        decode graph does it); used as the greedy choice unless penalties or ``min_tokens`` edit
        the logits first.
        ``num_pending``: tokens every request has sampled on the device that its host state does
        not hold yet (1 in an async decode step; only ``min_tokens`` counts them, and requests for
        which ``Request.needs_host_history()`` is true must not be passed with ``num_pending > 0``)."""
        assert num_pending == 0 or not any(r.needs_host_history() for r in reqs)
        dev = logits.device
        want_lp = [r.params.logprobs for r in reqs]
        need_lp = any(x is not None for x in want_lp)
        raw_logprobs = torch.log_softmax(logits, dim=-1) if need_lp else None
        logits = logits.clone() if need_lp else logits
        edited = _apply_penalties(logits, reqs) | _apply_min_tokens(logits, reqs, num_pending)
        sampled = greedy_ids if greedy_ids is not None and not edited else argmax_rows(logits)
        if not all(r.params.greedy for r in reqs):  # decided on the host: no device sync
            greedy = to_device([r.params.greedy for r in reqs], torch.bool, dev)
            temp = to_device([max(r.params.temperature, 1e-5) for r in reqs], logits.dtype, dev)
            top_k = to_device([r.params.top_k for r in reqs], torch.long, dev)
            top_p = to_device([r.params.top_p for r in reqs], logits.dtype, dev)
            min_p = to_device([r.params.min_p for r in reqs], logits.dtype, dev)
            tempered = _top_k_top_p_min_p(logits / temp[:, None], top_k, top_p, min_p, reqs)
            probs = tempered.softmax(-1)
            # q ~ Exp(1) as -log(U): several times faster than exponential_() on CPUs
            seeded = [i for i, r in enumerate(reqs) if r.request_id in generators]
            q = torch.rand_like(probs) if len(seeded) < len(reqs) else torch.empty_like(probs)
            for i in seeded:  # seeded requests draw from their own stream
                torch.rand(q.shape[1], generator=generators[reqs[i].request_id], device=dev, out=q[i])
            q = q.log_().neg_()
            race = (probs / q).argmax(-1)
            sampled = torch.where(greedy, sampled, race)

        top_ids = top_lp = None
        if need_lp:
            k = max(x or 0 for x in want_lp)
            chosen = raw_logprobs.gather(1, sampled[:, None]).squeeze(1)
            ranks = (raw_logprobs > chosen[:, None]).sum(-1) + 1
            top_lp, top_ids = raw_logprobs.topk(k, dim=-1) if k > 0 else (raw_logprobs[:, :0], sampled[:, None][:, :0])
            host = torch.stack([sampled.double(), chosen.double(), ranks.double()])
        else:
            host = sampled
        if dev.type != "cuda":
            # a copy: ``sampled`` may be a view of the decode graphs' buffer, which the next step rewrites
            return PendingSample(sampled, host.clone(), top_ids, top_lp.float() if top_lp is not None else None, None)
        # non_blocking device->host copies land in pinned memory (torch's caching host allocator)
        host = host.to("cpu", non_blocking=True)
        if top_ids is not None:
            top_ids = top_ids.to("cpu", non_blocking=True)
            top_lp = top_lp.float().to("cpu", non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return PendingSample(sampled, host, top_ids, top_lp, event)

    @staticmethod
    def make_generator(seed: int, device: torch.device) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(seed)
        return g
