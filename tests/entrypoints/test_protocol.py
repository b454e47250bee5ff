"""Protocol models, request -> SamplingParams, max_tokens rules and metrics, without a server."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from gfx906_llm.entrypoints.metrics import ServerMetrics
from gfx906_llm.entrypoints.openai.protocol import (ChatCompletionRequest, ChatCompletionStreamChoice,
                                                   CompletionRequest, DeltaMessage, OpenAIServingError)
from gfx906_llm.entrypoints.openai.serving_base import OpenAIServing, text_delta
from gfx906_llm.entrypoints.openai.serving_chat import OpenAIServingChat
from gfx906_llm.outputs import CompletionOutput, RequestMetrics, RequestOutput


def test_prompt_forms():
    ids = [random.randrange(1000) for _ in range(random.randint(1, 8))]
    assert CompletionRequest(prompt="a b").prompts() == ["a b"]
    assert CompletionRequest(prompt=["a", "b"]).prompts() == ["a", "b"]
    assert CompletionRequest(prompt=ids).prompts() == [ids]
    assert CompletionRequest(prompt=[ids, ids[:1]]).prompts() == [ids, ids[:1]]
    for empty in ("", [], [[]], ["x", ""]):
        with pytest.raises(OpenAIServingError) as e:
            CompletionRequest(prompt=empty).prompts()
        assert e.value.status == 400 and e.value.param == "prompt"


def test_sampling_params_mapping():
    t, p, k = random.uniform(0, 2), random.uniform(0.1, 1), random.randint(1, 50)
    req = CompletionRequest(prompt="x", temperature=t, top_p=p, top_k=k, min_p=0.05, seed=7, n=3, stop="##",
                            presence_penalty=0.5, frequency_penalty=-0.5, repetition_penalty=1.1, min_tokens=2,
                            ignore_eos=True, stop_token_ids=[5], skip_special_tokens=False,
                            include_stop_str_in_output=True)
    sp = req.build_sampling_params(max_tokens=9, logprobs=2)
    assert (sp.temperature, sp.top_p, sp.top_k, sp.min_p, sp.seed, sp.n) == (t, p, k, 0.05, 7, 3)
    assert sp.stop == ["##"] and sp.stop_token_ids == [5] and sp.max_tokens == 9 and sp.logprobs == 2
    assert (sp.presence_penalty, sp.frequency_penalty, sp.repetition_penalty, sp.min_tokens) == (0.5, -0.5, 1.1, 2)
    assert sp.ignore_eos and not sp.skip_special_tokens and sp.include_stop_str_in_output
    d = CompletionRequest(prompt="x").build_sampling_params(max_tokens=16, logprobs=None)
    assert (d.temperature, d.top_p, d.top_k, d.n, d.stop, d.logprobs) == (1.0, 1.0, 0, 1, [], None)


@pytest.mark.parametrize("field,value", [("temperature", -0.1), ("top_p", 0.0), ("top_k", -3), ("min_p", 1.5),
                                         ("presence_penalty", 2.5), ("repetition_penalty", 0.0)])
def test_bad_sampling_value_names_field(field, value):
    with pytest.raises(OpenAIServingError) as e:
        CompletionRequest(prompt="x", **{field: value}).build_sampling_params(max_tokens=4, logprobs=None)
    assert e.value.status == 400 and e.value.param == field and field in e.value.message
    body = e.value.body()["error"]
    assert body["code"] == 400 and body["type"] == "BadRequestError" and body["param"] == field


def test_chat_request_rules():
    msgs = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    req = ChatCompletionRequest(messages=msgs, max_tokens=5, max_completion_tokens=3, logprobs=True, top_logprobs=4)
    req.check()
    assert req.messages[0].to_template() == {"role": "user", "content": "a\nb"}
    assert req.requested_max_tokens() == 3 and req.sampling_logprobs() == 4
    assert ChatCompletionRequest(messages=msgs, logprobs=True).sampling_logprobs() == 0
    assert ChatCompletionRequest(messages=msgs).sampling_logprobs() is None
    img = ChatCompletionRequest(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])
    with pytest.raises(OpenAIServingError, match="image_url"):
        img.messages[0].to_template()
    for bad in (dict(top_logprobs=1), dict(tools=[{"type": "function"}]), dict(stream_options={}),
                dict(response_format={"type": "json_object"})):
        with pytest.raises(OpenAIServingError):
            ChatCompletionRequest(messages=msgs, **bad).check()


def test_delta_message_sends_only_present_fields():
    assert DeltaMessage(content="x").model_dump() == {"content": "x"}
    assert ChatCompletionStreamChoice(index=0, delta=DeltaMessage()).model_dump()["delta"] == {}
    assert text_delta("abc", 1) == "bc" and text_delta("ab", 5) == ""


def _serving(max_model_len: int, chat_template=None):
    tok = SimpleNamespace(chat_template=chat_template)
    return SimpleNamespace(max_model_len=max_model_len, tokenizer=tok), ["m"]


def test_resolve_max_tokens():
    limit = random.randint(20, 200)
    s = OpenAIServing(*_serving(limit))
    assert s.resolve_max_tokens(None, 5) == limit - 5
    assert s.resolve_max_tokens(limit - 5, 5) == limit - 5
    for requested, prompt in ((0, 5), (limit - 4, 5), (None, limit), (3, limit)):
        with pytest.raises(OpenAIServingError) as e:
            s.resolve_max_tokens(requested, prompt)
        assert e.value.status == 400
    with pytest.raises(OpenAIServingError) as e:
        s.check_model("other")
    assert e.value.status == 404 and e.value.message == "The model `other` does not exist."
    assert s.check_model(None) == "m" and s.check_model("m") == "m"


def test_chat_without_template_is_400():
    chat = OpenAIServingChat(*_serving(100, chat_template=None))
    with pytest.raises(OpenAIServingError) as e:
        chat.render_prompt(ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}]))
    assert e.value.status == 400 and "chat template" in e.value.message


def _out(rid: str, n_tokens: int, reason: str | None) -> RequestOutput:
    comp = CompletionOutput(0, "x" * n_tokens, list(range(n_tokens)), None, None, reason)
    m = RequestMetrics(10.0, 10.1, 10.5, 10.5 + 0.1 * (n_tokens - 1), 11.0 if reason else None, 4, n_tokens)
    return RequestOutput(rid, None, [1, 2, 3, 4], [comp], reason is not None, m)


def test_metrics_counts_and_separate_registries():
    a, b = ServerMetrics("m"), ServerMetrics("m")  # own registries: no duplicate-name clash
    a.on_step([_out("r1", 1, None), _out("r2", 1, None)])
    a.on_step([_out("r1", 3, "length"), _out("r2", 2, "stop")])
    a.on_abort("r3")
    stats = SimpleNamespace(num_running=2, num_waiting=1, kv_cache_usage=0.25, num_preemptions=3,
                            num_free_blocks=30, num_total_blocks=40)
    a.update_from_stats(stats, num_step_errors=1)
    text = a.render().decode()
    assert text.startswith("# HELP gfx906_llm:")

    def value(name: str, **labels: str) -> float:
        return a.registry.get_sample_value(f"gfx906_llm:{name}", {"model_name": "m", **labels})

    assert value("prompt_tokens_total") == 8 and value("generation_tokens_total") == 5
    for reason in ("length", "stop", "abort"):
        assert value("request_success_total", finished_reason=reason) == 1
    assert value("kv_cache_usage_perc") == 0.25 and value("num_requests_waiting") == 1
    assert value("num_preemptions_total") == 3 and value("engine_step_errors_total") == 1
    assert value("time_to_first_token_seconds_count") == 2
    assert value("time_to_first_token_seconds_sum") == pytest.approx(1.0)  # 0.5 s each
    assert value("time_per_output_token_seconds_sum") == pytest.approx(0.2)  # 0.1 s per token, twice
    assert value("e2e_request_latency_seconds_sum") == pytest.approx(2.0)
    a.update_from_stats(stats)  # cumulative preemptions are not counted twice
    assert value("num_preemptions_total") == 3
    assert b.registry.get_sample_value("gfx906_llm:generation_tokens_total", {"model_name": "m"}) == 0
