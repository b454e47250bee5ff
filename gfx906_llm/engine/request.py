"""One sequence being generated (torch-free)."""

from __future__ import annotations

import enum
import time

from gfx906_llm.sampling_params import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"

    @property
    def finished(self) -> bool:
        return self in (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH, RequestStatus.FINISHED_ABORTED)


class Request:
    """A sequence: prompt plus generated tokens, and how much of it the KV cache holds.

    ``num_computed_tokens`` chases ``num_tokens``: the scheduler gives each step up to
    ``num_tokens - num_computed_tokens`` tokens (a prefill chunk, or one decode token); when a
    step brings it level, the runner samples one more token. Preemption frees the blocks and
    resets ``num_computed_tokens`` to 0 (recompute).
    """

    __slots__ = ("request_id", "prompt_token_ids", "output_token_ids", "all_token_ids", "params",
                 "max_tokens", "eos_token_ids", "num_computed_tokens", "status", "arrival_time",
                 "stop_reason", "index", "num_preemptions")

    def __init__(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams, max_tokens: int,
                 eos_token_ids: frozenset[int] = frozenset(), arrival_time: float | None = None, index: int = 0):
        self.request_id = request_id
        self.prompt_token_ids = prompt_token_ids
        self.output_token_ids: list[int] = []
        self.all_token_ids: list[int] = list(prompt_token_ids)
        self.params = params
        self.max_tokens = max_tokens
        self.eos_token_ids = eos_token_ids
        self.num_computed_tokens = 0
        self.status = RequestStatus.WAITING
        self.arrival_time = time.monotonic() if arrival_time is None else arrival_time
        self.stop_reason: int | str | None = None
        self.index = index
        self.num_preemptions = 0

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    def append_token(self, token_id: int) -> None:
        self.output_token_ids.append(token_id)
        self.all_token_ids.append(token_id)

    def needs_host_history(self) -> bool:
        """True when sampling reads the newest token ids on the host (repetition, presence and
        frequency penalties): async scheduling cannot sample it while its previous token is
        still on the device, and falls back to the synchronous step."""
        p = self.params
        return p.repetition_penalty != 1.0 or p.presence_penalty != 0.0 or p.frequency_penalty != 0.0

    def check_stop(self) -> RequestStatus | None:
        """Token-level stop conditions after a token was appended (stop strings are checked by
        the output processor, which sees the text)."""
        n = len(self.output_token_ids)
        last = self.output_token_ids[-1]
        if n >= self.params.min_tokens:
            if not self.params.ignore_eos and last in self.eos_token_ids:
                self.stop_reason = None
                return RequestStatus.FINISHED_STOPPED
            if last in self.params.stop_token_ids:
                self.stop_reason = last
                return RequestStatus.FINISHED_STOPPED
        if n >= self.max_tokens:
            return RequestStatus.FINISHED_LENGTH
        return None
