"""AsyncEngine around an LLMEngine stand-in that records which thread calls it and can fail on
demand (the real engine is exercised through the server in tests/entrypoints/)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gfx906_llm.engine.async_engine import AsyncEngine, EngineNotReadyError, EngineStepError
from gfx906_llm.outputs import CompletionOutput, RequestMetrics, RequestOutput
from gfx906_llm.sampling_params import SamplingParams


class StandInEngine:
    """LLMEngine's interface: one token per request per step, blocks held until finish or abort
    (then a final ``abort`` output on the next step, as LLMEngine does)."""

    max_model_len = 64
    model_name = "stand-in"
    tokenizer = None
    model_config = None
    config = None

    def __init__(self, num_blocks: int = 32):
        self.num_blocks = num_blocks
        self.reqs: dict[str, tuple[list[int], SamplingParams, list[int]]] = {}
        self.pending: list[RequestOutput] = []
        self.aborted: list[str] = []
        self.recoveries = 0
        self.fail_steps = 0
        self.threads: set[int] = set()
        self.calls = 0
        self.step_delay = 0.0

    def _touch(self) -> None:
        self.threads.add(threading.get_ident())
        self.calls += 1

    def _out(self, rid: str, reason: str | None) -> RequestOutput:
        prompt, _, gen = self.reqs[rid]
        comp = CompletionOutput(0, "".join(f"<{t}>" for t in gen), list(gen), None, None, reason)
        return RequestOutput(rid, None, list(prompt), [comp], reason is not None, RequestMetrics(0.0))

    def add_request(self, request_id, prompt, params, arrival_time=None):
        self._touch()
        if request_id in self.reqs:
            raise ValueError(f"request id {request_id!r} is already in use")
        if not prompt:
            raise ValueError("the prompt is empty")
        self.reqs[request_id] = (list(prompt), params, [])

    def abort_request(self, request_ids):
        self._touch()
        for rid in [request_ids] if isinstance(request_ids, str) else list(request_ids):
            if rid in self.reqs:
                self.aborted.append(rid)
                self.pending.append(self._out(rid, "abort"))
                del self.reqs[rid]

    def has_unfinished_requests(self):
        self._touch()
        return bool(self.reqs) or bool(self.pending)

    def recover_from_failed_step(self):
        self.recoveries += 1

    def step(self):
        self._touch()
        if self.step_delay:
            time.sleep(self.step_delay)
        if self.fail_steps:
            self.fail_steps -= 1
            raise RuntimeError("injected step failure")
        outs, self.pending = self.pending, []
        for rid, (prompt, params, gen) in list(self.reqs.items()):
            gen.append(len(gen))
            done = len(gen) >= params.max_tokens
            outs.append(self._out(rid, "length" if done else None))
            if done:
                del self.reqs[rid]
        return outs

    def get_stats(self):
        self._touch()
        return {"num_running": len(self.reqs), "used_blocks": len(self.reqs)}


@pytest.fixture
def engine():
    stand_in = StandInEngine()
    eng = AsyncEngine(lambda: stand_in)
    eng.start()
    eng.wait_ready(timeout=10)
    yield eng, stand_in
    eng.shutdown()
    assert len(stand_in.threads) == 1  # every LLMEngine call came from the one loop thread
    assert stand_in.threads != {threading.get_ident()}


async def _collect(eng: AsyncEngine, rid: str, max_tokens: int) -> list[RequestOutput]:
    return [o async for o in eng.generate([1, 2, 3], SamplingParams(max_tokens=max_tokens), rid)]


def test_generate_many_concurrent(engine):
    eng, stand_in = engine

    async def main():
        return await asyncio.gather(*(_collect(eng, f"r{i}", 2 + i % 5) for i in range(12)))

    results = asyncio.run(main())
    for i, outs in enumerate(results):
        final = outs[-1]
        assert final.finished and final.request_id == f"r{i}"
        assert final.outputs[0].token_ids == list(range(2 + i % 5))
        assert all(not o.finished for o in outs[:-1])
    assert not stand_in.reqs and eng.get_stats()["num_running"] == 0


def test_add_request_value_error_reaches_caller(engine):
    eng, stand_in = engine

    async def main():
        with pytest.raises(ValueError, match="empty"):
            async for _ in eng.generate([], SamplingParams(max_tokens=2), "empty"):
                pass
        stream = await eng.add_request("dup", [1], SamplingParams(max_tokens=1000))
        with pytest.raises(ValueError, match="already in use"):
            await eng.add_request("dup", [1], SamplingParams(max_tokens=3))
        assert not (await stream.__anext__()).finished  # the first "dup" runs on
        stream.close()

    stand_in.step_delay = 0.005
    asyncio.run(main())


def test_consumer_cancel_and_close_abort(engine):
    eng, stand_in = engine
    stand_in.step_delay = 0.01

    async def main():
        gen = eng.generate([1], SamplingParams(max_tokens=50), "closed")
        first = await gen.__anext__()
        assert not first.finished
        await gen.aclose()  # the consumer stops reading (client disconnect)

        async def consume():
            async for _ in eng.generate([1], SamplingParams(max_tokens=50), "cancelled"):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):
            if not stand_in.reqs:
                break
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert sorted(stand_in.aborted) == ["cancelled", "closed"]
    assert not stand_in.reqs


def test_explicit_abort_ends_stream(engine):
    eng, stand_in = engine
    stand_in.step_delay = 0.01

    async def main():
        stream = await eng.add_request("a", [1], SamplingParams(max_tokens=50))
        await stream.__anext__()
        await eng.abort("a")
        return [o async for o in stream]

    rest = asyncio.run(main())
    assert rest[-1].finished and rest[-1].outputs[0].finish_reason == "abort"
    assert stand_in.aborted == ["a"]


class Recorder:
    """An observer: which requests it saw finish (on_step) or end without output (on_abort)."""

    def __init__(self):
        self.finished: list[str] = []
        self.aborted: list[str] = []

    def on_step(self, outputs):
        self.finished += [o.request_id for o in outputs if o.finished]

    def on_abort(self, request_id):
        self.aborted.append(request_id)


def test_step_failure_fails_requests_and_loop_survives(engine):
    eng, stand_in = engine
    rec = Recorder()
    eng.add_observer(rec)

    async def main():
        stand_in.fail_steps = 1  # the next step, the first after this add
        stream = await eng.add_request("x", [1], SamplingParams(max_tokens=5))
        with pytest.raises(EngineStepError, match="injected"):
            async for _ in stream:
                pass
        return await _collect(eng, "after", 2)

    outs = asyncio.run(main())
    assert outs[-1].finished and eng.num_step_errors == 1 and eng.is_ready
    assert stand_in.aborted == ["x"]  # the failed request's blocks were freed
    assert stand_in.recoveries == 1  # the engine's own state (accumulators, step launched ahead)
    # counted once: failed (on_abort), not again when the engine reports its abort output
    assert rec.aborted == ["x"] and rec.finished == ["after"]


def test_idle_loop_does_not_spin(engine):
    eng, stand_in = engine
    asyncio.run(_collect(eng, "warm", 2))
    time.sleep(0.05)
    before = stand_in.calls
    time.sleep(0.3)
    assert stand_in.calls == before  # blocked on the command queue, not polling the engine


def test_load_error_and_shutdown():
    def broken():
        raise OSError("no such model")

    eng = AsyncEngine(broken)
    eng.start()
    with pytest.raises(EngineNotReadyError, match="no such model"):
        eng.wait_ready(timeout=10)
    assert not eng.is_ready

    stand_in = StandInEngine()
    stand_in.step_delay = 0.01
    eng = AsyncEngine(lambda: stand_in)
    eng.start()
    eng.wait_ready(timeout=10)

    async def main():
        stream = await eng.add_request("s", [1], SamplingParams(max_tokens=1000))
        await stream.__anext__()
        await asyncio.to_thread(eng.shutdown)
        with pytest.raises(EngineNotReadyError):
            async for _ in stream:
                pass
        with pytest.raises(EngineNotReadyError):
            await eng.add_request("t", [1], SamplingParams(max_tokens=1))

    asyncio.run(main())
    assert not eng.is_ready
