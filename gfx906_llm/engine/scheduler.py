"""A scheduler with no prefill or decode phase (vLLM V1), torch-free.

Each step hands every running request, then waiting ones, a number of new tokens so that its
``num_computed_tokens`` catches up with ``num_tokens``, under two limits: a token budget
(``max_num_batched_tokens``) and ``max_num_seqs``. A long prompt is prefilled in chunks over
several steps (chunked prefill) while other requests keep decoding in the same steps. When the
KV cache runs out of blocks, the most recently admitted running request is preempted: its
blocks are freed and it is recomputed later (preemption by recompute).

Async scheduling (vLLM V1's ``--async-scheduling``): ``schedule_continuation`` schedules the
decode step after an in-flight decode step before that step's tokens reach the host. Each row is
a placeholder: its input token is the in-flight step's sample for the request, which the model
runner reads on the device (``ScheduledRequest.prev_row``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from gfx906_llm.engine.block_manager import BlockManager
from gfx906_llm.engine.request import Request, RequestStatus


@dataclass
class ScheduledRequest:
    """One request's share of a step (references into the Request, nothing copied)."""

    request: Request
    num_scheduled_tokens: int
    num_computed_tokens: int  # before this step: the position of the first scheduled token
    block_ids: list[int]
    # async decode row: the input token is row ``prev_row`` of the in-flight step's samples (on the
    # device; the request's host state does not hold it yet). None: the input is on the host.
    prev_row: int | None = None

    @property
    def do_sample(self) -> bool:
        """True when this step brings the request level with its tokens: sample the next one
        (always for a placeholder row: it feeds the newest token)."""
        if self.prev_row is not None:
            return True
        return self.num_computed_tokens + self.num_scheduled_tokens == self.request.num_tokens


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledRequest] = field(default_factory=list)
    total_num_scheduled_tokens: int = 0
    finished_req_ids: set[str] = field(default_factory=set)  # since the last step (runner frees state)
    preempted_req_ids: set[str] = field(default_factory=set)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int,
                 max_model_len: int, enable_chunked_prefill: bool = True):
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.enable_chunked_prefill = enable_chunked_prefill
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.requests: dict[str, Request] = {}
        self._finished_since_step: set[str] = set()
        self.num_preemptions = 0

    # ---- request lifecycle -------------------------------------------------------------------
    def add_request(self, req: Request) -> None:
        self.requests[req.request_id] = req
        self.waiting.append(req)

    def finish_request(self, request_id: str, status: RequestStatus) -> Request | None:
        """Finish (stop string, abort) a request wherever it is; frees its blocks."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return None
        if req.status == RequestStatus.RUNNING:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        req.status = status
        self.block_manager.free(request_id)
        self._finished_since_step.add(request_id)
        return req

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    # ---- one step ----------------------------------------------------------------------------
    def _preempt(self, req: Request) -> None:
        self.running.remove(req)
        self.block_manager.free(req.request_id)
        req.status = RequestStatus.PREEMPTED
        req.num_computed_tokens = 0
        req.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(req)

    def _num_new_tokens(self, req: Request, budget: int) -> int:
        n = req.num_tokens - req.num_computed_tokens
        if n > budget:
            n = budget if self.enable_chunked_prefill else 0
        return n

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput(finished_req_ids=self._finished_since_step)
        self._finished_since_step = set()
        budget = self.max_num_batched_tokens
        scheduled: list[ScheduledRequest] = []
        preempted = False

        # running requests first, in admission order
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = self._num_new_tokens(req, budget)
            if n == 0:
                i += 1
                continue
            while not self.block_manager.allocate_slots(req.request_id, req.num_computed_tokens + n):
                victim = self.running[-1]
                self._preempt(victim)
                out.preempted_req_ids.add(victim.request_id)
                preempted = True
                if victim is req:
                    break
            else:
                scheduled.append(ScheduledRequest(req, n, req.num_computed_tokens,
                                                  self.block_manager.get_block_ids(req.request_id)))
                budget -= n
                i += 1
                continue
            # req itself was preempted: the loop index already points at the next request

        # then waiting requests (FCFS), unless this step had to preempt
        while self.waiting and budget > 0 and not preempted and len(self.running) < self.max_num_seqs:
            req = self.waiting[0]
            n = self._num_new_tokens(req, budget)
            if n == 0:
                break
            if not self.block_manager.allocate_slots(req.request_id, req.num_computed_tokens + n):
                break
            self.waiting.popleft()
            req.status = RequestStatus.RUNNING
            self.running.append(req)
            scheduled.append(ScheduledRequest(req, n, req.num_computed_tokens,
                                              self.block_manager.get_block_ids(req.request_id)))
            budget -= n

        out.scheduled = scheduled
        out.total_num_scheduled_tokens = self.max_num_batched_tokens - budget
        return out

    def _finishes_by_length(self, req: Request, extra: int) -> bool:
        """True when ``extra`` more tokens bring ``req`` to ``max_tokens`` or ``max_model_len``."""
        return (len(req.output_token_ids) + extra >= req.max_tokens
                or req.num_tokens + extra >= self.max_model_len)

    def schedule_continuation(self, inflight: SchedulerOutput, sample_rows: dict[str, int],
                              max_rows: int) -> SchedulerOutput | None:
        """The decode step after ``inflight`` (launched, its tokens not yet applied), or None
        when it must wait for them (then the caller applies ``inflight`` and calls ``schedule()``).

        Every running request must have a row in ``inflight`` that makes it level (it samples,
        ``sample_rows``: request id -> row of the in-flight samples); it gets one placeholder row,
        ``prev_row = sample_rows[request_id]``, feeding that sample at position ``num_tokens``.
        Requests that reach ``max_tokens`` or ``max_model_len`` with ``inflight``'s token are left
        out (never a slot past their limit). Returns None where ``schedule()`` could decide
        otherwise than "the same requests decode once more": a waiting request that could be
        admitted (a slot is or will be free), a request in the middle of its prefill, more than
        ``max_rows`` rows or than the token budget, a KV cache that needs preemption, or nothing
        left to run. Blocks for the new rows are allocated here (what ``schedule()`` would
        allocate for them next).
        """
        if not self.running:
            return None
        rows = {s.request.request_id: s for s in inflight.scheduled}
        keep: list[Request] = []
        for req in self.running:
            s = rows.get(req.request_id)
            if (s is None or s.num_computed_tokens != req.num_computed_tokens
                    or s.num_computed_tokens + s.num_scheduled_tokens != req.num_tokens
                    or req.request_id not in sample_rows):
                return None  # not a request that the in-flight step brings level
            if not self._finishes_by_length(req, 1):
                keep.append(req)
        if not keep or len(keep) > min(max_rows, self.max_num_batched_tokens):
            return None
        if self.waiting and len(keep) < self.max_num_seqs:
            return None  # schedule() would admit (or try to admit) a waiting request
        scheduled = []
        for req in keep:
            pos = req.num_tokens  # the in-flight sample's position
            if not self.block_manager.allocate_slots(req.request_id, pos + 1):
                return None  # preemption needed: schedule() handles it (blocks kept are what it allocates)
            scheduled.append(ScheduledRequest(req, 1, pos, self.block_manager.get_block_ids(req.request_id),
                                              prev_row=sample_rows[req.request_id]))
        out = SchedulerOutput(scheduled, len(scheduled), finished_req_ids=self._finished_since_step)
        self._finished_since_step = set()
        return out

    def update_from_output(self, sched: SchedulerOutput, sampled: dict[str, int]) -> list[tuple[Request, bool]]:
        """Advance ``num_computed_tokens``, append sampled tokens and apply token-level stops.

        Args:
            sampled: request id -> sampled token id, for the requests whose ``do_sample`` was set.

        Returns:
            ``(request, got_new_token)`` for every scheduled request still known; finished ones
            have a finished status and have already released their blocks.
        """
        results: list[tuple[Request, bool]] = []
        for s in sched.scheduled:
            req = s.request
            if req.status != RequestStatus.RUNNING or req.request_id not in self.requests:
                continue  # aborted or preempted meanwhile
            assert s.num_computed_tokens == req.num_computed_tokens, "steps applied out of order"
            req.num_computed_tokens += s.num_scheduled_tokens
            tok = sampled.get(req.request_id)
            if tok is None:
                results.append((req, False))
                continue
            req.append_token(tok)
            status = req.check_stop()
            if status is None and req.num_tokens >= self.max_model_len:
                status = RequestStatus.FINISHED_LENGTH
            if status is not None:
                self.finish_request(req.request_id, status)
            results.append((req, True))
        return results
