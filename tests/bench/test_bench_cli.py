"""``gfx906-llm bench latency | throughput | serve`` on the CPU with the real SmolLM2 GGUF: small
counts, valid JSON on stdout and in ``--output-json``, and a real PNG from ``serve --plot``."""

from __future__ import annotations

import json
import socket

import pytest

from tests.helpers import serve_subprocess

from gfx906_llm.cli import main

ENGINE = ["--max-model-len", "128", "--kv-cache-memory-bytes", str(16 << 20)]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(capsys, argv: list[str], out_json) -> dict:
    capsys.readouterr()
    assert main(["--log-level", "warning", *argv, "--output-json", str(out_json)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out_json.read_text()) == printed
    return printed


def _positive_summary(s: dict, count: int) -> None:
    assert s["count"] == count
    assert 0 < s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]


def test_latency(capsys, tmp_path, smollm2_gguf_path):
    r = _run(capsys, ["bench", "latency", str(smollm2_gguf_path), "--input-len", "6", "--output-len", "3",
                      "--batch-size", "2", "--num-iters", "2", "--num-iters-warmup", "0", "--max-num-seqs", "2",
                      *ENGINE],
             tmp_path / "lat.json")
    assert r["benchmark"] == "latency" and r["platform"] == "cpu" and r["dtype"] == "float32"
    assert len(r["latencies_s"]) == 2 and all(x > 0 for x in r["latencies_s"])
    assert r["latency_percentiles_s"]["10"] <= r["latency_percentiles_s"]["99"]
    _positive_summary(r["ttft_ms"], 4)  # 2 requests x 2 iterations
    _positive_summary(r["tpot_ms"], 4)
    assert r["ttft_ms"]["max"] <= max(r["latencies_s"]) * 1e3
    assert r["output_tokens_per_s"] == pytest.approx(2 * 2 * 3 / sum(r["latencies_s"]))


def test_throughput(capsys, tmp_path, smollm2_gguf_path):
    r = _run(capsys, ["bench", "throughput", str(smollm2_gguf_path), "--num-prompts", "3", "--input-len", "5",
                      "--output-len", "3", "--no-warmup", *ENGINE], tmp_path / "thr.json")
    assert r["benchmark"] == "throughput"
    assert (r["prompt_tokens"], r["output_tokens"]) == (15, 9)
    assert r["elapsed_s"] > 0
    assert r["output_tokens_per_s"] == pytest.approx(9 / r["elapsed_s"])
    assert r["total_tokens_per_s"] == pytest.approx(24 / r["elapsed_s"])
    assert r["requests_per_s"] == pytest.approx(3 / r["elapsed_s"])


def test_bad_counts_exit_2_before_loading_a_model(capsys):
    assert main(["bench", "latency", "no-such-model", "--output-len", "0"]) == 2
    assert main(["bench", "throughput", "no-such-model", "--num-prompts", "-1"]) == 2
    assert main(["bench", "serve", "--concurrency", "0"]) == 2


def test_serve_unreachable_server_exits_2():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    assert main(["bench", "serve", "--base-url", f"http://127.0.0.1:{port}", "--num-prompts", "1"]) == 2


@pytest.fixture(scope="module")
def server_url(smollm2_gguf_path):
    args = ["--served-model-name", "smol", "--max-model-len", "256", "--kv-cache-memory-bytes", str(16 << 20)]
    with serve_subprocess(smollm2_gguf_path, *args) as (url, _log):
        yield url


def test_serve_json_and_plot(capsys, tmp_path, server_url):
    try:
        import matplotlib  # noqa: F401  (optional: only --plot needs it)
        have_mpl = True
    except ImportError:
        have_mpl = False
    png = tmp_path / "serve.png"
    r = _run(capsys, ["bench", "serve", "--base-url", server_url, "--concurrency", "1", "2", "--num-prompts", "2",
                      "--input-len", "6", "--output-len", "3", *(["--plot", str(png)] if have_mpl else [])],
             tmp_path / "serve.json")
    assert r["benchmark"] == "serve" and r["model"] == "smol"
    assert [lv["concurrency"] for lv in r["levels"]] == [1, 2]
    for lv in r["levels"]:
        assert (lv["completed"], lv["failed"]) == (2, 0), lv["errors"]
        assert lv["output_tokens"] == 6 and lv["prompt_tokens"] > 0
        _positive_summary(lv["ttft_ms"], 2)
        _positive_summary(lv["tpot_ms"], 2)
        _positive_summary(lv["e2e_ms"], 2)
        assert lv["ttft_ms"]["max"] <= lv["e2e_ms"]["max"]
        assert lv["output_tokens_per_s"] == pytest.approx(6 / lv["duration_s"])
    if not have_mpl:
        pytest.skip("matplotlib is not installed: JSON checked, the PNG was not")
    assert r["plot"] == str(png)
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_plot_rejects_empty_result(tmp_path):
    pytest.importorskip("matplotlib")
    from gfx906_llm.bench.plot import plot_serve

    with pytest.raises(ValueError):
        plot_serve({"levels": []}, str(tmp_path / "x.png"))
