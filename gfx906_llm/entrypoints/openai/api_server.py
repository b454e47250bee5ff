"""The OpenAI-compatible HTTP server (FastAPI + uvicorn), vLLM's ``vllm serve`` in small.

Routes: GET /v1/models, POST /v1/completions, POST /v1/chat/completions, GET /health,
GET /version, GET /metrics (Prometheus). With ``--api-key``, every /v1/* request needs
``Authorization: Bearer <key>`` (401 otherwise), as in vLLM. Every error is an OpenAI error
body ``{"error": {"message", "type", "param", "code"}}`` with its HTTP status: malformed JSON
and wrong field types are 400 (not FastAPI's 422), an unknown model is 404 (vLLM's message).

Run: ``gfx906-llm serve MODEL`` or ``python -m gfx906_llm.entrypoints.openai.api_server MODEL``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import time
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

import gfx906_llm
from gfx906_llm.engine.async_engine import AsyncEngine, EngineNotReadyError, EngineStepError
from gfx906_llm.entrypoints.metrics import CONTENT_TYPE, ServerMetrics
from gfx906_llm.entrypoints.openai.protocol import (ChatCompletionRequest, CompletionRequest, ModelCard, ModelList,
                                                   OpenAIServingError)
from gfx906_llm.entrypoints.openai.serving_chat import OpenAIServingChat
from gfx906_llm.entrypoints.openai.serving_completion import OpenAIServingCompletion

logger = logging.getLogger("gfx906_llm.api_server")
T = TypeVar("T", bound=BaseModel)


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(OpenAIServingError(message, status=status, param=param).body(), status_code=status)


class _BearerAuth:
    """Pure ASGI middleware: /v1/* needs ``Authorization: Bearer <api_key>`` (checked before the
    body is parsed; a pure ASGI layer leaves streaming and disconnect handling untouched)."""

    def __init__(self, app: Any, api_key: str):
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1") and scope.get("method") != "OPTIONS":
            got = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not secrets.compare_digest(got, self.expected):
                await _error(401, "Invalid or missing API key: send 'Authorization: Bearer <key>'.")(
                    scope, receive, send)
                return
        await self.app(scope, receive, send)


def _validation_message(errs: list[dict]) -> tuple[str, str | None]:
    """(message, param) of pydantic / FastAPI validation errors: the first field is the param."""
    if not errs:
        return "Invalid request.", None

    def where(er: dict) -> str:
        return ".".join(str(x) for x in er.get("loc", ()) if x != "body")

    msg = "; ".join(f"{where(er) or 'body'}: {er.get('msg')}" for er in errs[:5])
    return f"Invalid request: {msg}", where(errs[0]).split(".")[0] or None


async def parse_body(raw: Request, model: type[T]) -> T:
    """The JSON body validated as ``model`` (any content type, like OpenAI's servers).

    Raises OpenAIServingError (400): body not JSON, not an object, or fields of the wrong type.
    """
    body = await raw.body()
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OpenAIServingError(f"Invalid JSON body: {e}") from e
    if not isinstance(data, dict):
        raise OpenAIServingError(f"The request body must be a JSON object, got {type(data).__name__}.")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        msg, param = _validation_message(e.errors())
        raise OpenAIServingError(msg, param=param) from e


def build_app(engine: AsyncEngine, served_model_names: list[str], api_key: str | None = None,
              metrics: ServerMetrics | None = None) -> FastAPI:
    """The FastAPI application serving ``engine`` under ``served_model_names``.

    ``metrics``: the ServerMetrics already observing the engine; when None one is created and
    registered with ``engine.add_observer``.
    """
    if not served_model_names:
        raise ValueError("served_model_names must name at least one model")
    if metrics is None:
        metrics = ServerMetrics(served_model_names[0])
        engine.add_observer(metrics)
    app = FastAPI(title="gfx906-llm", version=gfx906_llm.__version__, docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.state.metrics = metrics
    completion = OpenAIServingCompletion(engine, served_model_names)
    chat = OpenAIServingChat(engine, served_model_names)
    if api_key:
        app.add_middleware(_BearerAuth, api_key=api_key)

    @app.exception_handler(OpenAIServingError)
    async def _serving_error(_: Request, exc: OpenAIServingError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        msg, param = _validation_message(list(exc.errors()))
        return _error(400, msg, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(EngineStepError)
    async def _engine_error(_: Request, exc: EngineStepError) -> JSONResponse:
        return _error(500, f"The engine failed while serving this request: {exc}")

    @app.exception_handler(EngineNotReadyError)
    async def _not_ready(_: Request, exc: EngineNotReadyError) -> JSONResponse:
        return _error(503, str(exc))

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return _error(500, f"Internal server error: {exc!r}")

    @app.get("/health")
    async def health() -> Response:
        if engine.is_ready:
            return Response(status_code=200)
        return _error(503, "The engine is not ready (loading, failed or shut down).")

    @app.get("/version")
    async def version() -> dict[str, str]:
        return {"version": gfx906_llm.__version__}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        metrics.update_from_stats(engine.get_stats(), engine.num_step_errors)
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models() -> ModelList:
        root = engine.config.model
        return ModelList(data=[ModelCard(id=name, root=root, max_model_len=engine.max_model_len)
                               for name in served_model_names])

    @app.post("/v1/completions")
    async def completions(raw: Request) -> Response:
        return await completion.create_completion(await parse_body(raw, CompletionRequest), raw)

    @app.post("/v1/chat/completions")
    async def chat_completions(raw: Request) -> Response:
        return await chat.create_chat_completion(await parse_body(raw, ChatCompletionRequest), raw)

    return app


# ---- command line ------------------------------------------------------------------------------
def add_server_args(parser: argparse.ArgumentParser) -> None:
    """The HTTP flags (vLLM's names): --host, --port, --api-key, --uvicorn-log-level."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--api-key", default=os.environ.get("GFX906_LLM_API_KEY"),
                        help="require 'Authorization: Bearer KEY' on /v1/* (default: $GFX906_LLM_API_KEY)")
    parser.add_argument("--uvicorn-log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug", "trace"])


def make_arg_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """``serve``'s full parser: MODEL (positional, optional), server flags, engine flags."""
    from gfx906_llm.config import EngineConfig

    parser = parser or argparse.ArgumentParser(prog="gfx906-llm serve",
                                               description="OpenAI-compatible server for gfx906-llm")
    parser.add_argument("model", nargs="?", default=None,
                        help="HF folder, .gguf file or demo-model name (default: the SmolLM2 demo)")
    add_server_args(parser)
    EngineConfig.add_cli_args(parser)
    return parser


class _Server(uvicorn.Server):
    """uvicorn.Server that logs the ready line once the socket is bound."""

    def __init__(self, config: uvicorn.Config, t0: float, model: str, load_s: float | None):
        super().__init__(config)
        self._t0, self._model, self._load_s = t0, model, load_s

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            cfg = self.config
            age = _process_age_s()
            since = "process start" if age is not None else "run_server"
            logger.info("gfx906-llm %s ready on http://%s:%d serving %s: %.1f s from %s to ready "
                        "(engine load %.1f s)", gfx906_llm.__version__, cfg.host, cfg.port, self._model,
                        age if age is not None else time.monotonic() - self._t0, since, self._load_s or 0.0)


def _process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc, proc(5): stat field 22 ``starttime``)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_server(args: argparse.Namespace) -> None:
    """Load the engine (blocking), then serve until interrupted.

    ``args``: host, port, api_key, served_model_name and the EngineConfig fields.
    Raises the engine's load error (wrapped in EngineNotReadyError).
    """
    from gfx906_llm.config import EngineConfig

    t0 = time.monotonic()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = EngineConfig.from_cli_args(args)
    names = list(getattr(args, "served_model_name", None) or config.served_model_name or [])
    engine = AsyncEngine.from_config(config)
    engine.start()
    engine.wait_ready()
    if not names:
        names = [engine.model_name]
    metrics = ServerMetrics(names[0])
    engine.add_observer(metrics)
    app = build_app(engine, names, getattr(args, "api_key", None), metrics)
    uv_config = uvicorn.Config(app, host=getattr(args, "host", "127.0.0.1"), port=getattr(args, "port", 8000),
                               log_level=getattr(args, "uvicorn_log_level", "info"), timeout_graceful_shutdown=5)
    try:
        _Server(uv_config, t0, names[0], engine.load_seconds).run()
    finally:
        engine.shutdown()


def main(argv: list[str] | None = None) -> None:
    run_server(make_arg_parser().parse_args(argv))


if __name__ == "__main__":
    main()
