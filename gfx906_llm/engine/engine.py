"""LLMEngine: requests in, RequestOutputs out, one scheduler step at a time (not thread-safe).

Async scheduling (vLLM V1's ``--async-scheduling``): while decode step N runs on the device,
``step()`` schedules step N+1 with one placeholder token per request
(``Scheduler.schedule_continuation``) and launches it, its input ids gathered on the device from
step N's samples; only then does it wait for step N's tokens and apply them (scheduler update,
detokenisation, stop checks, metrics), which the host does while N+1 runs. A request that stops
at step N (EOS, stop string or token, abort) had a row in N+1: that row is discarded. Each call
still returns the outputs of exactly one step, in the synchronous engine's order. Whenever N+1
could differ from "the same requests decode once more" (a prefill, an admission, a preemption,
a chunked step, penalties needing the newest token on the host) the engine drains: it applies
step N and schedules synchronously.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterable

from gfx906_llm.config import EngineConfig, default_max_num_batched_tokens
from gfx906_llm.engine.block_manager import BlockManager
from gfx906_llm.engine.output_processor import SequenceDetokenizer
from gfx906_llm.engine.request import Request, RequestStatus
from gfx906_llm.engine.scheduler import Scheduler, SchedulerOutput
from gfx906_llm.outputs import RequestMetrics, RequestOutput
from gfx906_llm.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


@dataclass
class EngineStats:
    num_running: int
    num_waiting: int
    kv_cache_usage: float  # 0..1
    num_preemptions: int  # cumulative
    num_free_blocks: int
    num_total_blocks: int


class _Group:
    """One user request: ``n`` sequences sharing a prompt."""

    def __init__(self, request_id, prompt, prompt_ids, params, children, detoks, arrival):
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_ids
        self.params = params
        self.children: list[Request] = children
        self.detoks: list[SequenceDetokenizer] = detoks
        self.metrics = RequestMetrics(arrival, num_prompt_tokens=len(prompt_ids))

    @property
    def finished(self) -> bool:
        return all(d.finish_reason is not None for d in self.detoks)

    def output(self) -> RequestOutput:
        return RequestOutput(self.request_id, self.prompt, self.prompt_token_ids,
                             [d.output() for d in self.detoks], self.finished, self.metrics)


class LLMEngine:
    """Loads the model and serves requests with continuous batching over a paged KV cache.

    Raises (constructor): ValueError for a bad config, an unreadable model, or a KV budget that
    cannot hold one block.
    """

    def __init__(self, config: EngineConfig):
        from gfx906_llm.loader.model_loader import load_model
        from gfx906_llm.platform import detect_platform
        from gfx906_llm.worker.cuda_graph import capture_sizes, graph_memory_bytes
        from gfx906_llm.worker.model_runner import ModelRunner

        self.config = config
        self.platform = detect_platform(None if config.device == "auto" else config.device)
        loaded = load_model(config.model, self.platform, config.dtype, config.tokenizer, config.quantization)
        self.loaded = loaded
        self.model_config = loaded.model_config
        self.tokenizer = loaded.tokenizer
        self.eos_token_ids = loaded.eos_token_ids
        cfg = self.model_config
        max_len = config.max_model_len or cfg.max_position_embeddings
        if max_len > cfg.max_position_embeddings:
            raise ValueError(f"--max-model-len {max_len} exceeds the model's max_position_embeddings "
                             f"{cfg.max_position_embeddings}")
        budget = config.max_num_batched_tokens or default_max_num_batched_tokens(self.platform.is_gpu)
        if not config.enable_chunked_prefill:
            budget = max(budget, max_len)
        self.runner = ModelRunner(loaded, self.platform, config.block_size, config.seed)
        use_graphs = self.platform.device.startswith("cuda") and not config.enforce_eager
        self.async_scheduling = use_graphs if config.async_scheduling is None else config.async_scheduling
        # async decode steps go through DecodeGraphs' buffers: run eagerly where nothing is captured
        need_buffers = use_graphs or self.async_scheduling
        graph_sizes = capture_sizes(config.cuda_graph_sizes, config.max_num_seqs) if need_buffers else []
        graph_bytes = graph_memory_bytes(graph_sizes if use_graphs else [], cfg.vocab_size)
        num_blocks = self.runner.profile_num_blocks(config.gpu_memory_utilization, config.kv_cache_memory_bytes,
                                                    budget, config.max_num_seqs, max_len, graph_bytes)
        if num_blocks < 1:
            raise ValueError("no memory left for the KV cache: raise --gpu-memory-utilization or the KV budget")
        if num_blocks * config.block_size < max_len:
            logger.warning("KV cache holds %d tokens: max_model_len lowered from %d", num_blocks * config.block_size,
                           max_len)
            max_len = num_blocks * config.block_size
        self.max_model_len = max_len
        from gfx906_llm.demo_models import DEFAULT_MODEL

        # like vLLM: the served name is the model argument as given (the demo model's short name)
        self.model_name = (config.served_model_name or [config.model or DEFAULT_MODEL])[0]
        self.runner.allocate_kv_cache(num_blocks)
        self.runner.warmup(budget, config.max_num_seqs)
        if graph_sizes:
            self.runner.capture_graphs(graph_sizes, max_len, capture=use_graphs)
        logger.info("async scheduling %s", "on" if self.async_scheduling and self.runner.graphs else "off")
        self.block_manager = BlockManager(num_blocks, config.block_size)
        self.scheduler = Scheduler(self.block_manager, config.max_num_seqs, budget, max_len,
                                   config.enable_chunked_prefill)
        self._groups: dict[str, _Group] = {}
        self._child_to_group: dict[str, tuple[_Group, int]] = {}
        self._pending: list[RequestOutput] = []
        # async scheduling: the step launched ahead, (schedule, runner's PendingStep), not yet applied
        self._inflight: tuple[SchedulerOutput, object] | None = None
        self.num_async_launches = 0  # steps launched while the previous step was still in flight

    # ---- requests -------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer(text, add_special_tokens=add_special_tokens).input_ids

    def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams,
                    arrival_time: float | None = None) -> None:
        """Queue a request.

        Raises:
            ValueError: duplicate id, empty prompt, token ids out of the vocabulary, or a prompt
                (plus ``min_tokens``) that does not fit ``max_model_len``. ``max_tokens`` beyond
                the context is clamped (the request ends with ``"length"``).
        """
        if request_id in self._groups:
            raise ValueError(f"request id {request_id!r} is already in use")
        params.validate()
        if isinstance(prompt, str):
            text, ids = prompt, self.encode(prompt)
        else:
            text, ids = None, list(prompt)
            vocab = self.model_config.vocab_size
            if any(not isinstance(t, int) or not 0 <= t < vocab for t in ids):
                raise ValueError(f"prompt token ids must be integers in [0, {vocab})")
        if not ids:
            raise ValueError("the prompt is empty")
        if len(ids) + max(params.min_tokens, 1) > self.max_model_len:
            raise ValueError(f"the prompt has {len(ids)} tokens; with at least {max(params.min_tokens, 1)} "
                             f"generated it exceeds the maximum context length of {self.max_model_len} tokens")
        room = self.max_model_len - len(ids)
        max_tokens = room if params.max_tokens is None else min(params.max_tokens, room)
        arrival = time.monotonic() if arrival_time is None else arrival_time
        children, detoks = [], []
        for i in range(params.n):
            cid = request_id if params.n == 1 else f"{request_id}#{i}"
            children.append(Request(cid, ids, params, max_tokens, self.eos_token_ids, arrival, index=i))
            detoks.append(SequenceDetokenizer(self.tokenizer, ids, params, i))
        group = _Group(request_id, text, ids, params, children, detoks, arrival)
        self._groups[request_id] = group
        for i, child in enumerate(children):
            self._child_to_group[child.request_id] = (group, i)
            self.scheduler.add_request(child)

    def abort_request(self, request_ids: str | Iterable[str]) -> None:
        """Abort requests (their blocks are freed now); the next ``step()`` returns their final
        output with ``finish_reason="abort"``. Unknown ids are ignored."""
        if isinstance(request_ids, str):
            request_ids = [request_ids]
        for rid in request_ids:
            group = self._groups.pop(rid, None)
            if group is None:
                continue
            for child, det in zip(group.children, group.detoks):
                self._child_to_group.pop(child.request_id, None)
                if det.finish_reason is None:
                    self.scheduler.finish_request(child.request_id, RequestStatus.FINISHED_ABORTED)
                    det.finish_reason = "abort"
            group.metrics.finished_time = time.monotonic()
            self._pending.append(group.output())

    def has_unfinished_requests(self) -> bool:
        return bool(self._groups) or bool(self._pending)

    def get_stats(self) -> EngineStats:
        bm = self.block_manager
        return EngineStats(self.scheduler.num_running, self.scheduler.num_waiting, bm.usage,
                           self.scheduler.num_preemptions, bm.num_free_blocks, bm.num_blocks)

    # ---- the step -------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Run one step and return the outputs of requests that progressed in it (and of requests
        aborted since the last call). With async scheduling the step returned may have been
        launched by the previous call, and the next one is launched before this one's tokens
        are waited for."""
        outputs, self._pending = self._pending, []
        cur, self._inflight = self._inflight, None
        if cur is None:
            sched = self.scheduler.schedule()
            if sched.is_empty:
                return outputs
            now = time.monotonic()
            for s in sched.scheduled:
                group, _ = self._child_to_group[s.request.request_id]
                if group.metrics.first_scheduled_time is None:
                    group.metrics.first_scheduled_time = now
            cur = (sched, self.runner.launch(sched))
        if self.async_scheduling:
            self._inflight = self._launch_next(*cur)
        self._apply(cur[0], self.runner.collect(cur[1]), outputs)
        if self._inflight is not None and not any(
                s.request.request_id in self.scheduler.requests for s in self._inflight[0].scheduled):
            self.runner.collect(self._inflight[1])  # every row stopped or was aborted: discard it
            self._inflight = None
        return outputs

    def recover_from_failed_step(self) -> None:
        """After ``step()`` raised: forget the step launched ahead (async scheduling) and zero the
        split-K accumulators a linear may have left unread (``gfx906_llm.layers.splitk``), so
        that the next step starts clean. The caller aborts the requests involved."""
        from gfx906_llm.layers.splitk import reset_accumulators

        self._inflight = None
        reset_accumulators()

    def _launch_next(self, sched: SchedulerOutput, pending) -> tuple[SchedulerOutput, object] | None:
        """Schedule and launch the decode step after the in-flight ``sched`` (a decode step, or a
        prefill that ends every running request's prompt), or None (drain).

        Blocks freed while this step is in flight (a request that stopped at ``sched``) may be
        handed to another request at once: every later step is enqueued on the same stream after
        this one, so its KV writes land after this step's reads and writes of them."""
        max_rows = self.runner.max_decode_graph_rows
        if pending.sample is None or not max_rows:
            return None
        if any(r.needs_host_history() for r in self.scheduler.running):
            return None  # penalties read the newest tokens on the host
        nxt = self.scheduler.schedule_continuation(sched, pending.sample_rows, max_rows)
        if nxt is None:
            return None
        assert self.runner.runs_via_graphs(nxt)
        self.num_async_launches += 1
        return nxt, self.runner.launch(nxt, prev=pending)

    def _apply(self, sched: SchedulerOutput, result, outputs: list[RequestOutput]) -> None:
        """Apply a step's sampled tokens: scheduler update, detokenisation, stops, metrics; append
        the outputs of the groups that progressed to ``outputs``."""
        touched: dict[str, _Group] = {}
        for req, new_token in self.scheduler.update_from_output(sched, result.sampled):
            if not new_token:
                continue
            group, i = self._child_to_group[req.request_id]
            det = group.detoks[i]
            rid = req.request_id
            stop = det.update(req.output_token_ids[-1], result.logprob.get(rid), result.rank.get(rid),
                              result.top.get(rid))
            if stop is not None and not req.status.finished:
                self.scheduler.finish_request(rid, RequestStatus.FINISHED_STOPPED)
                req.stop_reason = stop
            if req.status.finished:
                det.finish_reason = req.status.value
                det.stop_reason = req.stop_reason
                self._child_to_group.pop(rid, None)
            touched[group.request_id] = group
        now = time.monotonic()
        for group in touched.values():
            m = group.metrics
            m.first_token_time = m.first_token_time or now
            m.last_token_time = now
            m.num_generation_tokens = sum(len(d.output_ids) for d in group.detoks)
            if group.finished:
                m.finished_time = now
                self._groups.pop(group.request_id, None)
            outputs.append(group.output())
