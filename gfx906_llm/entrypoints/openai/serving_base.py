"""What completions and chat completions share: model check, prompt checks, max_tokens, logprobs,
streams, server-sent events and client-disconnect handling (vLLM's ``serving_engine.py`` role).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel

from gfx906_llm.engine.async_engine import AsyncEngine, RequestStream
from gfx906_llm.entrypoints.openai.protocol import (ChatLogProb, ChatLogProbsContent, CompletionLogProbs,
                                                   OpenAIServingError, StreamOptions, UsageInfo)
from gfx906_llm.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

T = TypeVar("T")
_DONE = object()
_MIN_LOGPROB = -9999.0  # JSON has no -inf; vLLM clamps the same way


def sse(obj: BaseModel | dict) -> str:
    """One server-sent event: ``data: {json}\\n\\n`` (https://html.spec.whatwg.org/#server-sent-events)."""
    payload = obj.model_dump_json() if isinstance(obj, BaseModel) else json.dumps(obj)
    return f"data: {payload}\n\n"


SSE_DONE = "data: [DONE]\n\n"


def usage_info(prompt_tokens: int, completion_tokens: int) -> UsageInfo:
    return UsageInfo(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                     total_tokens=prompt_tokens + completion_tokens)


def stream_usage_flags(opts: StreamOptions | None) -> tuple[bool, bool]:
    """(usage in a last chunk, usage in every chunk too) from ``stream_options`` (vLLM's
    ``continuous_usage_stats`` extra)."""
    final = opts is not None and opts.include_usage
    return final, final and opts.continuous_usage_stats


def clamp_logprob(x: float) -> float:
    return _MIN_LOGPROB if math.isnan(x) or x < _MIN_LOGPROB else x


class OpenAIServing:
    """Base of the completion and chat handlers: one engine, the names it is served under."""

    def __init__(self, engine: AsyncEngine, served_model_names: list[str]):
        assert served_model_names, "at least one served model name"
        self.engine = engine
        self.served_model_names = list(served_model_names)

    # ---- checks ------------------------------------------------------------------------------
    def check_model(self, name: str | None) -> str:
        """The served name to answer with. Raises OpenAIServingError 404 for an unknown model
        (vLLM's status and message)."""
        if name is None or name == "":
            return self.served_model_names[0]
        if name not in self.served_model_names:
            raise OpenAIServingError(f"The model `{name}` does not exist.", status=404, param="model")
        return name

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    def tokenize(self, text: str, add_special_tokens: bool) -> list[int]:
        return list(self.engine.tokenizer(text, add_special_tokens=add_special_tokens).input_ids)

    def resolve_max_tokens(self, requested: int | None, prompt_len: int) -> int:
        """max_tokens for SamplingParams, checked against the context length like vLLM's
        ``_validate_input``.

        None means "up to the context length". Raises OpenAIServingError (400) when the prompt
        does not fit, when ``requested < 1``, or when prompt + requested exceeds max_model_len.
        """
        limit = self.max_model_len
        if requested is not None and requested < 1:
            raise OpenAIServingError(f"max_tokens must be at least 1, got {requested}.", param="max_tokens")
        if requested is None:
            if prompt_len >= limit:
                raise OpenAIServingError(
                    f"This model's maximum context length is {limit} tokens. However, your request has "
                    f"{prompt_len} input tokens. Please reduce the length of the input messages.", param="messages")
            return limit - prompt_len
        if prompt_len + requested > limit:
            raise OpenAIServingError(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_len + requested} tokens ({prompt_len} in the messages, {requested} in the completion). "
                f"Please reduce the length of the messages or completion.", param="max_tokens")
        return requested

    @staticmethod
    def request_id(prefix: str, raw: Request) -> str:
        """``prefix-<X-Request-Id header or a fresh uuid>`` (a reused id is a 400 from the engine)."""
        return f"{prefix}-{raw.headers.get('x-request-id') or uuid.uuid4().hex}"

    # ---- engine ------------------------------------------------------------------------------
    async def add_requests(self, base_id: str, prompts: Sequence[list[int]],
                           params: Sequence[SamplingParams]) -> list[RequestStream]:
        """Add one engine request per prompt (ids ``base_id-i``); all or none.

        Raises OpenAIServingError (400) for the engine's ValueError; EngineNotReadyError.
        """
        streams: list[RequestStream] = []
        try:
            for i, (ids, sp) in enumerate(zip(prompts, params)):
                streams.append(await self.engine.add_request(f"{base_id}-{i}", ids, sp))
        except BaseException as e:
            for s in streams:
                s.close()
            if isinstance(e, ValueError):
                raise OpenAIServingError(str(e)) from e
            raise  # EngineNotReadyError: 503 (api_server's handler)
        return streams

    # ---- logprobs ----------------------------------------------------------------------------
    def token_str(self, token_id: int, lp: Any = None) -> str:
        if lp is not None and lp.decoded_token is not None:
            return lp.decoded_token
        return self.engine.tokenizer.decode([token_id])

    def completion_logprobs(self, token_ids: Sequence[int], logprobs: Sequence[dict], text_offset: int,
                            ) -> CompletionLogProbs:
        """Legacy completions logprobs (tokens, token_logprobs, top_logprobs, text_offset)."""
        out = CompletionLogProbs()
        for tid, d in zip(token_ids, logprobs):
            sampled = d.get(tid)
            tok = self.token_str(tid, sampled)
            out.tokens.append(tok)
            out.token_logprobs.append(clamp_logprob(sampled.logprob) if sampled is not None else None)
            out.top_logprobs.append({self.token_str(t, lp): clamp_logprob(lp.logprob) for t, lp in d.items()})
            out.text_offset.append(text_offset)
            text_offset += len(tok)
        return out

    def chat_logprobs(self, token_ids: Sequence[int], logprobs: Sequence[dict], top_n: int,
                      ) -> list[ChatLogProbsContent]:
        """Chat logprobs: per token {token, logprob, bytes, top_logprobs: the top_n by logprob}."""
        out = []
        for tid, d in zip(token_ids, logprobs):
            sampled = d.get(tid)
            tok = self.token_str(tid, sampled)
            top = sorted(d.items(), key=lambda kv: -kv[1].logprob)[:top_n]
            out.append(ChatLogProbsContent(
                token=tok, logprob=clamp_logprob(sampled.logprob) if sampled is not None else _MIN_LOGPROB,
                bytes=list(tok.encode("utf-8")),
                top_logprobs=[ChatLogProb(token=(s := self.token_str(t, lp)), logprob=clamp_logprob(lp.logprob),
                                          bytes=list(s.encode("utf-8"))) for t, lp in top]))
        return out


def text_delta(text: str, sent: int) -> str:
    """New text of a cumulative string after ``sent`` characters were sent (never negative)."""
    return text[sent:] if len(text) > sent else ""


async def merge_streams(streams: Sequence[RequestStream]) -> AsyncIterator[tuple[int, Any]]:
    """Interleave several request streams, yielding ``(stream_index, output)`` as they come.

    Closing the iterator (or an error in one stream) closes every stream, aborting unfinished
    requests (vLLM's ``merge_async_iterators``).
    """
    try:
        if len(streams) == 1:
            async for out in streams[0]:
                yield 0, out
            return
        q: asyncio.Queue = asyncio.Queue()

        async def pump(i: int, s: RequestStream) -> None:
            try:
                async for out in s:
                    q.put_nowait((i, out))
                q.put_nowait((i, _DONE))
            except Exception as e:  # noqa: BLE001 - re-raised by the consumer
                q.put_nowait((i, e))

        tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
        try:
            remaining = len(streams)
            while remaining:
                i, item = await q.get()
                if item is _DONE:
                    remaining -= 1
                elif isinstance(item, Exception):
                    raise item
                else:
                    yield i, item
        finally:
            for t in tasks:
                t.cancel()
    finally:
        for s in streams:
            s.close()


async def _wait_for_disconnect(raw: Request) -> None:
    while True:
        message = await raw.receive()
        if message["type"] == "http.disconnect":
            return


async def run_unless_disconnected(coro: Awaitable[T], raw: Request) -> T | None:
    """Run ``coro`` (a non-streaming handler's work); if the client disconnects first, cancel it
    (which aborts its engine requests) and return None (vLLM's ``with_cancellation``)."""
    work = asyncio.ensure_future(coro)
    watcher = asyncio.ensure_future(_wait_for_disconnect(raw))
    try:
        done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        work.cancel()
        raise
    finally:
        watcher.cancel()
    if work in done:
        return work.result()
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work
    logger.info("client disconnected: request cancelled")
    return None
