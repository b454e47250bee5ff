"""Sampling parameters end to end on the real SmolLM2 model."""

from __future__ import annotations

import pytest

from gfx906_llm.llm import LLM
from gfx906_llm.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def llm(smollm2_gguf_path):
    return LLM(str(smollm2_gguf_path), max_model_len=512)


P = "Once upon a time"


def test_seed_is_reproducible_and_independent_of_batch(llm):
    sp = SamplingParams(temperature=1.0, seed=1234, max_tokens=16, ignore_eos=True)
    a = llm.generate(P, sp)[0].outputs[0].token_ids
    b = llm.generate([P, "Another prompt here", "x y z"], [sp, SamplingParams(temperature=1.0, max_tokens=8),
                                                           SamplingParams(temperature=0.7, max_tokens=8)])[0]
    assert b.outputs[0].token_ids == a
    c = llm.generate(P, SamplingParams(temperature=1.0, seed=4321, max_tokens=16, ignore_eos=True))[0]
    assert c.outputs[0].token_ids != a


def test_top_k_1_is_greedy(llm):
    g = llm.generate(P, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0].outputs[0].token_ids
    k1 = llm.generate(P, SamplingParams(temperature=1.3, top_k=1, max_tokens=12, ignore_eos=True))[0]
    assert k1.outputs[0].token_ids == g


def test_tiny_top_p_and_min_p_are_greedy(llm):
    g = llm.generate(P, SamplingParams(temperature=0, max_tokens=10, ignore_eos=True))[0].outputs[0].token_ids
    tp = llm.generate(P, SamplingParams(temperature=1.0, top_p=1e-6, max_tokens=10, ignore_eos=True))[0]
    mp = llm.generate(P, SamplingParams(temperature=1.0, min_p=0.9999, max_tokens=10, ignore_eos=True))[0]
    assert tp.outputs[0].token_ids == g
    assert mp.outputs[0].token_ids == g


def test_stop_string_is_excluded_and_stops(llm):
    full = llm.generate("1, 2, 3, 4,", SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))[0].outputs[0]
    assert " 6" in full.text
    o = llm.generate("1, 2, 3, 4,", SamplingParams(temperature=0, max_tokens=20, stop=[" 6"]))[0].outputs[0]
    assert o.finish_reason == "stop" and o.stop_reason == " 6"
    assert o.text == full.text[: full.text.index(" 6")]
    inc = llm.generate("1, 2, 3, 4,", SamplingParams(temperature=0, max_tokens=20, stop=[" 6"],
                                                     include_stop_str_in_output=True))[0].outputs[0]
    assert inc.text.endswith(" 6")


def test_stop_token_ids_and_min_tokens(llm):
    g = llm.generate(P, SamplingParams(temperature=0, max_tokens=10, ignore_eos=True))[0].outputs[0].token_ids
    stop_tok = g[3]
    o = llm.generate(P, SamplingParams(temperature=0, max_tokens=10, stop_token_ids=[stop_tok]))[0].outputs[0]
    assert o.token_ids == g[: g.index(stop_tok) + 1] and o.finish_reason == "stop" and o.stop_reason == stop_tok
    m = llm.generate(P, SamplingParams(temperature=0, max_tokens=10, stop_token_ids=[stop_tok],
                                       min_tokens=g.index(stop_tok) + 2))[0].outputs[0]
    assert len(m.token_ids) >= g.index(stop_tok) + 2


def test_penalties_change_repetitive_output(llm):
    prompt = "the the the the the the the the"
    base = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0].outputs[0]
    rep = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True,
                                              repetition_penalty=2.0))[0].outputs[0]
    freq = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True,
                                               frequency_penalty=2.0, presence_penalty=2.0))[0].outputs[0]
    # greedy on a repetitive prompt repeats itself; both penalties make the output more varied
    assert len(set(rep.token_ids)) > len(set(base.token_ids))
    assert len(set(freq.token_ids)) > len(set(base.token_ids))


def test_n_outputs_and_max_tokens_length(llm):
    out = llm.generate(P, SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=6, ignore_eos=True))[0]
    assert [o.index for o in out.outputs] == [0, 1, 2]
    assert all(len(o.token_ids) == 6 and o.finish_reason == "length" for o in out.outputs)
    assert len({tuple(o.token_ids) for o in out.outputs}) > 1


def test_bad_requests_raise_value_error(llm):
    e = llm.engine
    with pytest.raises(ValueError, match="maximum context length"):
        e.add_request("long", list(range(600)), SamplingParams())
    with pytest.raises(ValueError, match="empty"):
        e.add_request("empty", [], SamplingParams())
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=0)
    assert not e.has_unfinished_requests()


def test_chat_applies_template(llm):
    out = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                   SamplingParams(temperature=0, max_tokens=16))[0]
    assert "Paris" in out.outputs[0].text
