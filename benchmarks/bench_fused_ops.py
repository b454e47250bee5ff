"""Fused small ops on a GPU: correctness at real sizes, per-op time, and decode speed with them on/off.

1. ``rms_norm``, ``fused_add_rms_norm``, ``silu_and_mul``, ``gelu_tanh_and_mul`` and
   ``rotary_embedding`` (Triton, ``kernels/gfx906/fused_ops.py``) against the torch reference on
   the same device, fp16 and bf16, Llama-3-8B / Gemma-3 sizes; time per call (CUDA events).
2. A random-weight Llama (transformers ``LlamaConfig``; hidden 2048, 16 layers, 32/8 heads,
   vocab 32000) saved as an HF folder, run by ``gfx906-llm bench latency`` / ``throughput`` code in
   one subprocess per setting: ``triton`` (every Triton kernel), ``fused_off`` (Triton attention
   and cache writes, torch small ops: the fused ops removed from the kernel table before the
   engine starts) and ``torch`` (``GFX906_LLM_KERNELS=torch``). Greedy tokens are compared.

    python benchmarks/bench_fused_ops.py [--out DIR]      # prints JSON; never asserts timings
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

import torch

KV_BYTES = 4 << 30  # 64 Ki tokens of this model's KV cache: the same budget in every engine
FUSED = ("rms_norm", "fused_add_rms_norm", "silu_and_mul", "gelu_tanh_and_mul", "rotary_embedding")


def _time_us(fn, iters=200) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(iters):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) * 1e3 / iters


def kernel_checks() -> list[dict]:
    from gfx906_llm.kernels import reference as ref
    from gfx906_llm.kernels.gfx906 import fused_ops as tri

    dev = "cuda"
    rows = []
    inv = 1.0 / (500000.0 ** (torch.arange(0, 128, 2, dtype=torch.float64, device=dev) / 128))
    cache128 = torch.cat([torch.outer(torch.arange(8192, device=dev, dtype=torch.float64), inv).cos(),
                          torch.outer(torch.arange(8192, device=dev, dtype=torch.float64), inv).sin()], -1).float()
    inv = 1.0 / (10000.0 ** (torch.arange(0, 256, 2, dtype=torch.float64, device=dev) / 256))
    f = torch.outer(torch.arange(8192, device=dev, dtype=torch.float64), inv)
    cache256 = torch.cat([f.cos(), f.sin()], -1).float()
    for dtype in (torch.float16, torch.bfloat16):
        tol = 1e-2 if dtype == torch.float16 else 2e-2
        for T in (1, 64, 2048):
            x = torch.randn(T, 4096, dtype=dtype, device=dev)
            r = torch.randn_like(x)
            w = torch.randn(4096, dtype=dtype, device=dev)
            g = torch.randn(T, 2 * 14336, dtype=dtype, device=dev) * 3
            gg = torch.randn(T, 2 * 2048, dtype=dtype, device=dev) * 3
            pos = torch.randint(0, 8192, (T,), device=dev)
            qkv = torch.randn(T, (32 + 16) * 128, dtype=dtype, device=dev)
            qkv2 = torch.randn(T, (4 + 2) * 256, dtype=dtype, device=dev)
            cases = {
                "rms_norm[4096]": (lambda m: m.rms_norm(x, w, 1e-6), None),
                "fused_add_rms_norm[4096]": (lambda m: m.fused_add_rms_norm(x, r, w, 1e-6), None),
                "rms_norm_gemma[4096]": (lambda m: m.rms_norm(x, w, 1e-6, 1.0), None),
                "q_norm[32x128 view]": (lambda m: m.rms_norm(qkv[:, :4096].view(T, 32, 128), w[:128], 1e-6), None),
                "silu_and_mul[14336]": (lambda m: m.silu_and_mul(g), None),
                "gelu_tanh_and_mul[2048]": (lambda m: m.gelu_tanh_and_mul(gg), None),
                "rotary[32x8 d128]": (lambda m, c=qkv: m.rotary_embedding(
                    pos, c[:, :4096].view(T, 32, 128), c[:, 4096:5120].view(T, 8, 128), cache128), "rope"),
                "rotary[4x1 d256]": (lambda m, c=qkv2: m.rotary_embedding(
                    pos, c[:, :1024].view(T, 4, 256), c[:, 1024:1280].view(T, 1, 256), cache256), "rope"),
            }
            for name, (fn, kind) in cases.items():
                if kind == "rope":  # the Triton op rotates in place: keep its result, restore the input
                    src = qkv if "d128" in name else qkv2
                    keep = src.clone()
                    want = fn(ref)
                    got = tuple(t.clone() for t in fn(tri))
                    src.copy_(keep)
                    t_tri = _time_us(lambda: fn(tri))
                    src.copy_(keep)
                else:
                    want, got = fn(ref), fn(tri)
                    t_tri = _time_us(lambda: fn(tri))
                t_ref = _time_us(lambda: fn(ref))
                want = want if isinstance(want, tuple) else (want,)
                got = got if isinstance(got, tuple) else (got,)
                err = max(float((a.float() - b.float()).abs().max()) for a, b in zip(want, got))
                ok = all(torch.allclose(a.float(), b.float(), atol=tol, rtol=tol) for a, b in zip(want, got))
                rows.append({"op": name, "dtype": str(dtype).replace("torch.", ""), "T": T, "ok": ok,
                             "max_abs_err": err, "triton_us": round(t_tri, 2), "torch_us": round(t_ref, 2)})
    return rows


def make_model(folder: str) -> None:
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = 32000
    cfg = tf.LlamaConfig(vocab_size=vocab, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096,
                         rope_theta=500000.0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = tf.LlamaForCausalLM(cfg).half().eval()
    model.save_pretrained(folder)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tf.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="w1", unk_token="w0").save_pretrained(folder)
    del model
    torch.cuda.empty_cache()


def child(setting: str, model: str) -> dict:
    """One setting in this process: greedy tokens, bench latency at batch 1 and 16, bench throughput."""
    from gfx906_llm import platform

    if setting == "fused_off":
        for op in FUSED:
            platform._TRITON_OPS.pop(op, None)
    from gfx906_llm.bench import latency, throughput
    from gfx906_llm.bench.cli import add_bench_parser
    from gfx906_llm.llm import LLM
    from gfx906_llm.sampling_params import SamplingParams

    res: dict = {"setting": setting}
    llm = LLM(model, max_model_len=2048, kv_cache_memory_bytes=KV_BYTES)
    from gfx906_llm.layers.norm import _OPS

    prompts = [[(37 * i + 11 * j) % 31000 + 100 for j in range(24)] for i in range(4)]
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=48, ignore_eos=True))
    res["greedy"] = [o.outputs[0].token_ids for o in outs]
    res["ops_used"] = {f"{k[0]}@{k[1]}": f"{v.__module__}.{v.__name__}" for k, v in _OPS.items()}
    del llm, outs
    gc.collect()
    torch.cuda.empty_cache()
    ap = argparse.ArgumentParser()
    add_bench_parser(ap.add_subparsers(dest="command"))
    for bs in (1, 16):
        a = ap.parse_args(["bench", "latency", model, "--input-len", "32", "--output-len", "128", "--batch-size",
                           str(bs), "--num-iters", "3", "--num-iters-warmup", "1", "--max-model-len", "2048",
                           "--kv-cache-memory-bytes", str(KV_BYTES)])
        r = latency.run(a)
        res[f"latency_bs{bs}"] = {k: r[k] for k in ("avg_latency_s", "ttft_ms", "tpot_ms", "output_tokens_per_s")}
        gc.collect()
        torch.cuda.empty_cache()
    a = ap.parse_args(["bench", "throughput", model, "--num-prompts", "64", "--input-len", "128", "--output-len",
                       "128", "--max-model-len", "2048", "--kv-cache-memory-bytes", str(KV_BYTES)])
    r = throughput.run(a)
    res["throughput"] = {k: r[k] for k in ("elapsed_s", "requests_per_s", "output_tokens_per_s", "total_tokens_per_s")}
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default="/tmp/rand_llama_2048x16")
    a = ap.parse_args()
    if a.child:
        print("RESULT " + json.dumps(child(a.child, a.model)), flush=True)
        return
    res: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    t = time.perf_counter()
    res["kernels"] = kernel_checks()
    res["kernel_check_s"] = time.perf_counter() - t
    res["all_ok"] = all(r["ok"] for r in res["kernels"])
    print(json.dumps(res, indent=1), flush=True)
    t = time.perf_counter()
    make_model(a.model)
    res["make_model_s"] = time.perf_counter() - t
    for setting in ("triton", "fused_off", "torch"):
        env = dict(os.environ)
        if setting == "torch":
            env["GFX906_LLM_KERNELS"] = "torch"
        t = time.perf_counter()
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", setting, "--model", a.model],
                           env=env, capture_output=True, text=True, cwd="/tmp")
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if p.returncode or not line:
            res[setting] = {"error": p.stderr[-3000:]}
        else:
            res[setting] = json.loads(line[-1][7:])
        res[setting]["wall_s"] = time.perf_counter() - t
        print(json.dumps({setting: res[setting]}), flush=True)
    base = res["triton"].get("greedy")
    for s in ("fused_off", "torch"):
        other = res[s].get("greedy")
        if base and other:
            res[f"greedy_match_{s}_vs_triton"] = [next((i for i, (x, y) in enumerate(zip(u, v)) if x != y), len(u))
                                                  for u, v in zip(base, other)]
    for s in ("triton", "fused_off", "torch"):
        res[s].pop("greedy", None)
    with open(os.path.join(a.out, "bench_fused_ops.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
