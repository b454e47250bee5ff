"""End-to-end decode speed of one model on a GPU, against the bandwidth roof; prints JSON.

    python benchmarks/e2e_decode.py MODEL [--batch-sizes 1 8 32 64] [--input-len 128]
        [--output-len 256] [--serve] [--eager-too] [--no-async-scheduling] [--out FILE]

* copy bandwidth: ``dst.copy_(src)`` of 1 GiB, bytes read + written over the time (CUDA events).
* ``--serve``: time from starting ``gfx906-llm serve MODEL`` to the first served token (a
  completion of one token over HTTP, polled every 0.2 s), before the in-process engine loads;
  ``--serve-repeats 2`` starts it again (Triton's kernel cache then warm).
* the engine (graphs on unless ``--enforce-eager``): for each batch size B, B random-token
  prompts of ``input-len`` tokens, greedy, ``output-len`` tokens each with ignore_eos, after an
  unmeasured iteration of the same batch (16 tokens). Decode tokens/s = B / mean time per output token (after the first).
* roof: measured copy bandwidth / bytes read per decode step at batch 1 = every weight byte on
  the device except the untied token-embedding table (one row is read), plus the K/V cache read at
  the mean context of the run. ``fraction_of_roof`` = batch-1 decode tokens/s / roof.
* ``replay_only_ms``: per batch size, the captured decode graph replayed back to back (GPU time
  of a step without the host's part).
* ``--eager-too``: the batch-1 figure again with the graphs switched off (same engine).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request

import torch

from gfx906_llm.bench.common import random_token_prompts
from gfx906_llm.bench.latency import run_iteration
from gfx906_llm.config import EngineConfig
from gfx906_llm.engine.engine import LLMEngine


def copy_bandwidth() -> float:
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        s.record()
        dst.copy_(src)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    times.sort()
    return 2 * (1 << 30) / times[len(times) // 2]


def time_to_first_served_token(model: str, extra: list[str]) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(os.path.join(os.environ.get("OUT", "/tmp"), "serve.log"), "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gfx906_llm.cli", "serve", model, "--port", str(port), *extra],
                            stdout=log, stderr=subprocess.STDOUT)
    body = json.dumps({"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0}).encode()
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}; see serve.log")
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=30) as r:
                    json.load(r)
                    break
            except OSError:
                time.sleep(0.2)
        return {"seconds": time.perf_counter() - t0}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def weight_bytes(engine: LLMEngine) -> tuple[int, int]:
    """(bytes of every parameter and buffer of the model, bytes of an untied embedding table)."""
    model = engine.runner.model
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() in seen or t.device.type != "cuda":
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    embed = 0
    if not engine.model_config.tie_word_embeddings:
        for name, mod in model.named_modules():
            if name.endswith("embed_tokens"):
                embed = sum(t.numel() * t.element_size() for t in list(mod.parameters()) + list(mod.buffers()))
    return total, embed


def run_batch(engine: LLMEngine, batch: int, input_len: int, output_len: int, tag: str) -> dict:
    rng = random.Random(batch)
    vocab = min(engine.model_config.vocab_size, len(engine.tokenizer))
    r = run_iteration(engine, random_token_prompts(rng, batch, input_len, vocab), output_len, tag)
    tpot = sum(r["tpot"]) / len(r["tpot"])
    return {"batch": batch, "ttft_ms": 1e3 * sum(r["ttft"]) / batch, "tpot_ms": 1e3 * tpot,
            "decode_tok_s": batch / tpot, "output_tok_s": r["tokens"] / r["latency"]}


def replay_ms(graph, reps: int = 20) -> float:
    """Milliseconds per replay of a captured graph, replayed back to back (CUDA events)."""
    graph.replay()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps):
        graph.replay()
    e.record()
    e.synchronize()
    return s.elapsed_time(e) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--enforce-eager", action="store_true")
    ap.add_argument("--eager-too", action="store_true")
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--serve-repeats", type=int, default=1,
                    help="start the server this many times (the first start compiles the Triton kernels, "
                         "later ones find them in Triton's cache, as a user's second start does)")
    ap.add_argument("--label", default=None)
    ap.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                    help="the engine's --async-scheduling (default: on with graphs)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--patch", default=None, help="JSON {module:key.path: value}: kernel CONFIGS entries to "
                    "set before the engine starts (profile_graph.apply_patch)")
    args = ap.parse_args()
    if args.patch:
        from profile_graph import apply_patch

        apply_patch(json.loads(args.patch))
    res = {"model": args.label or args.model, "device": torch.cuda.get_device_name(),
           "input_len": args.input_len, "output_len": args.output_len}
    res["copy_bandwidth_GBs"] = copy_bandwidth() / 1e9
    common = ["--max-model-len", str(args.max_model_len), "--max-num-seqs", str(max(args.batch_sizes))]
    if args.serve:
        runs = [time_to_first_served_token(args.model, common) for _ in range(args.serve_repeats)]
        res["time_to_first_served_token"] = runs[0]
        res["time_to_first_served_token_runs_s"] = [r["seconds"] for r in runs]
    t0 = time.perf_counter()
    engine = LLMEngine(EngineConfig(model=args.model, max_model_len=args.max_model_len,
                                    max_num_seqs=max(args.batch_sizes), enforce_eager=args.enforce_eager,
                                    async_scheduling=args.async_scheduling))
    res["async_scheduling"] = engine.async_scheduling
    res["engine_start_s"] = time.perf_counter() - t0
    total, embed = weight_bytes(engine)
    row = engine.model_config.hidden_size * engine.loaded.dtype.itemsize
    c = engine.model_config
    kv_per_token = c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim * engine.loaded.dtype.itemsize
    mean_ctx = args.input_len + args.output_len / 2
    step_bytes = total - embed + row + kv_per_token * mean_ctx
    res.update(weight_bytes=total, embedding_bytes=embed, bytes_per_decode_step=step_bytes,
               roof_tok_s=res["copy_bandwidth_GBs"] * 1e9 / step_bytes,
               weights_only_roof_tok_s=res["copy_bandwidth_GBs"] * 1e9 / (total - embed + row))
    res["runs"] = []
    for b in args.batch_sizes:
        run_batch(engine, b, args.input_len, 16, f"warmup{b}")  # same shapes, unmeasured
        r = run_batch(engine, b, args.input_len, args.output_len, f"b{b}")
        res["runs"].append(r)
        print(json.dumps(r), flush=True)
    b1 = next((r for r in res["runs"] if r["batch"] == 1), None)
    if b1:
        res["fraction_of_roof"] = b1["decode_tok_s"] / res["roof_tok_s"]
    graphs = engine.runner.graphs
    if graphs is not None:  # GPU time of one decode step alone (the graph replayed back to back)
        res["replay_only_ms"] = {}
        for b in args.batch_sizes:
            if b in graphs.graphs:
                res["replay_only_ms"][b] = replay_ms(graphs.graphs[b])
    if args.eager_too and engine.runner.graphs is not None:
        graphs, engine.runner.graphs = engine.runner.graphs, None
        res["eager_batch1"] = run_batch(engine, 1, args.input_len, args.output_len, "eager")
        engine.runner.graphs = graphs
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
