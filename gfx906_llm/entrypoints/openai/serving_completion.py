"""POST /v1/completions (OpenAI legacy completions, https://platform.openai.com/docs/api-reference/completions).

A request may carry several prompts (str, list[str], token ids, list of token-id lists); each
becomes one engine request ``{id}-{i}`` and its n outputs become choices ``i * n + index``
(vLLM's numbering). Streaming answers are server-sent events whose text deltas are cut from the
cumulative ``CompletionOutput.text``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from gfx906_llm.engine.async_engine import RequestStream
from gfx906_llm.entrypoints.openai.protocol import (CompletionRequest, CompletionResponse, CompletionResponseChoice,
                                                   CompletionStreamResponse, OpenAIServingError)
from gfx906_llm.entrypoints.openai.serving_base import (SSE_DONE, OpenAIServing, merge_streams,
                                                       run_unless_disconnected, sse, stream_usage_flags,
                                                       text_delta, usage_info)
from gfx906_llm.outputs import RequestOutput

logger = logging.getLogger(__name__)


class OpenAIServingCompletion(OpenAIServing):
    async def create_completion(self, req: CompletionRequest, raw: Request) -> Response:
        """Validate, submit and answer one completions request.

        Raises OpenAIServingError: 400 (bad values, prompt too long), 404 (unknown model), 503.
        """
        req.check()
        model = self.check_model(req.model)
        prompt_ids: list[list[int]] = []
        prompt_texts: list[str | None] = []
        for p in req.prompts():
            if isinstance(p, str):
                prompt_ids.append(self.tokenize(p, add_special_tokens=True))
                prompt_texts.append(p)
            else:
                prompt_ids.append(list(p))
                prompt_texts.append(None)
        params = [req.build_sampling_params(self.resolve_max_tokens(req.max_tokens, len(ids)), req.logprobs)
                  for ids in prompt_ids]
        rid = self.request_id("cmpl", raw)
        streams = await self.add_requests(rid, prompt_ids, params)
        if req.echo:
            tok = self.engine.tokenizer
            prompt_texts = [t if t is not None else tok.decode(ids) for t, ids in zip(prompt_texts, prompt_ids)]
        created = int(time.time())
        if req.stream:
            return StreamingResponse(self._stream(req, model, rid, created, streams, prompt_ids, prompt_texts),
                                     media_type="text/event-stream")
        finals = await run_unless_disconnected(self._collect(streams), raw)
        if finals is None:
            return Response(status_code=499)  # client closed the request; nobody reads this
        return JSONResponse(self._full_response(req, model, rid, created, finals, prompt_texts).model_dump())

    @staticmethod
    async def _collect(streams: list[RequestStream]) -> list[RequestOutput]:
        finals: list[RequestOutput | None] = [None] * len(streams)
        async for i, out in merge_streams(streams):
            finals[i] = out
        assert all(f is not None for f in finals)
        return finals

    def _full_response(self, req: CompletionRequest, model: str, rid: str, created: int,
                       finals: list[RequestOutput], prompt_texts: list[str | None]) -> CompletionResponse:
        choices = []
        num_prompt = num_gen = 0
        for pi, out in enumerate(finals):
            num_prompt += len(out.prompt_token_ids)
            prefix = prompt_texts[pi] if req.echo else ""
            for o in out.outputs:
                num_gen += len(o.token_ids)
                lp = None
                if req.logprobs is not None and o.logprobs is not None:
                    lp = self.completion_logprobs(o.token_ids, o.logprobs, len(prefix))
                choices.append(CompletionResponseChoice(index=pi * req.n + o.index, text=prefix + o.text,
                                                        logprobs=lp, finish_reason=o.finish_reason,
                                                        stop_reason=o.stop_reason))
        choices.sort(key=lambda c: c.index)
        return CompletionResponse(id=rid, created=created, model=model, choices=choices,
                                  usage=usage_info(num_prompt, num_gen))

    async def _stream(self, req: CompletionRequest, model: str, rid: str, created: int,
                      streams: list[RequestStream], prompt_ids: list[list[int]],
                      prompt_texts: list[str | None]) -> AsyncIterator[str]:
        n = req.n
        num_choices = len(streams) * n
        sent_chars = [0] * num_choices  # characters of o.text already sent
        sent_tokens = [0] * num_choices
        offsets = [0] * num_choices  # text_offset of the next token (legacy logprobs)
        finished = [False] * num_choices
        echo_pending = [req.echo] * num_choices
        num_gen = [0] * num_choices
        include_usage, continuous = stream_usage_flags(req.stream_options)
        num_prompt = sum(len(ids) for ids in prompt_ids)
        try:
            async for pi, out in merge_streams(streams):
                choices = []
                for o in out.outputs:
                    i = pi * n + o.index
                    if finished[i]:
                        continue
                    delta = text_delta(o.text, sent_chars[i])
                    sent_chars[i] += len(delta)
                    new_ids = o.token_ids[sent_tokens[i]:]
                    new_lps = o.logprobs[sent_tokens[i]:] if o.logprobs is not None else None
                    sent_tokens[i] = len(o.token_ids)
                    num_gen[i] = len(o.token_ids)
                    if echo_pending[i]:
                        echo_pending[i] = False
                        delta = prompt_texts[pi] + delta
                        offsets[i] = len(prompt_texts[pi])
                    lp = None
                    if req.logprobs is not None and new_lps:
                        lp = self.completion_logprobs(new_ids, new_lps, offsets[i])
                        offsets[i] += sum(len(t) for t in lp.tokens)
                    if not delta and lp is None and o.finish_reason is None:
                        continue
                    finished[i] = o.finish_reason is not None
                    choices.append(CompletionResponseChoice(index=i, text=delta, logprobs=lp,
                                                            finish_reason=o.finish_reason, stop_reason=o.stop_reason))
                if choices:
                    usage = usage_info(num_prompt, sum(num_gen)) if continuous else None
                    yield sse(CompletionStreamResponse(id=rid, created=created, model=model, choices=choices,
                                                       usage=usage))
            if include_usage:
                yield sse(CompletionStreamResponse(id=rid, created=created, model=model, choices=[],
                                                   usage=usage_info(num_prompt, sum(num_gen))))
        except Exception as e:  # noqa: BLE001 - the status line is sent already: report in-band
            logger.exception("completion stream %s failed", rid)
            err = e if isinstance(e, OpenAIServingError) else OpenAIServingError(str(e), status=500)
            yield sse(err.body())
        finally:  # also on cancellation (client disconnect): abort what is unfinished
            for s in streams:
                s.close()
        yield SSE_DONE
