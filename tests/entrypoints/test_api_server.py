"""The official ``openai`` client against a real server on the real SmolLM2 model: completions
and chat, streaming and not, stop strings, n > 1, logprobs, echo, usage, /health, /version,
/v1/models and /metrics. Small max_tokens: the CPU engine is slow."""

from __future__ import annotations

import httpx
import pytest

import gfx906_llm

pytestmark = pytest.mark.slow  # real model behind a real server

PROMPT = "The capital of France is"  # greedy: " Paris." (logprob -0.26 vs -2.7 for the runner-up)


def test_health_version_models(server, client):
    assert httpx.get(f"{server.base_url}/health").status_code == 200  # no key needed off /v1
    r = httpx.get(f"{server.base_url}/version")
    assert r.status_code == 200
    assert r.json() == {"version": gfx906_llm.__version__}
    models = client.models.list()
    assert [m.id for m in models.data] == [server.model, server.alias]
    assert all(m.object == "model" and m.model_extra["max_model_len"] == server.max_model_len for m in models.data)


def test_completion_stream_matches_full(server, client):
    full = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=3, temperature=0)
    choice = full.choices[0]
    assert full.object == "text_completion" and full.id.startswith("cmpl-")
    assert choice.text.startswith(" Paris"), choice.text
    assert choice.finish_reason == "length"
    assert full.usage.completion_tokens == 3
    assert full.usage.total_tokens == full.usage.prompt_tokens + 3

    stream = client.completions.create(model=server.alias, prompt=PROMPT, max_tokens=3, temperature=0, stream=True,
                                       stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == full.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1])
    assert all(c.model == server.alias for c in chunks)
    text = "".join(c.choices[0].text for c in chunks[:-1])
    assert text == choice.text  # greedy: the deltas add up to the same text
    reasons = [c.choices[0].finish_reason for c in chunks[:-1]]
    assert reasons[-1] == "length" and all(r is None for r in reasons[:-1])


def test_completion_token_ids_prompt_and_usage(server, client):
    ids = [504, 3575, 282, 4649, 314]  # "The capital of France is" in SmolLM2's vocabulary
    out = client.completions.create(model=server.model, prompt=ids, max_tokens=2, temperature=0)
    assert out.usage.prompt_tokens == len(ids)
    assert out.choices[0].text.startswith(" Paris")


def test_stop_strings(server, client):
    out = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=6, temperature=0, stop=["."])
    c = out.choices[0]
    assert (c.text, c.finish_reason, c.model_extra["stop_reason"]) == (" Paris", "stop", ".")
    kept = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=6, temperature=0, stop=".",
                                     extra_body={"include_stop_str_in_output": True})
    assert kept.choices[0].text == " Paris."
    deltas = [ch.choices[0] for ch in client.completions.create(model=server.model, prompt=PROMPT, max_tokens=6,
                                                                temperature=0, stop=["."], stream=True)]
    assert "".join(d.text for d in deltas) == " Paris"  # the held-back "." never leaks into a delta
    assert deltas[-1].finish_reason == "stop"


def test_chat_stream_matches_full(server, client):
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": [{"type": "text", "text": "Say hi."}]}]
    full = client.chat.completions.create(model=server.model, messages=messages, max_completion_tokens=3, temperature=0)
    assert full.object == "chat.completion" and full.id.startswith("chatcmpl-")
    msg = full.choices[0].message
    assert msg.role == "assistant" and msg.content
    assert full.choices[0].finish_reason in ("length", "stop")
    assert full.usage.prompt_tokens > 10  # the ChatML template wraps the two messages
    stream = client.chat.completions.create(model=server.model, messages=messages, max_tokens=3, temperature=0,
                                            stream=True, extra_body={"stream_options": {
                                                "include_usage": True, "continuous_usage_stats": True}})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.model_dump() == full.usage.model_dump() and chunks[-1].choices == []
    running = [c.usage.completion_tokens for c in chunks]  # continuous_usage_stats: usage in every chunk
    assert running[0] == 0 and running == sorted(running)
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == msg.content
    assert chunks[-2].choices[0].finish_reason == full.choices[0].finish_reason


def test_n_and_seed(server, client):
    kw = dict(model=server.model, prompt="Once upon a time", max_tokens=2, temperature=1.0, n=2, seed=1234,
              extra_body={"ignore_eos": True})
    a = client.completions.create(**kw)
    assert sorted(c.index for c in a.choices) == [0, 1]
    assert a.usage.completion_tokens == 4
    chunks = list(client.completions.create(**kw, stream=True))
    choices = [c for ch in chunks for c in ch.choices]
    by_index = {i: "".join(c.text for c in choices if c.index == i) for i in (0, 1)}
    assert {c.index for c in choices if c.finish_reason == "length"} == {0, 1}
    assert by_index == {c.index: c.text for c in a.choices}  # same seed, same samples


def test_logprobs_shapes(server, client):
    out = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=2, temperature=0, logprobs=2)
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 2
    assert "".join(lp.tokens) == out.choices[0].text
    assert lp.text_offset == [0, len(lp.tokens[0])]
    for tok, tlp, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert tlp <= 0 and len(top) == 2 and top[tok] == tlp == max(top.values())  # greedy = top-1

    chat = client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
                                          temperature=0, logprobs=True, top_logprobs=3)
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 3
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True) and entry.logprob == values[0]
        assert bytes(entry.bytes).decode() == entry.token


def test_echo_and_batched_prompts(server, client):
    out = client.completions.create(model=server.model, prompt=[PROMPT, "1, 2, 3,"], max_tokens=2, temperature=0,
                                    echo=True)
    assert [c.index for c in out.choices] == [0, 1]
    assert out.choices[0].text.startswith(PROMPT + " Paris")
    assert out.choices[1].text.startswith("1, 2, 3,")
    assert out.usage.completion_tokens == 4


def test_metrics_content(server, client):
    client.completions.create(model=server.model, prompt=PROMPT, max_tokens=1, temperature=0)
    text = httpx.get(f"{server.base_url}/metrics").text
    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc", "prompt_tokens_total",
                 "generation_tokens_total", "request_success_total", "time_to_first_token_seconds_bucket",
                 "time_per_output_token_seconds_bucket", "e2e_request_latency_seconds_count"):
        assert f"gfx906_llm:{name}" in text, name
    assert server.metric("generation_tokens_total") >= 1
    assert server.metric("request_success_total", 'finished_reason="length"') >= 1
    assert server.metric("e2e_request_latency_seconds_count") >= 1
    assert server.metric("num_total_kv_blocks") > 0
