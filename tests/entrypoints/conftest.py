"""A real server for the entrypoint tests: ``python -m gfx906_llm.cli serve`` on a free port of
127.0.0.1, serving the real SmolLM2-135M-Instruct GGUF, started once per test session."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import httpx
import pytest

API_KEY = "sk-gfx906-test"
MODEL = "smollm2"
ALIAS = "smollm2-alias"
MAX_MODEL_LEN = 512


@dataclass
class Server:
    base_url: str  # http://127.0.0.1:PORT
    proc: subprocess.Popen
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(smollm2_gguf_path) -> Server:
    port = _free_port()
    log = tempfile.NamedTemporaryFile(prefix="gfx906-llm-server-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "gfx906_llm.cli", "serve", str(smollm2_gguf_path), "--port", str(port),
           "--api-key", API_KEY, "--served-model-name", MODEL, ALIAS, "--max-model-len", str(MAX_MODEL_LEN),
           "--kv-cache-memory-bytes", str(32 << 20)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    srv = Server(f"http://127.0.0.1:{port}", proc, log.name)
    deadline = time.monotonic() + 240
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{srv.log()[-4000:]}")
            try:
                if httpx.get(f"{srv.base_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after 240 s:\n{srv.log()[-4000:]}")
            time.sleep(0.5)
        yield srv
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.unlink(log.name)


@pytest.fixture(scope="session")
def client(server):
    import openai

    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=120)
