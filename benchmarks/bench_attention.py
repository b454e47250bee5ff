"""Benchmark of the Triton unified attention on the GPU (prints JSON; never asserts timings).

Decode (q_len 1), Llama-3-8B heads (32 q / 8 kv, head_dim 128, block 16, scattered blocks), batch
1/8/64 x context 1k..32k: time replayed from a CUDA graph (as the engine runs decode; eager time
too, which at batch 1 is mostly Python launch cost), KV bytes read per second and its fraction of the copy bandwidth
measured in the same run (a 1 GiB device-to-device copy, bytes read + written / time), and the
time of torch's scaled_dot_product_attention on the same K/V stored contiguously. Prefill (one
request of 512..8k tokens, causal): TFLOP/s (2 * N^2 * Hq * D for causal QK^T and PV) against
torch SDPA's flash backend. ``--sweep`` also times alternative launch settings of the ``cuda``
CONFIGS entry.

``--decode-graph`` (alone: ``--decode-graph-only``) times decode as the engine replays it: graphs
captured with ``max_seq_len`` 8192 (max_model_len) at batch 1/8, real contexts 128..8192, so the
segment count is the capture-time one; it compares the split-KV forms in the same run: "fixed"
(every segment stores partials, second reduce launch: the old behaviour), "adaptive" (segments
follow the real seq_len, second launch), "fused" (adaptive, reduction in the last program), and
fused with 1 or 2 tiles per segment. Microseconds per call = per layer.

Run from the repository root: ``python benchmarks/bench_attention.py [--quick] [--sweep]
[--decode-graph | --decode-graph-only] [--out FILE]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_attention_check import import_kernels, make_batch  # noqa: E402

HQ, HKV, D, BS = 32, 8, 128, 16


def bench(fn) -> float:
    """Median milliseconds (triton.testing.do_bench, L2 flushed between runs)."""
    import triton.testing

    return triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median")


def bench_graph(fns) -> float:
    """Milliseconds per call of the closures ``fns`` captured back to back in one CUDA graph (how
    the engine runs decode: no launch gaps); each closure reads its own copy of the data, so with
    enough copies (> 2x L2 in all) no call finds its K/V in L2. Median of 20 replays."""
    for f in fns:  # compile / warm up outside the capture
        f()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fns:
            f()
    times = []
    for _ in range(20):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / len(fns))
    return sorted(times)[len(times) // 2]


def copies_for(nbytes: int) -> int:
    """How many copies of ``nbytes`` of K/V exceed 256 MiB (several times any GPU's L2)."""
    return max(1, min(64, -(-(256 << 20) // nbytes)))


def copy_bandwidth() -> float:
    """Device-to-device copy, (read + written bytes) / time, bytes/s."""
    x = torch.empty(1 << 29, dtype=torch.float16, device="cuda")  # 1 GiB
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x))
    return 2 * x.numel() * 2 / (ms * 1e-3)


def decode_case(batch, ctx, bw):
    from gfx906_llm.kernels.gfx906.attention import unified_attention

    kv_bytes = batch * ctx * HKV * D * 2 * 2
    n = copies_for(kv_bytes)
    data = [make_batch([(1, ctx - 1)] * batch, HQ, HKV, D, BS, torch.float16, spare_blocks=0) for _ in range(n)]
    outs = [torch.empty_like(d[0][:batch]) for d in data]

    def call(i):
        q, kc, vc, qsl, sl, bt = data[i]
        return lambda: unified_attention(q[:batch], kc, vc, qsl, sl, bt, D ** -0.5, out=outs[i], max_query_len=1,
                                         max_seq_len=ctx)

    eager_ms = bench(call(0))
    ms = bench_graph([call(i) for i in range(n)])
    data = outs = None  # free the KV copies before the dense ones
    dense = [(torch.randn(batch, HQ, 1, D, dtype=torch.float16, device="cuda"),
              torch.randn(batch, HKV, ctx, D, dtype=torch.float16, device="cuda"),
              torch.randn(batch, HKV, ctx, D, dtype=torch.float16, device="cuda")) for _ in range(n)]
    sdpa_ms = bench_graph([(lambda qd=qd, kd=kd, vd=vd: F.scaled_dot_product_attention(qd, kd, vd, enable_gqa=True))
                           for qd, kd, vd in dense])
    del dense
    return {"batch": batch, "ctx": ctx, "graph_ms": round(ms, 4), "eager_ms": round(eager_ms, 4),
            "kv_GBps": round(kv_bytes / ms / 1e6, 1), "frac_of_copy_bw": round(kv_bytes / (ms * 1e-3) / bw, 3),
            "sdpa_graph_ms": round(sdpa_ms, 4), "speedup_vs_sdpa": round(sdpa_ms / ms, 2), "graph_copies": n}


SPLIT_FORMS = {  # name: CONFIGS overrides (min_tiles_per_segment also sets the capture-time cap)
    "fixed": {"adaptive": False, "fused_reduce": False, "min_tiles_per_segment": 4},
    "adaptive": {"adaptive": True, "fused_reduce": False, "min_tiles_per_segment": 4},
    "fused": {"adaptive": True, "fused_reduce": True, "min_tiles_per_segment": 4},
    "fused_min2": {"adaptive": True, "fused_reduce": True, "min_tiles_per_segment": 2},
    "fused_min1": {"adaptive": True, "fused_reduce": True, "min_tiles_per_segment": 1},
    # the old form with the segment count picked for the real context (what an eager launch with
    # max_seq_len = ctx gets): the target that adaptive segments approach under a graph
    "fixed_exact_hint": {"adaptive": False, "fused_reduce": False, "min_tiles_per_segment": 4, "hint": "ctx"},
}


def decode_graph_cases(max_seq_len=8192, batches=(1, 8), ctxs=(128, 200, 512, 2048, 8192)):
    """us per call of graph-replayed decode captured for ``max_seq_len``, per split-KV form."""
    from gfx906_llm.kernels.gfx906 import attention as A

    key = A._config_key()
    base = dict(A.CONFIGS[key])
    rows = []
    for batch in batches:
        for ctx in ctxs:
            kv_bytes = batch * ctx * HKV * D * 2 * 2
            n = copies_for(kv_bytes)
            data = [make_batch([(1, ctx - 1)] * batch, HQ, HKV, D, BS, torch.float16, spare_blocks=0)
                    for _ in range(n)]
            outs = [torch.empty_like(d[0][:batch]) for d in data]
            row = {"batch": batch, "ctx": ctx, "capture_max_seq_len": max_seq_len, "graph_copies": n}
            ref = None
            bn = A._launch_params(base, HQ // HKV, D, 1)[2]
            for form, over in SPLIT_FORMS.items():
                A.CONFIGS[key] = cfg = dict(base, **over)
                hint = ctx if over.get("hint") == "ctx" else max_seq_len
                row[f"{form}_nseg"] = A.pick_segments(cfg, batch * HKV, hint, bn, A.num_cus(0))

                def call(i, hint=hint):
                    q, kc, vc, qsl, sl, bt = data[i]
                    return lambda: A.unified_attention(q[:batch], kc, vc, qsl, sl, bt, D ** -0.5, out=outs[i],
                                                       max_query_len=1, max_seq_len=hint)

                ms = bench_graph([call(i) for i in range(n)])
                if ref is None:
                    ref = outs[0].clone()
                row[f"{form}_us"] = round(ms * 1e3, 2)
                row[f"{form}_maxdiff"] = round((outs[0].float() - ref.float()).abs().max().item(), 5)
            A.CONFIGS[key] = base
            row["speedup_fused_vs_fixed"] = round(row["fixed_us"] / row["fused_us"], 2)
            rows.append(row)
            data = outs = None  # free the KV copies before the next shape
    return rows


def prefill_case(n):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from gfx906_llm.kernels.gfx906.attention import unified_attention

    q, kc, vc, qsl, sl, bt = make_batch([(n, 0)], HQ, HKV, D, BS, torch.float16, spare_blocks=0)
    q = q[:n].contiguous()
    out = torch.empty_like(q)
    ms = bench(lambda: unified_attention(q, kc, vc, qsl, sl, bt, D ** -0.5, out=out, max_query_len=n, max_seq_len=n))
    flops = 2.0 * n * n * HQ * D
    qd = q.transpose(0, 1).unsqueeze(0)  # [1, Hq, N, D]
    kd = torch.randn(1, HQ, n, D, dtype=torch.float16, device="cuda")
    vd = torch.randn_like(kd)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        sdpa_ms = bench(lambda: F.scaled_dot_product_attention(qd, kd, vd, is_causal=True))
    return {"tokens": n, "ms": round(ms, 4), "tflops": round(flops / ms / 1e9, 1),
            "sdpa_flash_tflops": round(flops / sdpa_ms / 1e9, 1), "frac_of_sdpa": round(sdpa_ms / ms, 3)}


def sweep(bw):
    """Time alternative cuda launch settings on a few shapes (for choosing CONFIGS['cuda'])."""
    from gfx906_llm.kernels.gfx906 import attention as A

    base = {k: (dict(v) if isinstance(v, dict) else v) for k, v in A.CONFIGS["cuda"].items()}
    rows = []
    for dec in ({"BLOCK_N": 64, "num_warps": 4, "num_stages": 3}, {"BLOCK_N": 64, "num_warps": 4, "num_stages": 2},
                {"BLOCK_N": 128, "num_warps": 4, "num_stages": 2}, {"BLOCK_N": 128, "num_warps": 8, "num_stages": 2}):
        for ppc in (2, 4):
            A.CONFIGS["cuda"]["decode"] = dict(dec, dot=True)
            A.CONFIGS["cuda"]["programs_per_cu"] = ppc
            r = [decode_case(b, c, bw)["frac_of_copy_bw"] for b, c in ((1, 8192), (8, 8192), (64, 4096), (1, 32768))]
            rows.append({"decode": dec, "programs_per_cu": ppc, "frac_b1_8k,b8_8k,b64_4k,b1_32k": r})
    A.CONFIGS["cuda"].update(base)
    for pre in ({"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 2},
                {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3},
                {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
                {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 2}):
        A.CONFIGS["cuda"]["prefill"] = pre
        try:
            rows.append({"prefill": pre, "frac_of_sdpa_2k,8k": [prefill_case(n)["frac_of_sdpa"] for n in (2048, 8192)]})
        except Exception as e:  # e.g. out of shared memory
            rows.append({"prefill": pre, "error": str(e)[:200]})
    A.CONFIGS["cuda"].update(base)
    return rows


def main(argv=None) -> int:
    argv = argv or []
    import_kernels()
    from gfx906_llm.kernels.gfx906.attention import CONFIGS, _config_key

    res = {"device": torch.cuda.get_device_name(), "config_key": _config_key(), "config": CONFIGS.get(_config_key())}
    if "--decode-graph-only" in argv:
        res["decode_graph"] = decode_graph_cases()
        return _emit(res, argv)
    bw = copy_bandwidth()
    res["copy_bw_GBps"] = round(bw / 1e9, 1)
    quick = "--quick" in argv
    ctxs = (1024, 8192, 32768) if quick else (1024, 2048, 4096, 8192, 16384, 32768)
    res["decode"] = [decode_case(b, c, bw) for b in (1, 8, 64) for c in ctxs]
    res["prefill"] = [prefill_case(n) for n in ((512, 2048, 8192) if quick else (512, 1024, 2048, 4096, 8192))]
    if "--sweep" in argv:
        res["sweep"] = sweep(bw)
    if "--decode-graph" in argv:
        res["decode_graph"] = decode_graph_cases()
    return _emit(res, argv)


def _emit(res, argv) -> int:
    text = json.dumps(res, indent=1)
    print(text)
    if res.get("decode_graph"):  # short table last: us per call (= per layer) of each form
        forms = list(SPLIT_FORMS)
        print("batch   ctx " + " ".join(f"{f:>16}" for f in forms))
        for r in res["decode_graph"]:
            print(f"{r['batch']:5d} {r['ctx']:5d} " + " ".join(f"{r[f + '_us']:9.2f}us/{r[f + '_nseg']:<3d}"
                                                            for f in forms))
    if "--out" in argv:
        Path(argv[argv.index("--out") + 1]).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
