"""An exception inside the engine's step reaches the HTTP client as an OpenAI error (500, or an
in-band error event once a stream has started) and the server goes on serving. The engine here
is a stand-in that can fail on demand (the real model cannot be made to fail), served in-process
through httpx's ASGI transport; token-id prompts need no tokenizer."""

from __future__ import annotations

import asyncio
import json

import httpx

from gfx906_llm.engine.async_engine import AsyncEngine
from gfx906_llm.entrypoints.openai.api_server import build_app
from gfx906_llm.outputs import CompletionOutput, RequestMetrics, RequestOutput


class FailingEngine:
    """One token per request per step; ``fail_steps`` next steps raise."""

    max_model_len = 64
    model_name = "stand-in"
    tokenizer = model_config = None
    config = type("Cfg", (), {"model": "stand-in"})()

    def __init__(self):
        self.reqs: dict[str, tuple[list[int], int, list[int]]] = {}
        self.fail_steps = 0
        self.aborted: list[str] = []
        self.recoveries = 0

    def add_request(self, request_id, prompt, params, arrival_time=None):
        self.reqs[request_id] = (list(prompt), params.max_tokens, [])

    def abort_request(self, request_ids):
        for rid in [request_ids] if isinstance(request_ids, str) else list(request_ids):
            if self.reqs.pop(rid, None) is not None:
                self.aborted.append(rid)

    def has_unfinished_requests(self):
        return bool(self.reqs)

    def recover_from_failed_step(self):
        self.recoveries += 1

    def step(self):
        if self.fail_steps:
            self.fail_steps -= 1
            raise RuntimeError("injected step failure")
        outs = []
        for rid, (prompt, max_tokens, gen) in list(self.reqs.items()):
            gen.append(7)
            reason = "length" if len(gen) >= max_tokens else None
            outs.append(RequestOutput(rid, None, prompt, [CompletionOutput(0, "ab" * len(gen), list(gen), None, None,
                                                                           reason)], reason is not None,
                                      RequestMetrics(0.0)))
            if reason:
                del self.reqs[rid]
        return outs

    def get_stats(self):
        return None


def test_step_failure_is_an_openai_error_and_server_survives():
    stand_in = FailingEngine()
    engine = AsyncEngine(lambda: stand_in)
    engine.start()
    engine.wait_ready(timeout=10)
    app = build_app(engine, ["stand-in"], api_key=None)
    body = {"model": "stand-in", "prompt": [1, 2, 3], "max_tokens": 3}

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            stand_in.fail_steps = 1
            r = await http.post("/v1/completions", json=body)
            assert r.status_code == 500, r.text
            err = r.json()["error"]
            assert err["code"] == 500 and "injected step failure" in err["message"]

            stand_in.fail_steps = 1
            r = await http.post("/v1/completions", json={**body, "stream": True})
            assert r.status_code == 200  # the stream had started: the error comes in-band
            events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            assert "injected step failure" in json.loads(events[-2])["error"]["message"]

            r = await http.post("/v1/completions", json=body)  # still serving
            assert r.status_code == 200 and r.json()["choices"][0]["text"] == "ababab"
            assert (await http.get("/health")).status_code == 200

    try:
        asyncio.run(main())
    finally:
        engine.shutdown()
    assert engine.num_step_errors == 2 and len(stand_in.aborted) == 2 and not stand_in.reqs
    assert stand_in.recoveries == 2
