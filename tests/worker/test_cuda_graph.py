"""Decode steps through DecodeGraphs' persistent, padded buffers give the same tokens and
log-probs as the plain step (CPU: the padded step runs eagerly), and graph replay gives the same
greedy tokens as --enforce-eager (GPU)."""

from __future__ import annotations

import random

import pytest
import torch

from gfx906_llm.config import EngineConfig
from gfx906_llm.llm import LLM
from gfx906_llm.sampling_params import SamplingParams
from gfx906_llm.worker.cuda_graph import DecodeGraphs, capture_sizes


def test_capture_sizes():
    assert capture_sizes(None, 256)[:4] == [1, 2, 4, 8] and capture_sizes(None, 256)[-1] == 256
    assert capture_sizes(None, 20) == [1, 2, 4, 8, 16, 20]
    assert capture_sizes([3, 1, 64], 512) == [1, 3, 64]
    with pytest.raises(ValueError):
        capture_sizes([0, 4], 8)
    with pytest.raises(ValueError, match="cuda-graph-sizes"):
        EngineConfig(cuda_graph_sizes=[0])


def _run(llm: LLM, prompts: list[list[int]], lens: list[int]):
    params = [SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True, logprobs=0) for n in lens]
    outs = llm.generate(prompts, params)
    return [(o.outputs[0].token_ids, [lp[t].logprob for lp, t in zip(o.outputs[0].logprobs, o.outputs[0].token_ids)])
            for o in outs]


def test_padded_decode_matches_plain_step(smollm2_gguf_path):
    """5 requests of different lengths: the batch shrinks 5 -> 1 through the buckets 8, 4, 2, 1
    (padding rows on every step); a seeded sampled request must also be unaffected."""
    llm = LLM(smollm2_gguf_path, max_model_len=256, kv_cache_memory_bytes=1 << 24, device="cpu")
    rng = random.Random()
    prompts = [[rng.randrange(100, 40000) for _ in range(rng.randrange(3, 30))] for _ in range(5)]
    lens = [12, 9, 7, 4, 2]
    plain = _run(llm, prompts, lens)
    runner = llm.engine.runner
    runner.graphs = DecodeGraphs(runner.model, runner.device, [1, 2, 4, 8], llm.engine.max_model_len,
                                 runner.block_size, capture=False)
    used, run = [], runner.graphs.run
    runner.graphs.run = lambda sched: used.append(len(sched.scheduled)) or run(sched)
    padded = _run(llm, prompts, lens)
    assert sorted(set(used)) == [1, 2, 3, 4, 5]  # every decode step went through the padded buffers
    for (ids_a, lps_a), (ids_b, lps_b) in zip(plain, padded):
        assert ids_a == ids_b
        assert max(abs(a - b) for a, b in zip(lps_a, lps_b)) < 1e-4
    # requests beyond the largest size take the plain path
    runner.graphs = DecodeGraphs(runner.model, runner.device, [1, 2], llm.engine.max_model_len,
                                 runner.block_size, capture=False)
    again = _run(llm, prompts, lens)
    assert [a[0] for a in again] == [p[0] for p in plain]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_graph_replay_matches_eager(smollm2_gguf_path):
    prompts = [[random.randrange(100, 40000) for _ in range(random.randrange(3, 60))] for _ in range(6)]
    lens = [32, 20, 16, 9, 5, 3]
    eager = LLM(smollm2_gguf_path, max_model_len=512, enforce_eager=True, gpu_memory_utilization=0.3)
    ref = _run(eager, prompts, lens)
    del eager
    graphed = LLM(smollm2_gguf_path, max_model_len=512, cuda_graph_sizes=[1, 2, 4, 8], gpu_memory_utilization=0.3)
    assert graphed.engine.runner.graphs is not None and graphed.engine.runner.graphs.graphs
    got = _run(graphed, prompts, lens)
    assert [g[0] for g in got] == [r[0] for r in ref]


def test_warmup_runs_mixed_shapes_without_touching_the_cache(tmp_path):
    """The start-up warm-up (GPU: kernel compilation) builds valid mixed steps of every size and
    writes nothing to the KV cache (slots -1); forced here on the CPU with the torch ops."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "gfx906_llm.bench.random_model", "--format", "fp16", "--shape", "tiny",
                    "--out", str(tmp_path / "m"), "--device", "cpu"], check=True, capture_output=True)
    llm = LLM(str(tmp_path / "m"), max_model_len=256, kv_cache_memory_bytes=1 << 22, device="cpu", dtype="float32")
    runner = llm.engine.runner
    for k, v in runner.kv_caches:
        k.fill_(1.5)
        v.fill_(-2.5)
    assert runner.warmup(130, 8) == 0.0  # CPU: nothing to compile
    assert runner.warmup(130, 8, force=True) > 0.0
    assert all(bool((k == 1.5).all()) and bool((v == -2.5).all()) for k, v in runner.kv_caches)
