"""Decode-sized linears the way a decode step runs them: a chain of Llama-3-8B layers; prints JSON.

Usage: python benchmarks/bench_decode_chain.py [--m 1 8] [--formats w4a16,Q4_0,Q4_K,Q6_K,Q8_0,fp16]
       [--out FILE] [--patch '{"w4a16_gemv:cuda.m1.half2.programs_per_cu": 12}']

``bench_w4a16.py`` and ``bench_gguf.py`` time one shape at a time: many calls of the same shape,
each on its own copy of the weight. A decode step instead runs, per layer, q/k/v (one merged
4096 -> 6144 weight), o_proj (4096 -> 4096), gate/up (one merged 4096 -> 28672) and down_proj
(14336 -> 4096), each on its own weight, 32 times over. This benchmark times exactly that order on
``L`` layers of distinct random weights (together > 3x L2), captured in one CUDA graph, with
the launch options the engine uses (PDL on sm_90+ unless ``GFX906_LLM_PDL=0``).

Per format and M (rows of activations), per layer:

* ``us_per_layer`` and ``frac_of_copy_bw`` = weight bytes of the layer / time / copy bandwidth
  (the SM copy of ``bench_w4a16.copy_bandwidth``, read + write bytes of 1 GiB);
* ``speedup_vs_fp16``: the fp16 chain's time (``torch.nn.functional.linear``) / this time.

Modes: W4A16 ``call``: ``w4a16_linear`` returning a tensor (the GEMV, then the split-K sum as its
own launch, which in the engine is folded into the next kernel: RMSNorm, SiLU-and-mul or the
rotary); ``gemv``: the GEMV alone, its partials left in the accumulator (the bound a fused
consumer approaches; the accumulator is never read during the replays and is reset after
them). GGUF ``call``: the q8_1
quantiser then the integer-dot GEMV for each linear (as ``GGUFLinearMethod.apply`` runs them);
``kernel``: the GEMV alone on activations quantised beforehand.
After the timed replays the first layer's outputs (W4A16 ``call``, both GGUF modes) are
recomputed eagerly with the same kernels and compared with ``x @ dequant(W).T`` in fp32
(``err``: max |error| / max |reference|).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from bench_gguf import random_raw  # also puts the checkout's gfx906_llm on the path when not installed
from bench_w4a16 import copy_bandwidth, graph_time
from gfx906_llm.quant.gguf import QT

LAYER = [("qkv", 4096, 6144), ("o", 4096, 4096), ("gate_up", 4096, 28672), ("down", 14336, 4096)]  # (name, K, N)
GGUF_TYPES = ("Q4_0", "Q4_K", "Q6_K", "Q8_0")  # the integer-dot GEMV's types


def _layers(l2: int, layer_bytes: int, min_layers: int) -> int:
    return max(min_layers, -(-3 * l2 // layer_bytes))


def fp16_chain(m: int, l2: int) -> dict:
    nbytes = sum(2 * k * n for _, k, n in LAYER)
    layers = [[torch.randn(n, k, device="cuda", dtype=torch.float16) * k ** -0.5 for _, k, n in LAYER]
              for _ in range(_layers(l2, nbytes, 2))]
    xs = {k: torch.randn(m, k, device="cuda", dtype=torch.float16) for _, k, _ in LAYER}
    fns = [lambda w=w: torch.nn.functional.linear(xs[w.shape[1]], w) for lay in layers for w in lay]
    t = graph_time(fns) * len(LAYER)
    return {"format": "fp16", "M": m, "mode": "torch", "layers": len(layers), "layer_bytes": nbytes, "us_per_layer": t * 1e6}


def w4a16_chain(m: int, l2: int) -> list[dict]:
    from gfx906_llm.kernels.gfx906.w4a16_gemm import w4a16_linear
    from gfx906_llm.layers.splitk import reset_accumulators
    from gfx906_llm.quant.packing import PackedWeight, dequantize_internal

    nbytes = sum(k * n // 2 + (k // 128) * n * 2 for _, k, n in LAYER)
    layers = []
    for _ in range(_layers(l2, nbytes, 4)):
        lay = []
        for _, k, n in LAYER:
            qw = torch.randint(-2**31, 2**31 - 1, (k // 8, n), dtype=torch.int32, device="cuda")
            s = (torch.rand(k // 128, n, device="cuda") * 0.02 / k ** 0.5 + 1e-4).half()
            lay.append((k, n, qw, s))
        layers.append(lay)
    xs = {k: torch.randn(m, k, device="cuda", dtype=torch.float16) for _, k, _ in LAYER}
    rows = []
    for mode in ("call", "gemv"):
        # gemv: partials stay in the device's accumulator (their sum grows over the replays and is
        # never read; reset afterwards)
        fns = [lambda a=a, d=mode == "gemv": w4a16_linear(xs[a[0]], a[2], a[3], None, None, None, 4, 128, a[0],
                                                          defer_reduce=d)
               for lay in layers for a in lay]
        t = graph_time(fns) * len(LAYER)
        reset_accumulators()
        row = {"format": "w4a16", "M": m, "mode": mode, "layers": len(layers), "layer_bytes": nbytes,
               "us_per_layer": t * 1e6}
        if mode == "call":  # check layer 0 (eager, the same kernels)
            errs = []
            for k, n, qw, s in layers[0]:
                ref = xs[k].float() @ dequantize_internal(PackedWeight(qw, s, None, None, 4, 128, k, n)).t()
                y = w4a16_linear(xs[k], qw, s, None, None, None, 4, 128, k)
                errs.append(((y.float() - ref).abs().max() / ref.abs().max()).item())
            row["err"] = max(errs)
        rows.append(row)
    return rows


def gguf_chain(qt_name: str, m: int, l2: int, rng) -> list[dict]:
    from gfx906_llm.kernels.gfx906 import gguf_mmvq as mq
    from gfx906_llm.kernels.gfx906.gguf_dequant import gguf_dequantize
    from gfx906_llm.quant import gguf_torch as gt

    qt = int(QT[qt_name])
    raws = {(k, n): random_raw(qt, n, k, rng).cuda() for _, k, n in LAYER}
    lay0 = [gt.pack_planes(raws[k, n], qt, k) for _, k, n in LAYER]
    nbytes = sum(p.nbytes for p in lay0)
    layers = [lay0] + [[gt.pack_planes(raws[k, n], qt, k) for _, k, n in LAYER]
                       for _ in range(_layers(l2, nbytes, 4) - 1)]
    xs = {k: torch.randn(m, k, device="cuda", dtype=torch.float16) for _, k, _ in LAYER}
    xqs = {k: mq.quantize_q8_1(x) for k, x in xs.items()}
    outs = {n: torch.empty(m, n, device="cuda", dtype=torch.float16) for _, _, n in LAYER}
    rows = []
    for mode in ("call", "kernel"):
        fns = [lambda p=p: mq.gguf_mmvq(xs[p.k], p, outs[p.n], xq=xqs[p.k] if mode == "kernel" else None)
               for lay in layers for p in lay]
        t = graph_time(fns) * len(LAYER)
        errs = []
        for p in lay0:
            ref = xs[p.k].float() @ gguf_dequantize(p).float().t()
            y = mq.gguf_mmvq(xs[p.k], p, outs[p.n], xq=xqs[p.k] if mode == "kernel" else None)
            errs.append(((y.float() - ref).abs().max() / ref.abs().max()).item())
        rows.append({"format": qt_name, "M": m, "mode": mode, "layers": len(layers), "layer_bytes": nbytes,
                     "us_per_layer": t * 1e6, "err": max(errs)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, nargs="*", default=[1, 8])
    ap.add_argument("--formats", default="w4a16,Q4_0,Q4_K,Q6_K,Q8_0,fp16")
    ap.add_argument("--out", default=None)
    ap.add_argument("--patch", default="{}", help="kernel CONFIGS entries to set, as profile_graph.py --patch")
    a = ap.parse_args()
    from profile_graph import apply_patch

    apply_patch(json.loads(a.patch))
    t0 = time.time()
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    bw = copy_bandwidth()
    copy_bw = max(bw.values()) * 1e9
    from gfx906_llm.kernels.gfx906.pdl import pdl_enabled

    res = {"device": props.name, "torch": torch.__version__, "pdl": pdl_enabled(torch.device("cuda")),
           "patch": json.loads(a.patch),
           **bw, "copy_bw_GBps": copy_bw / 1e9, "layer": LAYER, "rows": []}
    rng = np.random.default_rng(0)
    formats = a.formats.split(",")
    for m in a.m:
        fp = fp16_chain(m, l2)
        rows = [fp]
        for f in formats:
            if f == "w4a16":
                rows += w4a16_chain(m, l2)
            elif f in GGUF_TYPES:
                rows += gguf_chain(f, m, l2, rng)
            torch.cuda.empty_cache()
        for r in rows:
            r["frac_of_copy_bw"] = r["layer_bytes"] / (r["us_per_layer"] * 1e-6) / copy_bw
            r["speedup_vs_fp16"] = fp["us_per_layer"] / r["us_per_layer"]
            if "fp16" in formats or r is not fp:
                res["rows"].append(r)
        if a.out:
            with open(a.out, "w") as fh:
                json.dump(res, fh, indent=1)
    res["elapsed_s"] = time.time() - t0
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(res, fh, indent=1)
    print(f"copy {res['copy_bw_GBps']:.0f} GB/s, pdl {res['pdl']}")
    for r in res["rows"]:
        print(f"M{r['M']} {r['format']:6s} {r['mode']:7s} {r['us_per_layer']:8.1f} us/layer  "
              f"{r['frac_of_copy_bw']:.3f} of copy  {r['speedup_vs_fp16']:.2f}x fp16  err {r.get('err', 0):.1e}")


if __name__ == "__main__":
    sys.exit(main())
