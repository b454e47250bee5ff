"""GGUF fused dequantise+GEMV/GEMM: correctness at real sizes and speed; prints JSON.

Usage: python benchmarks/bench_gguf.py [--out FILE] [--quick] [--sections mmvq,decode,prefill,check]

Needs a GPU, torch and triton; not the ``gguf`` package (random blocks are made with numpy:
random bytes with finite fp16 scales). Sections:

* ``check``: for every block type, Triton dequantisation vs the torch dequantiser (bit-exact:
  the kernel runs without FMA contraction) and GEMV (M = 1, 3; the integer-dot path for
  Q4_0/Q4_K/Q6_K/Q8_0; M = 8 too) / GEMM (M = 40) vs fp32 ``dequantise then matmul`` (max error relative
  to max |ref|), at 512 x 4096; ``check_mmvq``: the integer-dot GEMV vs its q8_1 oracle.
* ``decode``: Q4_0, Q4_K, Q6_K, Q8_0 at Llama-3-8B linear shapes (K -> N), M = 1, 4 and 8:
  effective bandwidth = weight bytes (the kernel-layout planes = file bytes) / time, as a
  fraction of the copy bandwidth measured in the same run (the faster of ``dst.copy_(src)`` and
  an SM copy kernel, 1 GiB, read + write bytes). Timings are CUDA-graph replays of back-to-back calls, each on a
  different copy of the weight (together > 2x L2), so every call streams its weight from HBM.
  The integer-dot GEMV is timed with this arch's CONFIGS (with and without its q8_1 launch)
  and for several launch candidates (``CANDIDATES``: input for CONFIGS["cuda"]); also the
  float GEMV (M = 1), the 16-row GEMM (M = 4, 8) and torch fp16. A read-only bandwidth
  (``sum`` of 1 GiB) is printed for reference.
* ``prefill``: M = 64, 128, 512 TFLOP/s of the fused GEMM and of dequantise + torch matmul vs
  ``torch.matmul`` with an fp16 weight.
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

SHAPES = [(4096, 4096), (4096, 1024), (4096, 14336), (14336, 4096), (4096, 28672)]  # (K in, N out)
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
    """Read + write bytes/s of 1 GiB copies: the faster of ``dst.copy_(src)`` (a memcpy node in a
    graph: ~2.7 TB/s on an H200) and an SM kernel copy (``torch.neg(src, out=dst)``, fp16: ~4.1
    TB/s), as ``bench_w4a16.copy_bandwidth``. Runs before 2026-11-21 divided by the memcpy figure
    only, which made every fraction ~1.5x too kind."""
    n = 1 << 30
    src = torch.empty(n // 2, dtype=torch.float16, device="cuda")
    dst = torch.empty_like(src)
    t_mem = graph_time([lambda: dst.copy_(src)] * 4, reps=5)
    t_sm = graph_time([lambda: torch.neg(src, out=dst)] * 4, reps=5)
    return 2 * n / min(t_mem, t_sm)


def read_bandwidth() -> float:
    """Bytes/s of ``sum`` over 1 GiB of fp32 (read only)."""
    src = torch.randn(1 << 28, device="cuda")
    t = graph_time([lambda: src.sum()] * 4, reps=5)
    return src.numel() * 4 / t


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
                            (8, gguf_gemv.gguf_gemv, "gemv_m8"), (40, gguf_gemm.gguf_gemm, "gemm_m40")):
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


def check_mmvq(rng) -> list[dict]:
    """Integer-dot GEMV at real sizes (4096 -> 4096 and 14336 -> 4096, M = 1, 3, 8; the arch's
    DOT, e.g. PTX dp4a, and the portable DOT = 0): fresh random weights and activations, NaN-
    poisoned outputs, error vs the q8_1 oracle (float64) and vs the fp32 product; the q8_1
    quantiser vs its torch reference (mismatching codes / scales / sums)."""
    from gfx906_llm.kernels.gfx906 import gguf_mmvq as mq

    rows = []
    for qt in BENCH_TYPES:
        for k, n in ((4096, 4096), (14336, 4096)):
            raw = random_raw(qt, n, k, rng).cuda()
            w = gt.dequantize(raw, qt).double()  # [n, k]
            p = gt.pack_planes(raw, qt, k)
            for m in (1, 3, 8):
                x = (torch.randn(m, k, device="cuda") * torch.rand(m, 1, device="cuda") * 4).half()
                refq = mq.quantize_q8_1_reference(x)
                got = mq.quantize_q8_1(x)
                xh = mq.dequantize_q8_1_reference(*refq)
                bias = torch.randn(n, device="cuda", dtype=torch.float16)
                ref = xh @ w.T + bias.double()
                ref32 = x.double() @ w.T + bias.double()
                row = {"type": QT(qt).name, "K": k, "N": n, "M": m,
                       "q8_1_mismatch": [int((a != b).sum()) for a, b in zip(got, refq)]}
                for dot in sorted({mq.config()["DOT"], 0}):
                    out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.float32)
                    mq.gguf_mmvq(x, p, out, bias, config_override=dict(mq.config(), DOT=dot))
                    torch.cuda.synchronize()
                    row[f"dot{dot}_nan"] = int(out.isnan().sum())
                    row[f"dot{dot}_rel_err_q8_1"] = float((out.double() - ref).abs().max() / ref.abs().max())
                    row[f"dot{dot}_rel_err_fp32"] = float((out.double() - ref32).abs().max() / ref32.abs().max())
                rows.append(row)
    return rows


def _copies(qt, n, k, rng, l2_bytes=2 * 50 * 2**20):
    raw = random_raw(qt, n, k, rng).cuda()
    p0 = gt.pack_planes(raw, qt, k)
    return [p0] + [gt.pack_planes(raw, qt, k) for _ in range(max(1, -(-l2_bytes // p0.nbytes)) - 1)]


#: integer-dot GEMV launch candidates timed at every decode shape: (LANES, num_warps, POS, X_BCAST)
CANDIDATES = [(128, 4, 1, 0), (128, 4, 2, 0), (128, 4, 4, 0), (128, 4, 4, 1), (64, 2, 4, 0),
              (128, 4, 1, 0, "evict_first"), (128, 4, 4, 1, "evict_first")]  # (lanes, warps, POS, X_BCAST[, EVICT])


def _cand(c) -> str:
    return f"L{c[0]}w{c[1]}P{c[2]}X{c[3]}" + ("E" if len(c) > 4 else "")


def decode(rng, copy_bw: float, quick: bool) -> list[dict]:
    """M = 1, 4 and 8 at the Llama-3-8B shapes: integer-dot GEMV for every launch candidate
    and for this arch's CONFIGS (``mmvq``: with its q8_1 quantiser launch, as
    ``GGUFLinearMethod`` runs it; ``kern``: activations quantised beforehand, as the shards of a
    merged layer can share them),
    the float GEMV (M = 1) / 16-row GEMM (M = 8) and torch fp16."""
    from gfx906_llm.kernels.gfx906 import gguf_mmvq as mq

    rows = []
    l2_bytes = 2 * 50 * 2**20
    for qt in BENCH_TYPES:
        for k, n in SHAPES[:2] if quick else SHAPES:
            copies = _copies(qt, n, k, rng)
            nb = copies[0].nbytes
            w16 = [torch.randn(n, k, device="cuda", dtype=torch.float16) for _ in range(max(2, -(-l2_bytes // (2 * n * k))))]
            for m in (1, 4, 8):
                x = torch.randn(m, k, device="cuda", dtype=torch.float16)
                xq = mq.quantize_q8_1(x)
                out = torch.empty(m, n, device="cuda", dtype=torch.float16)
                row = {"type": QT(qt).name, "K": k, "N": n, "M": m, "weight_bytes": nb}
                t = {"torch_fp16": graph_time([lambda w=w: torch.nn.functional.linear(x, w) for w in w16]),
                     "quantize": graph_time([lambda: mq.quantize_q8_1(x)] * 8),
                     "mmvq": graph_time([lambda p=p: mq.gguf_mmvq(x, p, out) for p in copies]),
                     "kern": graph_time([lambda p=p: mq.gguf_mmvq(x, p, out, xq=xq) for p in copies])}
                for c in CANDIDATES:
                    cfg = dict(mq.config(), LANES=c[0], num_warps=c[1], POS=c[2], X_BCAST=c[3],
                               EVICT=c[4] if len(c) > 4 else "")
                    t["mmvq_" + _cand(c)] = graph_time([lambda p=p: mq.gguf_mmvq(x, p, out, config_override=cfg) for p in copies])
                    t["kern_" + _cand(c)] = graph_time([lambda p=p: mq.gguf_mmvq(x, p, out, xq=xq, config_override=cfg) for p in copies])
                if m == 1:
                    cfg = dict(gguf_gemv._config(), MMVQ=False)
                    t["float_gemv"] = graph_time([lambda p=p: gguf_gemv.gguf_gemv(x, p, out, config=cfg) for p in copies])
                else:
                    t["gemm16"] = graph_time([lambda p=p: gguf_gemm.gguf_gemm(x, p, out) for p in copies])
                for key, v in t.items():
                    row[key + "_us"] = round(v * 1e6, 2)
                    if key != "quantize":
                        row[key + "_frac"] = round((2 * n * k if key == "torch_fp16" else nb) / v / copy_bw, 3)
                rows.append(row)
            del copies, w16
    return rows


def prefill(rng, quick: bool) -> list[dict]:
    """M = 64, 128, 512: fused GEMM and dequantise (fp16) + torch matmul vs torch fp16 matmul."""
    import triton.testing

    from gfx906_llm.kernels.gfx906.gguf_dequant import gguf_dequantize

    rows = []
    for qt in BENCH_TYPES:
        for k, n in SHAPES[:1] if quick else SHAPES:
            raw = random_raw(qt, n, k, rng).cuda()
            p = gt.pack_planes(raw, qt, k)
            w16 = torch.randn(n, k, device="cuda", dtype=torch.float16)
            tdeq = triton.testing.do_bench(lambda: gguf_dequantize(p, dtype=torch.float16), warmup=5, rep=30) / 1e3
            for m in (64, 128, 512):
                x = torch.randn(m, k, device="cuda", dtype=torch.float16)
                out = torch.empty(m, n, device="cuda", dtype=torch.float16)
                fused_cfg = gguf_gemm.launch_config(m)
                tg = triton.testing.do_bench(lambda: gguf_gemm.gguf_gemm(x, p, out, config=fused_cfg), warmup=5, rep=30) / 1e3
                tdq = triton.testing.do_bench(lambda: gguf_gemm.gguf_dequant_matmul(x, p, out), warmup=5, rep=30) / 1e3
                tt = triton.testing.do_bench(lambda: torch.matmul(x, w16.T), warmup=5, rep=30) / 1e3
                fl = 2 * m * n * k
                rows.append({"type": QT(qt).name, "K": k, "N": n, "M": m, "fused_tflops": round(fl / tg / 1e12, 1),
                             "dequant_mm_tflops": round(fl / tdq / 1e12, 1), "torch_fp16_tflops": round(fl / tt / 1e12, 1),
                             "fused_x_fp16": round(tt / tg, 3), "dequant_mm_x_fp16": round(tt / tdq, 3),
                             "dequant_us": round(tdeq * 1e6, 1), "dequant_GBs": round((p.nbytes + 2 * n * k) / tdeq / 1e9)})
    return rows


def best_candidate(res: dict, m: int, prefix: str = "kern_") -> str:
    """The launch candidate with the highest mean fraction of copy bandwidth over the decode rows at ``m``."""
    rows = [r for r in res.get("decode", []) if r["M"] == m]
    return max((_cand(c) for c in CANDIDATES),
               key=lambda c: sum(r[f"{prefix}{c}_frac"] for r in rows) / max(1, len(rows)))


def table(res: dict) -> str:
    """Short text table (printed last): checks, decode fractions of copy bandwidth, M >= 64 ratios."""
    lines = [f"copy bandwidth {res['copy_bw_GBs']:.0f} GB/s (end of run {res.get('copy_bw_end_GBs', 0):.0f}), "
             f"read bandwidth {res.get('read_bw_GBs', 0):.0f} GB/s"]
    for r in res.get("check", []):
        lines.append(f"check {r['type']}: dequant exact {r['dequant_bit_exact']} " + " ".join(
            f"{k[:-8]} {v:.1e}" for k, v in r.items() if k.endswith("_rel_err")))
    if "check_linear" in res:
        lines.append(f"check_linear {res['check_linear']}")
    worst = {}
    for r in res.get("check_mmvq", []):
        for k, v in r.items():
            if k.startswith("dot") or k == "q8_1_mismatch":
                v = sum(v) if isinstance(v, list) else v
                worst[k] = max(worst.get(k, 0), v)
    if worst:
        lines.append("mmvq checks, worst over types/shapes/M: " + " ".join(f"{k} {v:.2g}" for k, v in worst.items()))
    if res.get("decode"):
        for m in (1, 4, 8):
            lines.append(f"M={m}: CONFIGS launch (mmvq, kernel-only) | best candidate by mean with quantiser "
                         f"{best_candidate(res, m, 'mmvq_')}, kernel-only {best_candidate(res, m)}; "
                         f"kernel-only fractions of {[_cand(cc) for cc in CANDIDATES]}")
            for r in res["decode"]:
                if r["M"] != m:
                    continue
                extra = f"float_gemv {r['float_gemv_frac']:.2f}" if m == 1 else f"gemm16 {r['gemm16_frac']:.2f}"
                cands = " ".join(f"{r[f'kern_{_cand(cc)}_frac']:.2f}" for cc in CANDIDATES)
                lines.append(f"{r['type']:5} {r['K']:>5}x{r['N']:<5} M={m}: mmvq {r['mmvq_frac']:.2f} "
                             f"({r['mmvq_us']:.1f} us) kernel {r['kern_frac']:.2f} ({r['kern_us']:.1f} us) "
                             f"q8_1 {r['quantize_us']:.1f} us {extra} fp16 {r['torch_fp16_frac']:.2f} | {cands}")
    for r in res.get("prefill", []):
        lines.append(f"M={r['M']:<3} {r['type']:5} {r['K']:>5}x{r['N']:<5} fused {r['fused_x_fp16']:.2f}x "
                     f"dequant+mm {r['dequant_mm_x_fp16']:.2f}x fp16 ({r['torch_fp16_tflops']} TF) "
                     f"dequant {r['dequant_us']} us {r['dequant_GBs']} GB/s")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None, help="JSON file, rewritten after every section")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sections", default="mmvq,decode,prefill,check",
                    help="comma list, run in this order: mmvq,decode,prefill,check")
    a = ap.parse_args()
    rng = np.random.default_rng()
    import time

    import triton

    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "triton": triton.__version__,
           "copy_bw_GBs": max(copy_bandwidth(), copy_bandwidth()) / 1e9, "seconds": {}}
    bw = res["copy_bw_GBs"] * 1e9
    run = {"check": lambda: res.update(check=check(rng), check_linear=check_linear(rng)),
           "mmvq": lambda: res.update(check_mmvq=check_mmvq(rng)),
           "decode": lambda: res.update(decode=decode(rng, bw, a.quick)),
           "prefill": lambda: res.update(prefill=prefill(rng, a.quick))}
    res["read_bw_GBs"] = read_bandwidth() / 1e9
    for name in a.sections.split(","):
        t0 = time.perf_counter()
        run[name]()
        res["seconds"][name] = round(time.perf_counter() - t0, 1)
        if a.out:
            Path(a.out).write_text(json.dumps(res, indent=1))
    res["copy_bw_end_GBs"] = copy_bandwidth() / 1e9
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    else:
        print(json.dumps(res, indent=1))
    print(table(res))
    print("seconds per section:", res["seconds"])


if __name__ == "__main__":
    main()
