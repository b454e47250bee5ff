"""POST /v1/chat/completions (https://platform.openai.com/docs/api-reference/chat).

The messages are rendered with the tokenizer's chat template (transformers
``apply_chat_template(..., add_generation_prompt=True)``) and tokenized without extra special
tokens, as vLLM does; a model without a chat template answers 400. Streaming sends the role
first, then content deltas cut from the cumulative ``CompletionOutput.text``, each choice's
finish_reason, and (``stream_options.include_usage``) a last chunk with usage and no choices.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import jinja2
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from gfx906_llm.engine.async_engine import RequestStream
from gfx906_llm.entrypoints.openai.protocol import (ChatChoiceLogProbs, ChatCompletionRequest, ChatCompletionResponse,
                                                   ChatCompletionResponseChoice, ChatCompletionStreamChoice,
                                                   ChatCompletionStreamResponse, ChatResponseMessage, DeltaMessage,
                                                   OpenAIServingError)
from gfx906_llm.entrypoints.openai.serving_base import (SSE_DONE, OpenAIServing, merge_streams,
                                                       run_unless_disconnected, sse, stream_usage_flags,
                                                       text_delta, usage_info)
from gfx906_llm.outputs import RequestOutput

logger = logging.getLogger(__name__)


class OpenAIServingChat(OpenAIServing):
    def render_prompt(self, req: ChatCompletionRequest) -> list[int]:
        """Chat template -> prompt token ids.

        Raises OpenAIServingError (400): no chat template, or the template rejects the messages.
        """
        tok = self.engine.tokenizer
        if not getattr(tok, "chat_template", None):
            raise OpenAIServingError(
                "This model has no chat template, so /v1/chat/completions cannot format the messages; "
                "use /v1/completions with a plain prompt instead.", param="messages")
        messages = [m.to_template() for m in req.messages]
        try:
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=req.add_generation_prompt,
                                           continue_final_message=req.continue_final_message,
                                           **(req.chat_template_kwargs or {}))
        except (jinja2.TemplateError, ValueError, TypeError) as e:
            raise OpenAIServingError(f"The chat template could not render these messages: {e}",
                                     param="messages") from e
        ids = self.tokenize(text, add_special_tokens=False)
        if not ids:
            raise OpenAIServingError("The rendered chat prompt is empty.", param="messages")
        return ids

    async def create_chat_completion(self, req: ChatCompletionRequest, raw: Request) -> Response:
        """Validate, submit and answer one chat request.

        Raises OpenAIServingError: 400 (bad values, prompt too long, no template), 404, 503.
        """
        req.check()
        model = self.check_model(req.model)
        ids = self.render_prompt(req)
        params = req.build_sampling_params(self.resolve_max_tokens(req.requested_max_tokens(), len(ids)),
                                           req.sampling_logprobs())
        rid = self.request_id("chatcmpl", raw)
        streams = await self.add_requests(rid, [ids], [params])
        created = int(time.time())
        if req.stream:
            return StreamingResponse(self._stream(req, model, rid, created, streams[0], len(ids)),
                                     media_type="text/event-stream")
        final = await run_unless_disconnected(self._collect(streams[0]), raw)
        if final is None:
            return Response(status_code=499)  # client closed the request; nobody reads this
        return JSONResponse(self._full_response(req, model, rid, created, final).model_dump())

    @staticmethod
    async def _collect(stream: RequestStream) -> RequestOutput:
        final = None
        async for _, out in merge_streams([stream]):
            final = out
        assert final is not None
        return final

    def _logprobs(self, req: ChatCompletionRequest, token_ids, logprobs) -> ChatChoiceLogProbs | None:
        if not req.logprobs or logprobs is None:
            return None
        return ChatChoiceLogProbs(content=self.chat_logprobs(token_ids, logprobs, req.top_logprobs or 0))

    def _full_response(self, req: ChatCompletionRequest, model: str, rid: str, created: int,
                       out: RequestOutput) -> ChatCompletionResponse:
        choices = [ChatCompletionResponseChoice(index=o.index, message=ChatResponseMessage(content=o.text),
                                                logprobs=self._logprobs(req, o.token_ids, o.logprobs),
                                                finish_reason=o.finish_reason, stop_reason=o.stop_reason)
                   for o in sorted(out.outputs, key=lambda o: o.index)]
        usage = usage_info(len(out.prompt_token_ids), sum(len(o.token_ids) for o in out.outputs))
        return ChatCompletionResponse(id=rid, created=created, model=model, choices=choices, usage=usage)

    async def _stream(self, req: ChatCompletionRequest, model: str, rid: str, created: int,
                      stream: RequestStream, num_prompt_tokens: int) -> AsyncIterator[str]:
        n = req.n
        sent_chars = [0] * n
        sent_tokens = [0] * n
        finished = [False] * n
        num_gen = [0] * n
        include_usage, continuous = stream_usage_flags(req.stream_options)

        def chunk(choices: list[ChatCompletionStreamChoice]) -> str:
            usage = usage_info(num_prompt_tokens, sum(num_gen)) if continuous else None
            return sse(ChatCompletionStreamResponse(id=rid, created=created, model=model, choices=choices, usage=usage))

        try:
            # the role first, as OpenAI does: one chunk with every choice
            yield chunk([ChatCompletionStreamChoice(index=i, delta=DeltaMessage(role="assistant", content=""))
                         for i in range(n)])
            async for _, out in merge_streams([stream]):
                choices = []
                for o in out.outputs:
                    i = o.index
                    if finished[i]:
                        continue
                    delta = text_delta(o.text, sent_chars[i])
                    sent_chars[i] += len(delta)
                    new_ids = o.token_ids[sent_tokens[i]:]
                    new_lps = o.logprobs[sent_tokens[i]:] if o.logprobs is not None else None
                    sent_tokens[i] = num_gen[i] = len(o.token_ids)
                    lp = self._logprobs(req, new_ids, new_lps) if new_lps else None
                    if not delta and lp is None and o.finish_reason is None:
                        continue
                    finished[i] = o.finish_reason is not None
                    choices.append(ChatCompletionStreamChoice(
                        index=i, delta=DeltaMessage(content=delta) if delta else DeltaMessage(), logprobs=lp,
                        finish_reason=o.finish_reason, stop_reason=o.stop_reason))
                if choices:
                    yield chunk(choices)
            if include_usage:
                yield sse(ChatCompletionStreamResponse(id=rid, created=created, model=model, choices=[],
                                                       usage=usage_info(num_prompt_tokens, sum(num_gen))))
        except Exception as e:  # noqa: BLE001 - the status line is sent already: report in-band
            logger.exception("chat stream %s failed", rid)
            err = e if isinstance(e, OpenAIServingError) else OpenAIServingError(str(e), status=500)
            yield sse(err.body())
        finally:  # also on cancellation (client disconnect): abort what is unfinished
            stream.close()
        yield SSE_DONE
