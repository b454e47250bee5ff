"""Every bad request gets its status and an OpenAI error body, and the server keeps serving."""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow  # real model behind a real server


def _post(server, path: str, body, headers: dict | None = None, raw: bytes | None = None) -> httpx.Response:
    """POST with the API key; a dict body without "model" gets the served model's name."""
    h = server.headers if headers is None else headers
    if isinstance(body, dict) and "model" not in body:
        body = {"model": server.model, **body}
    if raw is not None:
        return httpx.post(f"{server.base_url}{path}", content=raw, headers=h, timeout=60)
    return httpx.post(f"{server.base_url}{path}", json=body, headers=h, timeout=60)


def _check_error(r: httpx.Response, status: int, param: str | None = "") -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == status and err["message"] and isinstance(err["type"], str)
    if param != "":
        assert err["param"] == param, err
    return err


@pytest.fixture(autouse=True)
def _still_serving(server):
    yield
    assert httpx.get(f"{server.base_url}/v1/models", headers=server.headers).status_code == 200


CMPL = {"prompt": "Hello", "max_tokens": 1}
CHAT = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1}


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("raw", [b"{bad json", b"", b"[1, 2]", b"\xff\xfe"])
def test_malformed_body(server, path, raw):
    _check_error(_post(server, path, None, raw=raw), 400)


@pytest.mark.parametrize("path,body,param", [
    ("/v1/completions", {"max_tokens": 1}, "prompt"),  # missing prompt
    ("/v1/completions", {**CMPL, "temperature": "hot"}, "temperature"),
    ("/v1/completions", {**CMPL, "max_tokens": "many"}, "max_tokens"),
    ("/v1/completions", {**CMPL, "n": 1.5}, "n"),
    ("/v1/completions", {**CMPL, "stop": 3}, "stop"),
    ("/v1/chat/completions", {"messages": "hi"}, "messages"),
    ("/v1/chat/completions", {"messages": [{"content": "no role"}]}, "messages"),
    ("/v1/chat/completions", {**CHAT, "logprobs": "yes please"}, "logprobs"),
])
def test_wrong_types_are_400_not_422(server, path, body, param):
    _check_error(_post(server, path, body), 400, param)


@pytest.mark.parametrize("path,body,param", [
    ("/v1/completions", {**CMPL, "temperature": -1}, "temperature"),
    ("/v1/completions", {**CMPL, "top_p": 0}, "top_p"),
    ("/v1/completions", {**CMPL, "top_p": 1.5}, "top_p"),
    ("/v1/completions", {**CMPL, "top_k": -5}, "top_k"),
    ("/v1/completions", {**CMPL, "min_p": 2}, "min_p"),
    ("/v1/completions", {**CMPL, "n": 0}, "n"),
    ("/v1/completions", {**CMPL, "presence_penalty": 3}, "presence_penalty"),
    ("/v1/completions", {**CMPL, "frequency_penalty": -2.5}, "frequency_penalty"),
    ("/v1/completions", {**CMPL, "repetition_penalty": 0}, "repetition_penalty"),
    ("/v1/completions", {**CMPL, "min_tokens": 5}, "min_tokens"),  # > max_tokens
    ("/v1/completions", {**CMPL, "stop_token_ids": [-1]}, "stop_token_ids"),
    ("/v1/completions", {**CMPL, "logprobs": 50}, "logprobs"),
    ("/v1/completions", {**CMPL, "stream_options": {"include_usage": True}}, "stream_options"),
    ("/v1/completions", {**CMPL, "prompt": ""}, "prompt"),
    ("/v1/completions", {**CMPL, "prompt": [1, 2, 10**9]}, None),  # token id out of vocabulary
    ("/v1/completions", {**CMPL, "echo": True, "logprobs": 1}, "echo"),
    ("/v1/chat/completions", {**CHAT, "top_logprobs": 2}, "top_logprobs"),  # without logprobs=true
    ("/v1/chat/completions", {**CHAT, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("/v1/chat/completions", {**CHAT, "messages": []}, "messages"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}, "messages"),
])
def test_bad_values_are_400(server, path, body, param):
    _check_error(_post(server, path, body), 400, param)


@pytest.mark.parametrize("path,body", [("/v1/completions", CMPL), ("/v1/chat/completions", CHAT)])
def test_max_tokens_out_of_range(server, path, body):
    _check_error(_post(server, path, {**body, "max_tokens": 0}), 400, "max_tokens")
    err = _check_error(_post(server, path, {**body, "max_tokens": server.max_model_len}), 400, "max_tokens")
    assert f"maximum context length is {server.max_model_len}" in err["message"]


def test_prompt_longer_than_context(server):
    long_prompt = "hello " * (server.max_model_len + 10)
    err = _check_error(_post(server, "/v1/completions", {**CMPL, "prompt": long_prompt}), 400)
    assert f"maximum context length is {server.max_model_len}" in err["message"]
    err = _check_error(_post(server, "/v1/chat/completions",
                             {"messages": [{"role": "user", "content": long_prompt}]}), 400)
    assert str(server.max_model_len) in err["message"]


def test_unknown_model_is_404_like_vllm(server, client):
    for path, body in (("/v1/completions", CMPL), ("/v1/chat/completions", CHAT)):
        err = _check_error(_post(server, path, {**body, "model": "nope"}), 404, "model")
        assert err["message"] == "The model `nope` does not exist."
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x", max_tokens=1)


def test_api_key(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": server.api_key}):
        _check_error(_post(server, "/v1/completions", CMPL, headers=headers), 401)
        _check_error(httpx.get(f"{server.base_url}/v1/models", headers=headers), 401)
    assert httpx.get(f"{server.base_url}/health").status_code == 200
    assert httpx.get(f"{server.base_url}/metrics").status_code == 200
    bad = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_unknown_route_and_method(server):
    _check_error(httpx.get(f"{server.base_url}/v1/nothing", headers=server.headers), 404)
    _check_error(httpx.get(f"{server.base_url}/v1/completions", headers=server.headers), 405)


def test_openai_client_raises_bad_request(server, client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "x"}], temperature=-0.5)
    assert e.value.status_code == 400 and "temperature" in e.value.message


def test_generates_after_errors(server, client):
    out = client.completions.create(model=server.model, prompt="Hello", max_tokens=1, temperature=0)
    assert out.usage.completion_tokens == 1
