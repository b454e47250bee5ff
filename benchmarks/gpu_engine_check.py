"""The engine on a GPU against its own CPU path, plus GPU speed figures; prints JSON.

Checks (on the real SmolLM2 GGUF): greedy tokens and log-probs of the GPU path (Triton
attention, GGUF blocks kept quantised with the fused kernels, fp16) and of the plain-torch path
on the GPU (``GFX906_LLM_KERNELS=torch``) against the fp32 CPU path; device memory of the
weights against the file size. Speed: single-request decode tokens/s, output tokens/s at 16 and
64 concurrent requests, and the same through a real ``gfx906-llm serve`` process.

    python benchmarks/gpu_engine_check.py MODEL.gguf [--skip-server]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import torch

from gfx906_llm.llm import LLM
from gfx906_llm.sampling_params import SamplingParams

CHATS = ["What is the capital of France?", "Write a haiku about the sea.", "Explain what a hash table is."]
RAW = ["def fibonacci(n):", "Once upon a time, in a small village,"]


def _prompts(llm: LLM) -> list[list[int]]:
    tok = llm.get_tokenizer()
    ids = [llm.engine.encode(tok.apply_chat_template([{"role": "user", "content": c}], add_generation_prompt=True,
                                                     tokenize=False), add_special_tokens=False) for c in CHATS]
    return ids + [llm.engine.encode(r) for r in RAW]


def _greedy(llm: LLM, prompts, n=32):
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True, logprobs=0))
    return [(o.outputs[0].token_ids, [o.outputs[0].logprobs[i][t].logprob for i, t in enumerate(o.outputs[0].token_ids)])
            for o in outs]


def _compare(ref, got) -> dict:
    """Tokens agreeing before the first divergence, and the largest log-prob gap there."""
    matched, gaps = [], []
    for (rt, rl), (gt, gl) in zip(ref, got):
        n = 0
        while n < len(rt) and rt[n] == gt[n]:
            n += 1
        matched.append(n)
        gaps.append(max((abs(a - b) for a, b in zip(rl[:n], gl[:n])), default=0.0))
        if n < len(rt):  # the divergence must be a near-tie in the reference
            gaps[-1] = max(gaps[-1], abs(rl[n] - gl[n]))
    return {"matched_tokens": matched, "of": len(ref[0][0]), "max_logprob_diff": max(gaps)}


def _speed(llm: LLM, prompt: list[int]) -> dict:
    e = llm.engine
    llm.generate(prompt, SamplingParams(temperature=0, max_tokens=16))
    e.add_request("single", prompt, SamplingParams(temperature=0, max_tokens=256, ignore_eos=True))
    stamps = []
    while e.has_unfinished_requests():
        if e.step():
            stamps.append(time.perf_counter())
    res = {"single_decode_tok_s": (len(stamps) - 1) / (stamps[-1] - stamps[0])}
    for conc in (16, 64):
        t = time.perf_counter()
        outs = llm.generate([prompt] * conc, SamplingParams(temperature=0.8, seed=1, max_tokens=128, ignore_eos=True))
        dt = time.perf_counter() - t
        res[f"concurrent{conc}_output_tok_s"] = sum(len(o.outputs[0].token_ids) for o in outs) / dt
    return res


def _server(model: str) -> dict:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    log = open(os.path.join(os.environ.get("OUT", "/tmp"), "server.log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "gfx906_llm.cli", "serve", model, "--port", str(port),
                             "--max-model-len", "2048"], stdout=log, stderr=subprocess.STDOUT,
                            cwd=os.path.expanduser("~"))  # not the checkout: import the installed package
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
            if proc.poll() is not None or time.perf_counter() - t0 > 300:
                log.flush()
                raise RuntimeError("server did not start: " + open(log.name).read()[-3000:])
        ready = time.perf_counter() - t0
        body = {"model": httpx.get(f"{base}/v1/models").json()["data"][0]["id"], "stream": True,
                "messages": [{"role": "user", "content": "Write a long story about a robot."}],
                "max_tokens": 256, "temperature": 0, "ignore_eos": True}
        stamps = []
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: {") and '"content"' in line:
                    stamps.append(time.perf_counter())
        first = httpx.post(f"{base}/v1/chat/completions", json={**body, "stream": False, "max_tokens": 16,
                                                                "ignore_eos": False}, timeout=60).json()
        return {"serve_to_ready_s": ready, "stream_chunks": len(stamps),
                "server_single_decode_tok_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
                "server_reply": first["choices"][0]["message"]["content"]}
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--skip-server", action="store_true")
    ap.add_argument("--server-only", action="store_true")
    ap.add_argument("--torch-path-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_path_only:  # child process: the plain-torch kernels on the GPU
        llm = LLM(a.model, max_model_len=1024)
        print(json.dumps(_greedy(llm, _prompts(llm))))
        return
    res: dict = {"device": torch.cuda.get_device_name(0), "model": os.path.basename(a.model)}
    if a.server_only:
        res["server"] = _server(a.model)
        print(json.dumps(res, indent=2))
        return
    cpu = LLM(a.model, device="cpu", max_model_len=1024)
    prompts = _prompts(cpu)
    ref = _greedy(cpu, prompts)
    del cpu
    env = {**os.environ, "GFX906_LLM_KERNELS": "torch"}
    out = subprocess.run([sys.executable, __file__, a.model, "--torch-path-only"], env=env, capture_output=True,
                         text=True)
    if out.returncode == 0:
        res["torch_path_on_gpu_vs_cpu"] = _compare(ref, json.loads(out.stdout.strip().splitlines()[-1]))
    else:
        res["torch_path_on_gpu_error"] = out.stderr[-2000:]
    llm = LLM(a.model, max_model_len=4096)
    res["weights_MiB"] = llm.engine.loaded.weight_bytes / 2**20
    res["file_MiB"] = os.path.getsize(a.model) / 2**20
    res["quant_method"] = type(llm.engine.runner.model.model.layers[0].mlp.down_proj.quant_method).__name__
    res["triton_path_vs_cpu"] = _compare(ref, _greedy(llm, prompts))
    res["speed"] = _speed(llm, prompts[1])
    del llm
    torch.cuda.empty_cache()
    print(json.dumps(res, indent=2), flush=True)
    if not a.skip_server:
        res["server"] = _server(a.model)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
