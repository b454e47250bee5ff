"""Concurrent streams, and client disconnects that must abort the request and free its KV blocks."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow  # real model behind a real server


def _wait_idle(server, aborts_before: float, timeout: float = 60.0) -> None:
    """Until one more request ended with 'abort', nothing runs and every KV block is free."""
    deadline = time.monotonic() + timeout
    while True:
        aborted = server.metric("request_success_total", 'finished_reason="abort"')
        running = server.metric("num_requests_running") + server.metric("num_requests_waiting")
        free, total = server.metric("num_free_kv_blocks"), server.metric("num_total_kv_blocks")
        if aborted > aborts_before and running == 0 and free == total and server.metric("kv_cache_usage_perc") == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"request not aborted: aborted={aborted} (before {aborts_before}), running={running}, "
                        f"free blocks {free}/{total}")
        time.sleep(0.2)


def test_16_concurrent_streams(server):
    async def one(client: openai.AsyncOpenAI, i: int) -> tuple[str, int, str]:
        stream = await client.completions.create(model=server.model, prompt=f"Count from {i}:", max_tokens=2,
                                                 temperature=0, stream=True, stream_options={"include_usage": True},
                                                 extra_body={"ignore_eos": True})
        text, usage, reason = "", None, None
        async for chunk in stream:
            for c in chunk.choices:
                text += c.text
                reason = c.finish_reason or reason
            usage = chunk.usage or usage
        return text, usage.completion_tokens, reason

    async def main() -> list:
        client = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=180)
        try:
            return await asyncio.gather(*(one(client, i) for i in range(16)))
        finally:
            await client.close()

    results = asyncio.run(main())
    assert len(results) == 16
    assert all(n == 2 and reason == "length" and text for text, n, reason in results), results
    assert server.metric("num_free_kv_blocks") == server.metric("num_total_kv_blocks")


def test_disconnect_mid_stream_aborts(server, client):
    aborts = server.metric("request_success_total", 'finished_reason="abort"')
    body = {"model": server.model, "prompt": "Tell me a long story.", "max_tokens": 400, "stream": True,
            "ignore_eos": True, "temperature": 0}
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", f"{server.base_url}/v1/completions", json=body, headers=server.headers) as r:
            assert r.status_code == 200
            got = 0
            for line in r.iter_lines():
                if line.startswith("data: "):
                    assert json.loads(line[6:])["choices"][0]["finish_reason"] is None
                    got += 1
                    if got == 1:
                        break  # leaving the block closes the connection mid-stream
    _wait_idle(server, aborts)  # 400 tokens would take minutes: only an abort frees it this fast
    out = client.completions.create(model=server.model, prompt="Hello", max_tokens=1, temperature=0)
    assert out.choices[0].finish_reason in ("length", "stop") and out.usage.completion_tokens == 1


def test_disconnect_non_streaming_aborts(server, client):
    aborts = server.metric("request_success_total", 'finished_reason="abort"')
    body = {"model": server.model, "messages": [{"role": "user", "content": "Write an essay."}], "max_tokens": 400,
            "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/v1/chat/completions", json=body, headers=server.headers, timeout=3)
    _wait_idle(server, aborts)
    out = client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
    assert out.usage.completion_tokens == 1
