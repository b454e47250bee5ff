"""Pydantic models of the OpenAI completions and chat-completions APIs (with vLLM's extras).

Field names, types and defaults follow the OpenAI API reference
(https://platform.openai.com/docs/api-reference/completions,
https://platform.openai.com/docs/api-reference/chat) and vLLM's ``entrypoints/openai/protocol.py``
for the extra sampling fields (top_k, min_p, repetition_penalty, min_tokens, ignore_eos,
stop_token_ids, skip_special_tokens, include_stop_str_in_output).

Errors are ``OpenAIServingError`` (status + OpenAI error body), raised for invalid values and
rendered by the API server as ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from gfx906_llm.sampling_params import MAX_LOGPROBS, SamplingParams

_ERROR_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError",
                405: "MethodNotAllowedError", 413: "RequestTooLargeError", 500: "InternalServerError",
                503: "ServiceUnavailableError"}


class OpenAIServingError(Exception):
    """An error answered with ``status`` and an OpenAI error body (types as vLLM names them)."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, err_type: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.err_type = err_type or _ERROR_TYPES.get(status, "Error")

    def body(self) -> dict[str, Any]:
        return ErrorResponse(error=ErrorInfo(message=self.message, type=self.err_type, param=self.param,
                                             code=self.status)).model_dump()


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int | str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class OpenAIBaseModel(BaseModel):
    # Unknown fields are accepted and ignored, as vLLM and OpenAI do.
    model_config = ConfigDict(extra="allow")


class StreamOptions(OpenAIBaseModel):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class _SamplingRequest(OpenAIBaseModel):
    """Fields shared by completions and chat completions."""

    model: str | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None  # OpenAI default 1.0
    top_p: float | None = None  # OpenAI default 1.0
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = 0.0
    frequency_penalty: float | None = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # vLLM extras
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    def check_common(self) -> None:
        """Request-level checks that do not need the prompt. Raises OpenAIServingError (400)."""
        if self.stream_options is not None and not self.stream:
            raise OpenAIServingError("Stream options can only be defined when `stream=True`.", param="stream_options")
        if self.logit_bias:
            raise OpenAIServingError("logit_bias is not supported.", param="logit_bias")
        if self.n < 1:
            raise OpenAIServingError(f"n must be at least 1, got {self.n}.", param="n")

    def build_sampling_params(self, max_tokens: int, logprobs: int | None) -> SamplingParams:
        """SamplingParams for this request; ``max_tokens`` already resolved against the prompt.

        Raises:
            OpenAIServingError: 400 naming the invalid field (SamplingParams' ValueError message).
        """
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        try:
            return SamplingParams(
                n=self.n,
                temperature=1.0 if self.temperature is None else self.temperature,
                top_p=1.0 if self.top_p is None else self.top_p,
                top_k=0 if self.top_k is None else self.top_k,
                min_p=0.0 if self.min_p is None else self.min_p,
                seed=self.seed,
                presence_penalty=self.presence_penalty or 0.0,
                frequency_penalty=self.frequency_penalty or 0.0,
                repetition_penalty=1.0 if self.repetition_penalty is None else self.repetition_penalty,
                max_tokens=max_tokens,
                min_tokens=self.min_tokens,
                stop=stop,
                stop_token_ids=list(self.stop_token_ids or []),
                ignore_eos=self.ignore_eos,
                logprobs=logprobs,
                skip_special_tokens=self.skip_special_tokens,
                include_stop_str_in_output=self.include_stop_str_in_output,
            )
        except ValueError as e:
            field = str(e).split(" ", 1)[0]
            raise OpenAIServingError(str(e), param=field if field in type(self).model_fields else None) from e


# ---- /v1/completions ---------------------------------------------------------------------------
class CompletionRequest(_SamplingRequest):
    # list[int] before list[str] so that token ids are not read as strings
    prompt: list[int] | list[list[int]] | str | list[str]
    max_tokens: int | None = 16
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None
    best_of: int | None = None

    def check(self) -> None:
        self.check_common()
        if self.suffix:
            raise OpenAIServingError("suffix is not supported.", param="suffix")
        if self.best_of is not None and self.best_of != self.n:
            raise OpenAIServingError(f"best_of ({self.best_of}) different from n ({self.n}) is not supported.",
                                     param="best_of")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise OpenAIServingError(f"logprobs must be in [0, {MAX_LOGPROBS}], got {self.logprobs}.",
                                     param="logprobs")
        if self.echo and self.logprobs is not None:
            raise OpenAIServingError("echo with logprobs is not supported (prompt logprobs are not computed).",
                                     param="echo")

    def prompts(self) -> list[str | list[int]]:
        """The prompts as a list (one entry per prompt). Raises OpenAIServingError if empty."""
        p = self.prompt
        if isinstance(p, str):
            out: list = [p]
        elif p and isinstance(p[0], int):
            out = [list(p)]
        else:
            out = list(p)
        if not out or any(len(x) == 0 for x in out):
            raise OpenAIServingError("prompt must be non-empty.", param="prompt")
        return out


class CompletionLogProbs(OpenAIBaseModel):
    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class UsageInfo(OpenAIBaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class CompletionResponseChoice(OpenAIBaseModel):
    index: int
    text: str
    logprobs: CompletionLogProbs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class CompletionResponse(OpenAIBaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionResponseChoice]
    usage: UsageInfo | None = None


class CompletionStreamResponse(CompletionResponse):
    pass


# ---- /v1/chat/completions ----------------------------------------------------------------------
class ChatContentPart(OpenAIBaseModel):
    type: str
    text: str | None = None


class ChatMessage(OpenAIBaseModel):
    role: str
    content: str | list[ChatContentPart] | None = None
    name: str | None = None

    def to_template(self) -> dict[str, Any]:
        """The message as chat templates expect it: text parts joined with newlines.

        Raises OpenAIServingError for non-text parts (images, audio are not supported).
        """
        content = self.content
        if isinstance(content, list):
            texts = []
            for part in content:
                if part.type != "text" or part.text is None:
                    raise OpenAIServingError(f"Unsupported content part type {part.type!r}: only 'text' is supported.",
                                             param="messages")
                texts.append(part.text)
            content = "\n".join(texts)
        msg: dict[str, Any] = {"role": self.role, "content": content if content is not None else ""}
        if self.name is not None:
            msg["name"] = self.name
        return msg


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    # vLLM extras
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] | None = None

    def check(self) -> None:
        self.check_common()
        if not self.messages:
            raise OpenAIServingError("messages must be a non-empty list.", param="messages")
        if self.top_logprobs is not None:
            if not self.logprobs:
                raise OpenAIServingError("top_logprobs requires logprobs to be true.", param="top_logprobs")
            if not 0 <= self.top_logprobs <= MAX_LOGPROBS:
                raise OpenAIServingError(f"top_logprobs must be in [0, {MAX_LOGPROBS}], got {self.top_logprobs}.",
                                         param="top_logprobs")
        if self.tools:
            raise OpenAIServingError("tools are not supported.", param="tools")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise OpenAIServingError("response_format other than {'type': 'text'} is not supported.",
                                     param="response_format")
        if self.add_generation_prompt and self.continue_final_message:
            raise OpenAIServingError("add_generation_prompt and continue_final_message cannot both be true.",
                                     param="continue_final_message")

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def sampling_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class ChatLogProb(OpenAIBaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatLogProbsContent(ChatLogProb):
    top_logprobs: list[ChatLogProb] = Field(default_factory=list)


class ChatChoiceLogProbs(OpenAIBaseModel):
    content: list[ChatLogProbsContent] | None = None


class ChatResponseMessage(OpenAIBaseModel):
    role: str = "assistant"
    content: str | None = None


class ChatCompletionResponseChoice(OpenAIBaseModel):
    index: int
    message: ChatResponseMessage
    logprobs: ChatChoiceLogProbs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class ChatCompletionResponse(OpenAIBaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatCompletionResponseChoice]
    usage: UsageInfo | None = None


class DeltaMessage(OpenAIBaseModel):
    role: str | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: Any) -> dict[str, Any]:
        # OpenAI sends only the fields a delta carries: {"content": "..."} or {}
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatCompletionStreamChoice(OpenAIBaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChatChoiceLogProbs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class ChatCompletionStreamResponse(OpenAIBaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatCompletionStreamChoice]
    usage: UsageInfo | None = None


# ---- /v1/models ----------------------------------------------------------------------------------
class ModelCard(OpenAIBaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "gfx906-llm"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None


class ModelList(OpenAIBaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(default_factory=list)
