"""AsyncEngine: one LLMEngine driven by one background thread, for asyncio callers.

LLMEngine is not thread-safe, so exactly one thread (the *loop thread*, started by ``start()``)
ever touches it: it builds the engine (model load), then repeats

    drain the command queue (add / abort requests)  ->  engine.step()  ->  hand outputs out

and blocks on the command queue when the engine has nothing to do (no busy spin). Callers on any
asyncio event loop talk to it through a thread-safe ``queue.Queue`` of commands; each request's
outputs come back through its own ``asyncio.Queue``, fed with ``loop.call_soon_threadsafe``
(one call per event loop per step). The shape follows vLLM's AsyncLLMEngine / V1 AsyncLLM
(``generate()`` yielding cumulative ``RequestOutput``s, abort on consumer cancellation).

Failure model:
- ``add_request`` errors (ValueError for bad prompts or parameters) are raised to the caller of
  ``add_request()`` / ``generate()`` unchanged.
- An exception in ``engine.step()`` is logged, every in-flight request is failed with
  ``EngineStepError`` (and aborted in the engine to free its blocks), and the loop keeps running.
- An exception while building the engine is kept in ``load_error``; ``wait_ready()`` raises it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gfx906_llm.config import EngineConfig
    from gfx906_llm.engine.engine import LLMEngine
    from gfx906_llm.outputs import RequestOutput
    from gfx906_llm.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

_ABORTED = object()  # stream sentinel: aborted and the engine emitted no final output for it
_STOP = object()  # command-queue sentinel: leave the loop


class EngineStepError(RuntimeError):
    """The engine failed while serving this request (an exception inside ``LLMEngine.step``)."""


class EngineNotReadyError(RuntimeError):
    """The engine is still loading, failed to load, or has been shut down."""


@dataclass
class _AddCommand:
    request_id: str
    prompt: str | list[int]
    params: SamplingParams
    arrival_time: float
    stream: RequestStream
    accepted: asyncio.Future  # resolved (result None or the add_request exception) on stream._loop


class RequestStream:
    """Async iterator over one request's cumulative ``RequestOutput``s.

    Ends after the output with ``finished=True`` (or silently after an abort the engine did not
    report). Raises ``EngineStepError`` if the engine failed. Cancelling the consumer, or calling
    ``close()`` before the end, aborts the request in the engine (frees its KV blocks).
    Outputs are cumulative, so a slow consumer only sees the newest unfinished output.
    """

    def __init__(self, request_id: str, loop: asyncio.AbstractEventLoop, abort: Callable[[str], None]):
        self.request_id = request_id
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self._abort = abort
        self.finished = False

    def _put(self, item: Any) -> None:  # on the event loop
        self._queue.put_nowait(item)

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> RequestOutput:
        if self.finished:
            raise StopAsyncIteration
        try:
            item = await self._queue.get()
        except BaseException:  # cancelled: the consumer is gone
            self.close()
            raise
        while not self._queue.empty() and getattr(item, "finished", True) is False:
            item = self._queue.get_nowait()  # coalesce: outputs are cumulative
        self.finished = getattr(item, "finished", True)  # sentinels and errors end the stream
        if item is _ABORTED:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop consuming; aborts the request if it has not finished. Idempotent."""
        if not self.finished:
            self.finished = True
            self._abort(self.request_id)


class AsyncEngine:
    """Runs an ``LLMEngine`` in a dedicated thread and serves asyncio callers.

    Args:
        engine_factory: builds the LLMEngine; called once, inside the loop thread.
        observers: objects with ``on_step(outputs: list[RequestOutput])`` and
            ``on_abort(request_id: str)``, called in the loop thread (metrics). Their exceptions
            are logged and ignored.
    """

    def __init__(self, engine_factory: Callable[[], LLMEngine], observers: Iterable[Any] = ()):
        self._factory = engine_factory
        self._observers = list(observers)
        self._engine: LLMEngine | None = None
        self._cmds: queue.Queue = queue.Queue()
        self._streams: dict[str, RequestStream] = {}  # loop thread only
        self._aborted: set[str] = set()  # loop thread only: aborted, final output pending
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._stats = None
        self.load_error: BaseException | None = None
        self.load_seconds: float | None = None
        self.num_step_errors = 0

    @classmethod
    def from_config(cls, config: EngineConfig, observers: Iterable[Any] = ()) -> AsyncEngine:
        """An AsyncEngine whose loop thread builds ``LLMEngine(config)``."""

        def factory() -> LLMEngine:
            from gfx906_llm.engine.engine import LLMEngine

            return LLMEngine(config)

        return cls(factory, observers)

    def add_observer(self, observer: Any) -> None:
        """Register an observer (see class doc); safe at any time (the list is replaced, not mutated)."""
        self._observers = [*self._observers, observer]

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the loop thread (which builds the engine). Returns at once; see ``wait_ready``."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="gfx906-llm-engine", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the engine is built. Raises its load error, or TimeoutError."""
        if not self._ready.wait(timeout):
            raise TimeoutError(f"engine not ready after {timeout} s")
        if self.load_error is not None:
            raise EngineNotReadyError(f"engine failed to load: {self.load_error!r}") from self.load_error

    @property
    def is_ready(self) -> bool:
        """True while the engine is built and the loop thread is alive."""
        return (self._ready.is_set() and self.load_error is None and not self._stopped.is_set()
                and self._thread is not None and self._thread.is_alive())

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the loop thread; in-flight requests fail with EngineNotReadyError."""
        if self._thread is None:
            return
        self._cmds.put(_STOP)
        self._thread.join(timeout)

    # ---- engine properties (read-only after load) --------------------------------------------
    def _loaded(self) -> LLMEngine:
        if self._engine is None:
            raise EngineNotReadyError("engine is not loaded")
        return self._engine

    @property
    def tokenizer(self):
        return self._loaded().tokenizer

    @property
    def model_config(self):
        return self._loaded().model_config

    @property
    def config(self):
        return self._loaded().config

    @property
    def max_model_len(self) -> int:
        """The context length the engine enforces (may be below the model's, see LLMEngine)."""
        return self._loaded().max_model_len

    @property
    def model_name(self) -> str:
        """The engine's default served model name."""
        return self._loaded().model_name

    def get_stats(self):
        """The engine's ``EngineStats`` as of the last step or idle point (a snapshot taken by the
        loop thread, so reading it never touches the engine); None before load."""
        return self._stats

    # ---- requests ----------------------------------------------------------------------------
    async def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams,
                          arrival_time: float | None = None) -> RequestStream:
        """Queue a request and wait until the engine accepted it.

        Returns its ``RequestStream``. Raises what ``LLMEngine.add_request`` raises (ValueError
        for a bad prompt or parameters), or EngineNotReadyError.
        """
        if not self.is_ready:
            raise EngineNotReadyError("engine is not ready (loading, failed, or shut down)")
        loop = asyncio.get_running_loop()
        stream = RequestStream(request_id, loop, self.abort_nowait)
        cmd = _AddCommand(request_id, prompt, params, time.monotonic() if arrival_time is None else arrival_time,
                          stream, loop.create_future())
        self._cmds.put(cmd)
        try:
            await cmd.accepted
        except asyncio.CancelledError:
            self.abort_nowait(request_id)  # it may be added after all: abort (queued after the add)
            raise
        return stream

    async def generate(self, prompt: str | list[int], params: SamplingParams,
                       request_id: str) -> AsyncIterator[RequestOutput]:
        """Yield the request's cumulative RequestOutputs until it finishes.

        Raises ValueError from ``add_request`` (bad input) and EngineStepError (engine failure).
        Closing or cancelling the iterator aborts the request.
        """
        stream = await self.add_request(request_id, prompt, params)
        try:
            async for out in stream:
                yield out
        finally:
            stream.close()

    def abort_nowait(self, request_id: str) -> None:
        """Thread-safe, non-blocking abort; unknown or finished ids are ignored."""
        self._cmds.put(("abort", request_id))

    async def abort(self, request_id: str) -> None:
        """Abort a request (frees its blocks); its consumer gets a final "abort" output."""
        self.abort_nowait(request_id)

    # ---- the loop thread ---------------------------------------------------------------------
    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            self._engine = self._factory()
            self._stats = self._engine.get_stats()
        except BaseException as e:  # noqa: BLE001 - reported through wait_ready / health
            logger.exception("engine failed to load")
            self.load_error = e
            self._ready.set()
            self._stopped.set()
            return
        self.load_seconds = time.monotonic() - t0
        self._ready.set()
        try:
            while True:
                if not self._drain_commands(block=not self._has_work()):
                    break
                if self._has_work():
                    self._step()
        finally:
            self._stopped.set()
            err = EngineNotReadyError("engine shut down")
            self._fail_all(err)
            while True:  # callers still waiting for their add to be accepted
                try:
                    cmd = self._cmds.get_nowait()
                except queue.Empty:
                    break
                if isinstance(cmd, _AddCommand):
                    _call_soon(cmd.stream._loop, _resolve, cmd.accepted, err)

    def _has_work(self) -> bool:
        return bool(self._aborted) or self._engine.has_unfinished_requests()

    def _drain_commands(self, block: bool) -> bool:
        """Apply queued commands; blocks for the first one when ``block``. False on shutdown."""
        try:
            cmd = self._cmds.get(block=block)
            while True:
                if cmd is _STOP:
                    return False
                if isinstance(cmd, _AddCommand):
                    self._add(cmd)
                else:
                    self._abort(cmd[1])
                cmd = self._cmds.get_nowait()
        except queue.Empty:
            pass
        if not self._has_work():
            self._refresh_stats()
        return True

    def _add(self, cmd: _AddCommand) -> None:
        loop = cmd.stream._loop
        try:
            self._engine.add_request(cmd.request_id, cmd.prompt, cmd.params, arrival_time=cmd.arrival_time)
        except Exception as e:  # noqa: BLE001 - handed to the caller
            _call_soon(loop, _resolve, cmd.accepted, e)
            return
        self._streams[cmd.request_id] = cmd.stream
        _call_soon(loop, _resolve, cmd.accepted, None)

    def _abort(self, request_id: str) -> None:
        if request_id not in self._streams:
            return  # finished, unknown, or rejected: nothing to free
        try:
            self._engine.abort_request(request_id)
        except Exception:  # noqa: BLE001
            logger.exception("abort_request(%s) failed", request_id)
        self._aborted.add(request_id)

    def _step(self) -> None:
        try:
            outputs = self._engine.step() if self._engine.has_unfinished_requests() else []
        except Exception as e:  # noqa: BLE001 - keep serving
            self.num_step_errors += 1
            logger.exception("engine step failed; failing %d in-flight request(s)", len(self._streams))
            ids = list(self._streams)
            self._fail_all(EngineStepError(f"engine step failed: {e!r}"))
            for cleanup in (self._engine.recover_from_failed_step, lambda: self._engine.abort_request(ids)):
                try:  # each on its own: the requests' blocks are freed even if the recovery fails
                    cleanup()
                except Exception:  # noqa: BLE001
                    logger.exception("cleanup after a failed step failed too")
            self._refresh_stats()
            return
        batches: dict[asyncio.AbstractEventLoop, list] = {}
        delivered = []  # outputs of requests still tracked (not those already failed or ended)
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if stream is None:
                continue
            delivered.append(out)
            batches.setdefault(stream._loop, []).append((stream, out))
            if out.finished:
                del self._streams[out.request_id]
                self._aborted.discard(out.request_id)
        for rid in self._aborted:  # aborted but no final output from the engine: end the stream
            stream = self._streams.pop(rid, None)
            if stream is not None:
                batches.setdefault(stream._loop, []).append((stream, _ABORTED))
                self._notify("on_abort", rid)
        self._aborted.clear()
        if delivered:  # observers first: metrics are up to date when a client sees its end
            self._notify("on_step", delivered)
        for loop, items in batches.items():
            _call_soon(loop, _deliver, items)
        self._refresh_stats()

    def _notify(self, method: str, arg: Any) -> None:
        for obs in self._observers:
            try:
                getattr(obs, method)(arg)
            except Exception:  # noqa: BLE001
                logger.exception("observer %r.%s failed", obs, method)

    def _fail_all(self, err: BaseException) -> None:
        for rid, stream in list(self._streams.items()):
            _call_soon(stream._loop, stream._put, err)
            self._notify("on_abort", rid)
        self._streams.clear()
        self._aborted.clear()

    def _refresh_stats(self) -> None:
        try:
            self._stats = self._engine.get_stats()
        except Exception:  # noqa: BLE001
            logger.exception("get_stats failed")


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable, *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the caller's event loop is closed: nobody is listening
        pass


def _resolve(fut: asyncio.Future, exc: BaseException | None) -> None:
    if not fut.done():  # done: the caller was cancelled meanwhile
        fut.set_result(None) if exc is None else fut.set_exception(exc)


def _deliver(items: list) -> None:
    for stream, item in items:
        stream._put(item)
