"""Async scheduling (decode step N+1 launched before step N's tokens reach the host) gives the
same outputs as the synchronous engine, call for call: tokens, text, logprobs, finish reasons,
usage; with arrivals mid-decode (drain path), aborts while a step is in flight, length limits,
and penalties (synchronous fallback). Real SmolLM2 model on the CPU, where DecodeGraphs runs the
padded decode step eagerly; both modes use the same padded buffers, only
``engine.async_scheduling`` changes between runs."""

from __future__ import annotations

import asyncio
import random

import pytest
import torch

from gfx906_llm.llm import LLM
from gfx906_llm.sampling_params import SamplingParams

PROMPTS = ["The capital of France is", "def add(a, b):\n    return", "1, 2, 3, 4,", "The quick brown fox",
           "Water boils at"]


@pytest.fixture(scope="module")
def llm(smollm2_gguf_path):
    llm = LLM(str(smollm2_gguf_path), max_model_len=128, kv_cache_memory_bytes=1 << 24, device="cpu",
              max_num_seqs=8, async_scheduling=True)
    assert llm.engine.async_scheduling and llm.engine.runner.graphs is not None
    assert not llm.engine.runner.graphs.graphs  # CPU: the padded step runs eagerly
    return llm


def _drive(llm: LLM, async_on: bool, arrivals: dict[int, list[tuple]], aborts: dict[int, list[str]] = {}):
    """Step the engine; before call i add ``arrivals[i]`` (rid, prompt, params) and abort
    ``aborts[i]``. Returns (per-call records, final outputs by id, async launches, in-flight rows
    at each abort)."""
    e = llm.engine
    e.async_scheduling = async_on
    launches0 = e.num_async_launches
    calls, finals, inflight_at_abort = [], {}, []
    i = 0
    while e.has_unfinished_requests() or any(k >= i for k in (*arrivals, *aborts)):
        for rid, prompt, params in arrivals.get(i, []):
            e.add_request(rid, prompt, params)
        if i in aborts:
            inflight_at_abort.append({s.request.request_id for s in e._inflight[0].scheduled} if e._inflight else set())
            e.abort_request(aborts[i])
        rec = []
        for o in e.step():
            rec.append((o.request_id, o.finished, o.metrics.num_generation_tokens,
                        [(c.index, c.text, list(c.token_ids), c.finish_reason, c.stop_reason) for c in o.outputs]))
            if o.finished:
                finals[o.request_id] = o
        calls.append(rec)
        i += 1
        assert i < 500
    assert e._inflight is None
    assert e.block_manager.num_free_blocks == e.block_manager.num_blocks
    return calls, finals, e.num_async_launches - launches0, inflight_at_abort


def _logprobs(o):
    return [[(t, lp.logprob, lp.rank) for t, lp in d.items()] for c in o.outputs for d in (c.logprobs or [])]


def _assert_close_logprobs(a, b, tol=1e-4):
    la, lb = _logprobs(a), _logprobs(b)
    assert len(la) == len(lb)
    for da, db in zip(la, lb):
        assert [t for t, _, _ in da] == [t for t, _, _ in db]
        assert max(abs(x - y) for (_, x, _), (_, y, _) in zip(da, db)) < tol


def test_same_outputs_call_for_call(llm):
    e = llm.engine
    ref = llm.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))[0].outputs[0]
    toks, text = ref.token_ids, ref.text
    stop_str = text[len(text) // 2: len(text) // 2 + 3].strip() or text[-3:]
    seed = random.randrange(1 << 30)
    # min_tokens ends exactly where the greedy path first meets its stop token: banned one step
    # too long (a pending token not counted), the request would go on
    j = next(j for j in range(4, len(toks)) if toks[j] not in toks[:j])
    reqs = [
        ("greedy-lp", PROMPTS[1], SamplingParams(temperature=0, max_tokens=17, ignore_eos=True, logprobs=3)),
        ("len-3", PROMPTS[2], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)),
        ("stop-str", PROMPTS[0], SamplingParams(temperature=0, max_tokens=24, stop=[stop_str])),
        ("stop-tok", PROMPTS[0], SamplingParams(temperature=0, max_tokens=24, stop_token_ids=[toks[7]], logprobs=0)),
        ("n2-seeded", PROMPTS[3], SamplingParams(n=2, temperature=0.9, top_k=50, top_p=0.9, min_p=0.02, seed=seed,
                                                 max_tokens=13, ignore_eos=True, logprobs=1)),
        ("min-tok", PROMPTS[0], SamplingParams(temperature=0, max_tokens=20, min_tokens=j, stop_token_ids=[toks[j]])),
    ]
    eos = ("eos", PROMPTS[0], SamplingParams(temperature=0, max_tokens=24))

    def run(async_on):
        e.eos_token_ids, old = frozenset({toks[11]}), e.eos_token_ids  # an EOS the prompt reaches
        e.add_request(*eos)
        e.eos_token_ids = old
        return _drive(llm, async_on, {0: reqs})

    sync_calls, sync_out, sync_launches, _ = run(False)
    async_calls, async_out, async_launches, _ = run(True)
    assert sync_launches == 0 and async_launches >= 10, async_launches  # the overlapped path ran
    assert async_calls == sync_calls, f"seed {seed}"  # every streamed delta, in order, and usage
    for rid, o in sync_out.items():
        _assert_close_logprobs(o, async_out[rid])
        for c, d in zip(o.outputs, async_out[rid].outputs):
            assert (c.cumulative_logprob is None) == (d.cumulative_logprob is None)
            assert c.cumulative_logprob is None or abs(c.cumulative_logprob - d.cumulative_logprob) < 1e-3
    reasons = {rid: [(c.finish_reason, c.stop_reason) for c in o.outputs] for rid, o in async_out.items()}
    assert reasons["len-3"] == [("length", None)] and reasons["greedy-lp"] == [("length", None)]
    assert reasons["stop-str"] == [("stop", stop_str)] and reasons["stop-tok"] == [("stop", toks[7])]
    assert reasons["eos"] == [("stop", None)] and len(async_out["eos"].outputs[0].token_ids) == toks.index(toks[11]) + 1
    assert async_out["min-tok"].outputs[0].token_ids == toks[:j + 1] and reasons["min-tok"] == [("stop", toks[j])]
    assert len(async_out["n2-seeded"].outputs) == 2


def test_arrivals_mid_decode_and_abort_in_flight(llm):
    sp = lambda n: SamplingParams(temperature=0, max_tokens=n, ignore_eos=True, logprobs=0)  # noqa: E731
    arrivals = {0: [("a", PROMPTS[0], sp(16)), ("b", PROMPTS[1], sp(30))],
                3: [("c", PROMPTS[2], sp(8))],  # a prefill mid-decode: drain, then sync steps
                9: [("d", PROMPTS[4] * 3, sp(6)), ("e", PROMPTS[3], sp(5))]}
    aborts = {6: ["b"]}
    sync_calls, sync_out, _, _ = _drive(llm, False, arrivals, aborts)
    async_calls, async_out, launches, inflight = _drive(llm, True, arrivals, aborts)
    assert launches > 0
    assert "b" in inflight[0]  # the aborted request had a row in the step in flight
    assert async_out["b"].outputs[0].finish_reason == "abort" and async_out["b"].finished
    for rid, o in sync_out.items():
        a = async_out[rid]
        assert [c.token_ids for c in a.outputs] == [c.token_ids for c in o.outputs], rid
        assert [(c.text, c.finish_reason) for c in a.outputs] == [(c.text, c.finish_reason) for c in o.outputs]
        _assert_close_logprobs(o, a)
    # "b" had the same number of tokens when aborted (one step's outputs per call in both modes)
    assert len(async_out["b"].outputs[0].token_ids) == len(sync_out["b"].outputs[0].token_ids) > 0


def test_length_limits_allocate_the_same_blocks(llm):
    """Requests that end at max_tokens or max_model_len get no slot beyond what the synchronous
    engine allocates (the placeholder step leaves them out)."""
    e = llm.engine
    ids = e.encode(PROMPTS[0] * 40)[: e.max_model_len - 6]
    arrivals = {0: [("ctx", ids, SamplingParams(temperature=0, ignore_eos=True)),
                    ("mt", PROMPTS[1], SamplingParams(temperature=0, max_tokens=9, ignore_eos=True))]}
    peaks = []
    bm = e.block_manager
    orig = bm.allocate_slots

    def spy(rid, n):
        peak[rid] = max(peak.get(rid, 0), n)
        return orig(rid, n)

    bm.allocate_slots = spy
    try:
        for mode in (False, True):
            peak = {}
            _, finals, launches, _ = _drive(llm, mode, arrivals)
            peaks.append(peak)
            assert finals["ctx"].outputs[0].finish_reason == "length" and len(finals["ctx"].outputs[0].token_ids) == 6
            assert finals["mt"].outputs[0].finish_reason == "length"
    finally:
        bm.allocate_slots = orig
    assert launches > 0
    assert peaks[0] == peaks[1] and peaks[1]["ctx"] <= e.max_model_len


def test_penalties_fall_back_to_sync(llm):
    pen = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True, repetition_penalty=1.3, presence_penalty=0.5)
    arrivals = {0: [("p", PROMPTS[2], pen), ("g", PROMPTS[0], SamplingParams(temperature=0, max_tokens=10,
                                                                            ignore_eos=True))]}
    sync_calls, _, _, _ = _drive(llm, False, arrivals)
    async_calls, _, launches, _ = _drive(llm, True, arrivals)
    assert launches == 0  # a penalised request runs every step synchronously
    assert async_calls == sync_calls


def test_async_engine_loop_with_async_scheduling(llm):
    """The server's loop thread (AsyncEngine) drives the async engine: streams match LLM.generate."""
    from gfx906_llm.engine.async_engine import AsyncEngine

    e = llm.engine
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in (7, 12, 4)]
    e.async_scheduling = False
    ref = [o.outputs[0].token_ids for o in llm.generate(PROMPTS[:3], params)]
    e.async_scheduling = True
    launches0 = e.num_async_launches
    eng = AsyncEngine(lambda: e)
    eng.start()
    try:
        eng.wait_ready(timeout=30)

        async def one(i):
            return [o async for o in eng.generate(PROMPTS[i], params[i], f"srv-{i}")]

        async def main():
            return await asyncio.gather(*(one(i) for i in range(3)))

        streams = asyncio.run(main())
    finally:
        eng.shutdown()
    for i, outs in enumerate(streams):
        assert outs[-1].finished and outs[-1].outputs[0].token_ids == ref[i]
        assert all(not o.finished for o in outs[:-1])
    assert e.num_async_launches > launches0
    assert not e.has_unfinished_requests() and e.block_manager.num_free_blocks == e.block_manager.num_blocks


def test_schedule_continuation_rules():
    """Torch-free: placeholder rows, length limits, drains (admission, chunked rows, no blocks)."""
    from gfx906_llm.engine.block_manager import BlockManager
    from gfx906_llm.engine.request import Request
    from gfx906_llm.engine.scheduler import Scheduler

    def req(rid, n_prompt, max_tokens):
        return Request(rid, list(range(1, n_prompt + 1)), SamplingParams(max_tokens=max_tokens, ignore_eos=True),
                       max_tokens)

    sch = Scheduler(BlockManager(6, 4), max_num_seqs=2, max_num_batched_tokens=64, max_model_len=20)
    a, b = req("a", 3, 10), req("b", 7, 2)
    sch.add_request(a)
    sch.add_request(b)
    prefill = sch.schedule()
    after_prefill = sch.schedule_continuation(prefill, {"a": 0, "b": 1}, 8)  # prefills end level: decode on
    assert [(s.num_computed_tokens, s.prev_row) for s in after_prefill.scheduled] == [(3, 0), (7, 1)]
    assert sch.schedule_continuation(prefill, {"a": 0, "b": 1}, 1) is None  # more rows than the graphs hold
    sch.update_from_output(prefill, {"a": 5, "b": 6})
    dec = after_prefill  # a at position 3, b at 7
    nxt = sch.schedule_continuation(dec, {"a": 0, "b": 1}, 8)
    # b reaches max_tokens=2 with dec's token: no row for it; a feeds position 4, blocks cover 5 tokens
    assert [(s.request.request_id, s.num_computed_tokens, s.prev_row, s.do_sample) for s in nxt.scheduled] == \
        [("a", 4, 0, True)]
    assert len(nxt.scheduled[0].block_ids) == 2
    sch.update_from_output(dec, {"a": 8, "b": 9})
    assert b.status.finished and a.num_computed_tokens == 4
    sch.add_request(req("c", 2, 3))  # a slot is free: schedule() would admit it
    assert sch.schedule_continuation(nxt, {"a": 0}, 8) is None
    sch.update_from_output(nxt, {"a": 1})
    assert a.output_token_ids == [5, 8, 1] and a.num_computed_tokens == 5
    mixed = sch.schedule()  # a decodes, c prefills (2 tokens) and samples
    assert [s.request.request_id for s in sch.schedule_continuation(mixed, {"a": 0, "c": 1}, 8).scheduled] == ["a", "c"]
    chunked = Scheduler(BlockManager(8, 4), 2, 4, 20)
    chunked.add_request(req("d", 10, 3))
    first = chunked.schedule()  # a 4-token chunk of the prompt: not level
    assert chunked.schedule_continuation(first, {}, 8) is None
    full = Scheduler(BlockManager(1, 4), 2, 64, 20)
    full.add_request(req("e", 3, 5))
    out = full.schedule()
    dec = full.schedule_continuation(out, {"e": 0}, 8)  # position 3: the block's last slot
    full.update_from_output(out, {"e": 1})
    assert full.schedule_continuation(dec, {"e": 0}, 8) is None  # position 4 needs a second block: drain


def test_cli_flag():
    import argparse

    from gfx906_llm.config import EngineConfig

    p = argparse.ArgumentParser()
    EngineConfig.add_cli_args(p)
    assert EngineConfig.from_cli_args(p.parse_args([])).async_scheduling is None  # auto
    assert EngineConfig.from_cli_args(p.parse_args(["--async-scheduling"])).async_scheduling is True
    assert EngineConfig.from_cli_args(p.parse_args(["--no-async-scheduling"])).async_scheduling is False


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_captured_graphs_async_matches_sync(smollm2_gguf_path):
    """On a GPU async scheduling is on by default and feeds replayed graphs on the device."""
    llm = LLM(str(smollm2_gguf_path), max_model_len=512, cuda_graph_sizes=[1, 2, 4, 8], gpu_memory_utilization=0.3)
    assert llm.engine.async_scheduling and llm.engine.runner.graphs.graphs
    sp = lambda n: SamplingParams(temperature=0, max_tokens=n, ignore_eos=True, logprobs=1)  # noqa: E731
    arrivals = {0: [(f"r{i}", PROMPTS[i], sp(n)) for i, n in enumerate((40, 23, 9, 31, 16))],
                5: [("late", PROMPTS[0] * 4, sp(12))]}
    sync_calls, sync_out, _, _ = _drive(llm, False, arrivals, {8: ["r3"]})
    async_calls, async_out, launches, _ = _drive(llm, True, arrivals, {8: ["r3"]})
    assert launches > 20
    for rid, o in sync_out.items():
        assert [c.token_ids for c in async_out[rid].outputs] == [c.token_ids for c in o.outputs], rid
        assert async_out[rid].outputs[0].finish_reason == o.outputs[0].finish_reason
        _assert_close_logprobs(o, async_out[rid], tol=2e-2)
