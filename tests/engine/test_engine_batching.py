"""Continuous batching, chunked prefill and preemption give the same greedy output as running
each prompt alone (real SmolLM2 model), and every KV block is free at the end."""

from __future__ import annotations

import pytest

from gfx906_llm.llm import LLM
from gfx906_llm.sampling_params import SamplingParams
from tests.helpers import assert_same_or_tie

PROMPTS = [
    "The capital of France is",
    "def add(a, b):\n    return",
    "Here is a long story about a dragon who lived in the mountains and guarded a treasure of gold. " * 3,
    "1, 2, 3, 4,",
    "The quick brown fox",
    "In 1969, the first humans",
    "Water boils at",
    "Photosynthesis is the process by which plants " * 2,
]
SP = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True, logprobs=0)


def _run(llm: LLM, prompts):
    outs = llm.generate(prompts, SP)
    res = []
    for o in outs:
        c = o.outputs[0]
        res.append((c.token_ids, [c.logprobs[i][t].logprob for i, t in enumerate(c.token_ids)]))
    return res


@pytest.fixture(scope="module")
def llm(smollm2_gguf_path):
    return LLM(str(smollm2_gguf_path), max_model_len=512)


def _assert_clean(llm: LLM):
    e = llm.engine
    assert not e.has_unfinished_requests()
    assert e.block_manager.num_free_blocks == e.block_manager.num_blocks


def test_alone_vs_batch_of_8(llm):
    alone = _run(llm, [PROMPTS[0]])[0]
    batch = _run(llm, PROMPTS)
    assert_same_or_tie(*alone, *batch[0])
    # and a second prompt, checked alone as well
    alone2 = _run(llm, [PROMPTS[2]])[0]
    assert_same_or_tie(*alone2, *batch[2])
    _assert_clean(llm)


def test_chunked_prefill_matches_unchunked(llm, smollm2_gguf_path):
    ref = _run(llm, PROMPTS[:4])
    chunked = LLM(str(smollm2_gguf_path), max_model_len=512, max_num_batched_tokens=16)
    got = _run(chunked, PROMPTS[:4])
    for a, b in zip(ref, got):
        assert_same_or_tie(*a, *b)
    _assert_clean(chunked)


def test_preemption_under_tiny_kv_budget(llm, smollm2_gguf_path):
    ref = _run(llm, PROMPTS)
    block_bytes = llm.engine.runner.kv_block_bytes()
    tiny = LLM(str(smollm2_gguf_path), max_model_len=256, kv_cache_memory_bytes=12 * block_bytes, max_num_seqs=8)
    assert tiny.engine.block_manager.num_blocks == 12
    got = _run(tiny, PROMPTS)
    assert tiny.engine.scheduler.num_preemptions > 0
    for a, b in zip(ref, got):
        assert_same_or_tie(*a, *b)
    _assert_clean(tiny)


def test_abort_frees_blocks(llm):
    e = llm.engine
    e.add_request("x", "Tell me a story", SamplingParams(max_tokens=100, ignore_eos=True))
    e.add_request("y", "Tell me a joke", SamplingParams(max_tokens=5, temperature=0))
    e.step()
    e.step()
    assert e.block_manager.num_free_blocks < e.block_manager.num_blocks
    e.abort_request("x")
    finals = {}
    while e.has_unfinished_requests():
        for o in e.step():
            if o.finished:
                finals[o.request_id] = o
    assert finals["x"].outputs[0].finish_reason == "abort"
    assert finals["y"].outputs[0].finish_reason == "length"
    _assert_clean(llm)
