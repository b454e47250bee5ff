"""GGUF fused dequantise+GEMV/GEMM: correctness at real sizes and speed; prints JSON.

Usage: python benchmarks/bench_gguf.py [--out FILE] [--quick]

Needs a GPU, torch and triton; not the ``gguf`` package (random blocks are made with numpy:
random bytes with finite fp16 scales). Sections:

* ``check``: for every block type, Triton dequantisation vs the torch dequantiser (bit-exact:
  the kernel runs without FMA contraction) and fused GEMV (M = 1, 8) / GEMM (M = 40) vs
  fp32 ``dequantise then matmul`` (max error relative to max |ref|), at 512 x 4096.
* ``decode``: Q4_0, Q4_K, Q6_K, Q8_0 at Llama-3-8B linear shapes (K -> N), M = 1 and 8:
  effective bandwidth = weight bytes (the kernel-layout planes = file bytes) / time, as a
  fraction of the copy bandwidth measured in the same run (``dst.copy_(src)`` of 1 GiB,
  read + write bytes). Timings are CUDA-graph replays of back-to-back calls, each on a
  different copy of the weight (together > 2x L2), so every call streams its weight from HBM.
  M = 4 runs the GEMV (4 rows per program share one decode), M = 8 the GEMM with a 16-row tile.
* ``sweep``: GEMV lanes / positions per lane at M = 1 (input for CONFIGS["cuda"]).
* ``prefill``: M = 512 TFLOP/s of the fused GEMM vs ``torch.matmul`` with an fp16 weight.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
try:
    import gfx906_llm.kernels  # noqa: F401  (installed: kernels/ maps to gfx906_llm.kernels)
except ImportError:  # plain checkout: let gfx906_llm.kernels / .quant resolve to the top-level dirs
    sys.path.insert(0, str(ROOT))
    import gfx906_llm

    gfx906_llm.__path__.append(str(ROOT))

from gfx906_llm.kernels.gfx906 import gguf_gemm, gguf_gemv  # noqa: E402
from gfx906_llm.kernels.gfx906.gguf_dequant import gguf_dequantize  # noqa: E402
from gfx906_llm.quant import gguf_torch as gt  # noqa: E402
from gfx906_llm.quant.gguf import GGML_QUANT_SIZES, QT  # noqa: E402

SHAPES = [(4096, 4096), (4096, 1024), (4096, 14336), (14336, 4096)]  # (K in, N out)
BENCH_TYPES = [QT.Q4_0, QT.Q4_K, QT.Q6_K, QT.Q8_0]
# byte offsets of the fp16 fields of each block (kept finite in random blocks)
HALF_POS = {QT.Q4_0: [0], QT.Q4_1: [0, 2], QT.Q5_0: [0], QT.Q5_1: [0, 2], QT.Q8_0: [0],
            QT.Q2_K: [80, 82], QT.Q3_K: [108], QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q6_K: [208],
            QT.IQ4_NL: [0], QT.IQ4_XS: [0]}


def random_raw(qt: int, n: int, k: int, rng: np.random.Generator) -> torch.Tensor:
    """``uint8 [n, row_bytes]`` random GGUF rows with finite, small fp16 scales."""
    elems, nbytes = GGML_QUANT_SIZES[qt]
    nb = n * k // elems
    b = rng.integers(0, 256, size=(nb, nbytes), dtype=np.uint8)
    for p in HALF_POS[qt]:
        b[:, p:p + 2] = (rng.standard_normal(nb) * 0.01).astype(np.float16).view(np.uint8).reshape(nb, 2)
    return torch.from_numpy(b).reshape(n, -1)


def graph_time(fns: list, reps: int = 5) -> float:
    """Seconds per call of ``fns`` (captured once in a CUDA graph, replayed ``reps`` times)."""
    for f in fns:
        f()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        with torch.cuda.graph(g, stream=s):
            for f in fns:
                f()
    g.replay()
    torch.cuda.synchronize()
    t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0.record()
    for _ in range(reps):
        g.replay()
    t1.record()
    torch.cuda.synchronize()
    return t0.elapsed_time(t1) / 1e3 / (reps * len(fns))


def copy_bandwidth() -> float:
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = graph_time([lambda: dst.copy_(src)] * 4, reps=5)
    return 2 * n / t


def check(rng) -> list[dict]:
    rows = []
    for qt in [t for t in gt.BLOCK_TYPES]:
        n, k = 512, 4096
        raw = random_raw(qt, n, k, rng).cuda()
        ref_w = gt.dequantize(raw, qt)  # fp32 [n, k]
        p = gt.pack_planes(raw, qt, k)
        tw = gguf_dequantize(p)
        row = {"type": QT(qt).name, "dequant_bit_exact": bool(torch.equal(tw.view(torch.int32), ref_w.view(torch.int32))),
               "bytes_planes": p.nbytes, "bytes_gguf": raw.numel()}
        for m, fn, name in ((1, gguf_gemv.gguf_gemv, "gemv_m1"), (3, gguf_gemv.gguf_gemv, "gemv_m3"),
                            (8, gguf_gemm.gguf_gemm, "gemm_m8"), (40, gguf_gemm.gguf_gemm, "gemm_m40")):
            x = torch.randn(m, k, device="cuda", dtype=torch.float16)
            bias = torch.randn(n, device="cuda", dtype=torch.float16)
            ref = x.float() @ ref_w.T + bias.float()
            out = torch.empty(m, n, device="cuda", dtype=torch.float16)
            fn(x, p, out, bias)
            row[name + "_rel_err"] = float((out.float() - ref).abs().max() / ref.abs().max())
        rows.append(row)
    return rows


def check_linear(rng) -> dict:
    """GGUFLinearMethod on the GPU: a merged q/k/v-like layer with mixed shard types (Q4_K, Q4_K,
    Q6_K) and a bias, vs the fp32 dequantised weight, at M = 1 (GEMV) and 64 (GEMM)."""
    from torch import nn

    from gfx906_llm.quant.gguf import GGUFConfig, GGUFWeight

    k, sizes, types = 1024, [512, 256, 256], [QT.Q4_K, QT.Q4_K, QT.Q6_K]
    layer = nn.Module()
    method = GGUFConfig.from_hf({}).get_method(layer, "model.layers.0.self_attn.qkv_proj")
    with torch.device("cuda"):
        method.create_weights(layer, k, sizes, torch.float16)
    raws = [random_raw(t, n, k, rng) for t, n in zip(types, sizes)]
    for i, (t, n, raw) in enumerate(zip(types, sizes, raws)):
        layer.weight.weight_loader(layer.weight, GGUFWeight(raw.numpy(), t, (n, k)), i)
    method.process_weights_after_loading(layer)
    w = torch.cat([gt.dequantize(r, t) for r, t in zip(raws, types)]).cuda()
    bias = torch.randn(sum(sizes), device="cuda", dtype=torch.float16)
    res = {"weight_bytes": layer.weight.numel(), "gguf_bytes": sum(r.numel() for r in raws)}
    for m in (1, 64):
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        ref = x.float() @ w.T + bias.float()
        out = method.apply(layer, x, bias)
        res[f"m{m}_rel_err"] = float((out.float() - ref).abs().max() / ref.abs().max())
    return res


def decode(rng, copy_bw: float, quick: bool) -> list[dict]:
    rows = []
    l2_bytes = 2 * 50 * 2**20
    for qt in BENCH_TYPES:
        for k, n in SHAPES[:2] if quick else SHAPES:
            raw = random_raw(qt, n, k, rng).cuda()
            p0 = gt.pack_planes(raw, qt, k)
            copies = [p0] + [gt.pack_planes(raw, qt, k) for _ in range(max(1, -(-l2_bytes // p0.nbytes)) - 1)]
            w16 = [torch.randn(n, k, device="cuda", dtype=torch.float16) for _ in range(max(2, -(-l2_bytes // (2 * n * k))))]
            for m in (1, 4, 8):
                x = torch.randn(m, k, device="cuda", dtype=torch.float16)
                out = torch.empty(m, n, device="cuda", dtype=torch.float16)
                row = {"type": QT(qt).name, "K": k, "N": n, "M": m, "weight_bytes": p0.nbytes}
                if m <= 4:
                    t = graph_time([lambda p=p: gguf_gemv.gguf_gemv(x, p, out) for p in copies])
                    row["gemv_us"] = t * 1e6
                    row["gemv_bw_GBs"] = p0.nbytes / t / 1e9
                    row["gemv_frac_copy_bw"] = p0.nbytes / t / copy_bw
                if m > 1:
                    t2 = graph_time([lambda p=p: gguf_gemm.gguf_gemm(x, p, out) for p in copies])
                    row["gemm16_us"] = t2 * 1e6
                    row["gemm16_frac_copy_bw"] = p0.nbytes / t2 / copy_bw
                tf = graph_time([lambda w=w: torch.nn.functional.linear(x, w) for w in w16])
                row["torch_fp16_us"] = tf * 1e6
                row["torch_fp16_frac_copy_bw"] = 2 * n * k / tf / copy_bw
                best = min(row.get("gemv_us", 1e30), row.get("gemm16_us", 1e30))
                row["speedup_vs_torch_fp16"] = tf / best * 1e6
                rows.append(row)
            del copies, w16
    return rows


def sweep(rng, copy_bw: float) -> list[dict]:
    """GEMV launch settings at M = 1 on 4096 -> 14336 (for choosing CONFIGS["cuda"])."""
    rows = []
    k, n = 4096, 14336
    for qt in (QT.Q4_0, QT.Q4_K, QT.Q6_K):
        raw = random_raw(qt, n, k, rng).cuda()
        copies = [gt.pack_planes(raw, qt, k) for _ in range(4)]
        x = torch.randn(1, k, device="cuda", dtype=torch.float16)
        out = torch.empty(1, n, device="cuda", dtype=torch.float16)
        for lanes, warps in ((128, 4), (256, 8)):
            for pos in (1, 2, 4):
                cfg = {"LANES": lanes, "POS": pos, "num_warps": warps, "num_stages": 1, "MIN_PROGRAMS": 528}
                t = graph_time([lambda p=p: gguf_gemv.gguf_gemv(x, p, out, config=cfg) for p in copies])
                rows.append({"type": QT(qt).name, "warps": warps, "POS": pos,
                             **gguf_gemv.launch_params(n, k, cfg), "us": t * 1e6,
                             "frac_copy_bw": copies[0].nbytes / t / copy_bw})
    return rows


def prefill(rng, quick: bool) -> list[dict]:
    import triton.testing

    rows = []
    m = 512
    for qt in BENCH_TYPES:
        for k, n in SHAPES[:1] if quick else SHAPES:
            raw = random_raw(qt, n, k, rng).cuda()
            p = gt.pack_planes(raw, qt, k)
            x = torch.randn(m, k, device="cuda", dtype=torch.float16)
            out = torch.empty(m, n, device="cuda", dtype=torch.float16)
            w16 = torch.randn(n, k, device="cuda", dtype=torch.float16)
            tg = triton.testing.do_bench(lambda: gguf_gemm.gguf_gemm(x, p, out), warmup=5, rep=40) / 1e3
            tt = triton.testing.do_bench(lambda: torch.matmul(x, w16.T), warmup=5, rep=40) / 1e3
            fl = 2 * m * n * k
            rows.append({"type": QT(qt).name, "K": k, "N": n, "M": m, "gguf_tflops": fl / tg / 1e12,
                         "torch_fp16_tflops": fl / tt / 1e12, "ratio_vs_fp16": tt / tg})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: check,decode,prefill")
    a = ap.parse_args()
    rng = np.random.default_rng()
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    import triton

    res["triton"] = triton.__version__
    res["copy_bw_GBs"] = copy_bandwidth() / 1e9
    skip = set(a.skip.split(","))
    if "check" not in skip:
        res["check"] = check(rng)
        res["check_linear"] = check_linear(rng)
    if "decode" not in skip:
        res["decode"] = decode(rng, res["copy_bw_GBs"] * 1e9, a.quick)
    if "sweep" not in skip:
        res["sweep"] = sweep(rng, res["copy_bw_GBs"] * 1e9)
    if "prefill" not in skip:
        res["prefill"] = prefill(rng, a.quick)
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
