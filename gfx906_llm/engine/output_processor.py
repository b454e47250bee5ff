"""Incremental detokenisation and stop strings (torch-free).

Detokenisation follows vLLM's ``detokenize_incrementally``: decode a short window of token ids
that starts a few tokens back (``prefix_offset``) and emit only the text past what the window
without the newest tokens gave, waiting while the text ends in an incomplete UTF-8 sequence
(U+FFFD). Stop strings are searched in the new text plus the last ``len(stop) - 1`` old
characters; text that could still grow into a stop string is held back from the output.
"""

from __future__ import annotations

from gfx906_llm.outputs import CompletionOutput, Logprob
from gfx906_llm.sampling_params import SamplingParams

INITIAL_OFFSET = 5  # prompt tokens decoded with the first outputs, for correct leading spaces


class SequenceDetokenizer:
    """Text state of one sequence; ``update()`` after every new token."""

    def __init__(self, tokenizer, prompt_token_ids: list[int], params: SamplingParams, index: int):
        self.tokenizer = tokenizer
        self.params = params
        self.index = index
        tail = prompt_token_ids[-INITIAL_OFFSET:]
        self.ids: list[int] = list(tail)
        self.prefix_offset = 0
        self.read_offset = len(tail)
        self.text = ""
        self.output_ids: list[int] = []
        self.logprobs: list[dict[int, Logprob]] | None = [] if params.logprobs is not None else None
        self.cumulative_logprob: float | None = 0.0 if params.logprobs is not None else None
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None
        self._holdback = max((len(s) for s in params.stop), default=1) - 1
        # the Rust tokenizer directly (what transformers' fast-tokenizer decode calls, minus about
        # 4 us of Python per call), unless the wrapper's clean-up of spaces is on
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._backend = None if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", False) else backend

    def _decode(self, ids: list[int], skip_special_tokens: bool | None = None) -> str:
        skip = self.params.skip_special_tokens if skip_special_tokens is None else skip_special_tokens
        if self._backend is not None:
            return self._backend.decode(ids, skip_special_tokens=skip)
        return self.tokenizer.decode(ids, skip_special_tokens=skip)

    def update(self, token_id: int, logprob: float | None = None, rank: int | None = None,
               top: list[tuple[int, float]] | None = None) -> str | None:
        """Add a token; returns the stop string if one now ends the text (text truncated)."""
        self.output_ids.append(token_id)
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        full = self._decode(self.ids[self.prefix_offset:])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            new = full[len(prefix):]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        else:
            new = ""
        if self.logprobs is not None and logprob is not None:
            entry = {token_id: Logprob(logprob, rank, self._decode([token_id], False))}
            for i, (tid, lp) in enumerate(top or []):
                if tid not in entry:
                    entry[tid] = Logprob(lp, i + 1, self._decode([tid], False))
            self.logprobs.append(entry)
            self.cumulative_logprob += logprob
        if not new:
            return None
        old_len = len(self.text)
        self.text += new
        for stop in self.params.stop:
            start = max(0, old_len - len(stop) + 1)
            pos = self.text.find(stop, start)
            if pos != -1:
                end = pos + len(stop) if self.params.include_stop_str_in_output else pos
                self.text = self.text[:end]
                return stop
        return None

    def output(self) -> CompletionOutput:
        text = self.text
        if self.finish_reason is None and self._holdback and self.params.stop:
            text = text[: max(0, len(text) - self._holdback)]
        return CompletionOutput(self.index, text, list(self.output_ids), self.cumulative_logprob,
                                list(self.logprobs) if self.logprobs is not None else None,
                                self.finish_reason, self.stop_reason)
