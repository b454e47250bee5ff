"""Scheduler and block manager on their own (no torch, no model)."""

from __future__ import annotations

import random

import pytest

from gfx906_llm.engine.block_manager import BlockManager
from gfx906_llm.engine.request import Request, RequestStatus
from gfx906_llm.engine.scheduler import Scheduler
from gfx906_llm.sampling_params import SamplingParams


def _req(rid: str, n_prompt: int, max_tokens: int = 4) -> Request:
    return Request(rid, list(range(1, n_prompt + 1)), SamplingParams(max_tokens=max_tokens, ignore_eos=True),
                   max_tokens)


def _drive(sched: Scheduler, max_steps: int = 1000) -> list:
    """Run the scheduler with a fake model that samples token 7; returns per-step outputs."""
    steps = []
    for _ in range(max_steps):
        if not sched.has_unfinished_requests():
            return steps
        out = sched.schedule()
        assert out.total_num_scheduled_tokens <= sched.max_num_batched_tokens
        assert len(out.scheduled) <= sched.max_num_seqs
        for s in out.scheduled:
            # a request's slots are all allocated before it runs
            assert len(s.block_ids) * sched.block_manager.block_size >= s.num_computed_tokens + s.num_scheduled_tokens
        sampled = {s.request.request_id: 7 for s in out.scheduled if s.do_sample}
        sched.update_from_output(out, sampled)
        steps.append(out)
    raise AssertionError("scheduler did not finish")


def test_block_manager_allocates_and_frees():
    bm = BlockManager(4, 16)
    assert bm.allocate_slots("a", 17)  # 2 blocks
    assert bm.get_block_ids("a") and len(bm.get_block_ids("a")) == 2
    assert not bm.allocate_slots("b", 48)  # needs 3, 2 free: nothing taken
    assert bm.num_free_blocks == 2 and bm.get_block_ids("b") == []
    bm.free("a")
    assert bm.num_free_blocks == 4 and bm.usage == 0.0


def test_chunked_prefill_respects_budget_and_mixes_decode():
    bm = BlockManager(100, 16)
    s = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=32, max_model_len=512)
    s.add_request(_req("short", 5, max_tokens=8))
    s.add_request(_req("long", 100, max_tokens=2))
    steps = _drive(s)
    first = steps[0]
    assert [x.num_scheduled_tokens for x in first.scheduled] == [5, 27]
    # the next step decodes "short" while "long" keeps prefilling
    second = {x.request.request_id: x.num_scheduled_tokens for x in steps[1].scheduled}
    assert second == {"short": 1, "long": 31}
    assert bm.num_free_blocks == 100


def test_no_chunking_waits_for_budget():
    bm = BlockManager(100, 16)
    s = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=64, max_model_len=512, enable_chunked_prefill=False)
    s.add_request(_req("a", 40))
    s.add_request(_req("b", 40))
    out = s.schedule()
    assert [x.request.request_id for x in out.scheduled] == ["a"]


def test_preemption_recomputes_and_frees_everything():
    bm = BlockManager(6, 4)  # 24 tokens of cache
    s = Scheduler(bm, max_num_seqs=4, max_num_batched_tokens=64, max_model_len=24)
    reqs = [_req(f"r{i}", 6, max_tokens=8) for i in range(3)]
    for r in reqs:
        s.add_request(r)
    _drive(s)
    assert s.num_preemptions > 0
    assert all(r.status == RequestStatus.FINISHED_LENGTH and len(r.output_token_ids) == 8 for r in reqs)
    assert bm.num_free_blocks == 6


def test_random_workloads_finish_with_all_blocks_free():
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    bm = BlockManager(rng.randint(8, 40), rng.choice([4, 8, 16]))
    max_len = bm.num_blocks * bm.block_size
    s = Scheduler(bm, max_num_seqs=rng.randint(1, 8), max_num_batched_tokens=rng.randint(8, 64), max_model_len=max_len)
    reqs = []
    for i in range(rng.randint(1, 20)):
        n = rng.randint(1, max_len // 2)
        reqs.append(_req(f"r{i}", n, max_tokens=rng.randint(1, max_len - n)))
        s.add_request(reqs[-1])
    _drive(s, max_steps=20000)
    assert bm.num_free_blocks == bm.num_blocks, seed
    assert all(r.status.finished for r in reqs), seed


def test_finish_request_from_waiting_and_running():
    bm = BlockManager(10, 16)
    s = Scheduler(bm, max_num_seqs=1, max_num_batched_tokens=64, max_model_len=100)
    s.add_request(_req("a", 4))
    s.add_request(_req("b", 4))
    s.schedule()
    s.finish_request("b", RequestStatus.FINISHED_ABORTED)  # waiting
    s.finish_request("a", RequestStatus.FINISHED_ABORTED)  # running
    assert not s.has_unfinished_requests() and bm.num_free_blocks == 10
    assert s.finish_request("zzz", RequestStatus.FINISHED_ABORTED) is None


@pytest.mark.parametrize("n_prompt", [15, 16, 17])
def test_block_boundaries(n_prompt):
    bm = BlockManager(10, 16)
    s = Scheduler(bm, max_num_seqs=1, max_num_batched_tokens=64, max_model_len=100)
    r = _req("a", n_prompt, max_tokens=3)
    s.add_request(r)
    out = s.schedule()
    assert len(out.scheduled[0].block_ids) == -(-n_prompt // 16)
