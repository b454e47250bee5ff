"""A real server for the entrypoint tests: ``python -m gfx906_llm.cli serve`` on a free port of
127.0.0.1, serving the real SmolLM2-135M-Instruct GGUF, started once per test session."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
import pytest

from tests.helpers import serve_subprocess

API_KEY = "sk-gfx906-test"
MODEL = "smollm2"
ALIAS = "smollm2-alias"
MAX_MODEL_LEN = 512


@dataclass
class Server:
    base_url: str  # http://127.0.0.1:PORT
    log_path: str
    api_key: str = API_KEY
    model: str = MODEL  # first served name
    alias: str = ALIAS  # second served name
    max_model_len: int = MAX_MODEL_LEN

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def metric(self, name: str, labels: str = "") -> float:
        """One sample of /metrics, e.g. metric("num_requests_running")."""
        text = httpx.get(f"{self.base_url}/metrics", timeout=10).text
        pat = re.compile(rf'^gfx906_llm:{re.escape(name)}\{{([^}}]*)\}} (\S+)$', re.M)
        for lbl, value in pat.findall(text):
            if all(part in lbl for part in labels.split(",") if part):
                return float(value)
        return 0.0  # a labelled counter that has not been incremented yet


@pytest.fixture(scope="session")
def server(smollm2_gguf_path) -> Server:
    args = ["--api-key", API_KEY, "--served-model-name", MODEL, ALIAS, "--max-model-len", str(MAX_MODEL_LEN),
            "--kv-cache-memory-bytes", str(32 << 20)]
    with serve_subprocess(smollm2_gguf_path, *args) as (url, log_path):
        yield Server(url, log_path)


@pytest.fixture(scope="session")
def client(server):
    import openai

    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=120)
