"""Engine vs Hugging Face transformers on the same GGUF, in one run; prints JSON.

Figures: single-request decode tokens/s, output tokens/s for N concurrent requests (64 output
tokens each), and the time from `gfx906-llm serve` to a healthy server.

    python benchmarks/bench_engine_vs_hf.py [--model PATH] [--device cpu|cuda] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import torch

from gfx906_llm.demo_models import fetch
from gfx906_llm.llm import LLM
from gfx906_llm.sampling_params import SamplingParams

PROMPT = "Write a short story about a robot who learns to paint."


def bench_ours(model: str, device: str, conc: int, single_tokens: int, conc_tokens: int) -> dict:
    llm = LLM(model, device=device, max_model_len=1024)
    tok = llm.get_tokenizer()
    ids = llm.engine.encode(tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                                    tokenize=False), add_special_tokens=False)
    llm.generate(ids, SamplingParams(temperature=0, max_tokens=8))  # warm-up
    e = llm.engine
    e.add_request("single", ids, SamplingParams(temperature=0, max_tokens=single_tokens, ignore_eos=True))
    stamps = []
    while e.has_unfinished_requests():
        if e.step():
            stamps.append(time.perf_counter())
    decode_tps = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    prompts = [ids] * conc
    t = time.perf_counter()
    outs = llm.generate(prompts, SamplingParams(temperature=0.8, seed=1, max_tokens=conc_tokens, ignore_eos=True))
    dt = time.perf_counter() - t
    n_out = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"single_decode_tok_s": decode_tps, f"concurrent{conc}_output_tok_s": n_out / dt,
            "concurrent_wall_s": dt, "prompt_tokens": len(ids)}


def bench_hf(path: str, device: str, conc: int, single_tokens: int, conc_tokens: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = os.path.abspath(path)
    tok = AutoTokenizer.from_pretrained(os.path.dirname(p), gguf_file=os.path.basename(p))
    dtype = torch.float32 if device == "cpu" else torch.float16
    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(p), gguf_file=os.path.basename(p), dtype=dtype)
    m = m.to(device).eval()
    text = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False)
    enc = tok(text, return_tensors="pt", add_special_tokens=False).to(device)
    gen = dict(do_sample=False, pad_token_id=tok.eos_token_id)
    with torch.no_grad():
        m.generate(**enc, max_new_tokens=8, **gen)
        t = time.perf_counter()
        m.generate(**enc, max_new_tokens=1, min_new_tokens=1, **gen)
        prefill = time.perf_counter() - t
        t = time.perf_counter()
        m.generate(**enc, max_new_tokens=single_tokens, min_new_tokens=single_tokens, **gen)
        single = time.perf_counter() - t
        batch = {k: v.repeat(conc, 1) for k, v in enc.items()}
        t = time.perf_counter()
        out = m.generate(**batch, max_new_tokens=conc_tokens, min_new_tokens=conc_tokens, do_sample=True,
                         temperature=0.8, pad_token_id=tok.eos_token_id)
        dt = time.perf_counter() - t
    n_out = (out.shape[1] - enc["input_ids"].shape[1]) * conc
    return {"single_decode_tok_s": (single_tokens - 1) / (single - prefill),
            f"concurrent{conc}_output_tok_s": n_out / dt, "concurrent_wall_s": dt}


def serve_to_ready(model: str, device: str) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gfx906_llm.cli", "serve", model, "--port", str(port),
                             "--device", device, "--max-model-len", "2048"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t < 600:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t
            except OSError:
                time.sleep(0.2)
            if proc.poll() is not None:
                raise RuntimeError("server exited")
        raise RuntimeError("server not ready in 600 s")
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--single-tokens", type=int, default=128)
    ap.add_argument("--concurrent-tokens", type=int, default=64)
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-serve", action="store_true")
    a = ap.parse_args()
    model = a.model or str(fetch())
    res = {"model": os.path.basename(model), "device": a.device, "torch_threads": torch.get_num_threads(),
           "ours": bench_ours(model, a.device, a.concurrency, a.single_tokens, a.concurrent_tokens)}
    if not a.skip_hf:
        res["transformers"] = bench_hf(model, a.device, a.concurrency, a.single_tokens, a.concurrent_tokens)
    if not a.skip_serve:
        res["serve_to_ready_s"] = serve_to_ready(model, a.device)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
