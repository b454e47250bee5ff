"""W4A16 fused dequantise+GEMV/GEMM speed on Llama-3-8B linear shapes; prints JSON.

Usage: python benchmarks/bench_w4a16.py [--bits 4] [--group 128] [--sweep] [--check [--check-max-m 16]]
       [--prefill-m 64 256 ...] [--prefill-all] [--budget-s 300] [--out FILE]

Weights are random (speed does not depend on values) in the internal layout, symmetric, group 128.
Timings are CUDA-graph replays of many back-to-back calls, each on a different copy of the weights
(together > 2x the L2 size), so every call streams its weight from HBM, as in decode.

* decode (M = 1..16): effective weight bandwidth = (qweight + scales [+ zeros]) bytes / time, as a
  fraction of the copy bandwidth measured in the same run (the faster of ``dst.copy_(src)`` and an
  SM copy kernel, 1 GiB, counting read + write bytes), and the speed-up over
  ``torch.nn.functional.linear`` with an fp16 weight.
* prefill (M = 64..4096): TFLOP/s of the fused GEMM (``force="gemm"``) and of the default
  dispatch vs the fp16 matmul and vs "dequantise to fp16 (``w4a16_gemm.dequantize``, a
  bandwidth-bound Triton kernel) then torch matmul" (``force="dequant"``).
``--sweep`` first times GEMV launch overrides (for choosing CONFIGS["cuda"]): the HALF2 path
(PTX half2 unpack + fma) over tiles, warps, split-K and PREFETCH at 1, 2 and 4 rows, the FMA path
at M = 1, the tensor-core dot path at M = 2..16; the winners (best geometric mean of the fraction
over the shapes) are then used for the decode table (``chosen`` in the JSON), so the table shows
what CONFIGS gets. Every timed row is also checked against ``x @ dequant(W).T`` in fp32 on the
timed weights (``err``: max |error| / max |reference|), fresh random data each run. Prefill runs
on 4096x14336 only unless ``--prefill-all``.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import triton

from gfx906_llm.kernels.gfx906 import w4a16_gemm as k

SHAPES = [(4096, 4096), (4096, 1024), (4096, 14336), (14336, 4096), (4096, 28672)]  # (K in, N out)
DECODE_M = list(range(1, 17))
PREFILL_M = [64, 128, 256, 512, 1024, 2048, 4096]


def graph_time(fns: list, reps: int = 5) -> float:
    """Seconds per call of the callables in ``fns`` (each captured once, replayed ``reps`` times)."""
    for f in fns:
        f()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fns:
            f()
    g.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        g.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / (reps * len(fns))


def copy_bandwidth() -> dict:
    """Read + write bytes per second of 1 GiB copies: ``dst.copy_(src)`` (a graph memcpy node,
    which ran at only ~2.7 TB/s on an H200) and an SM kernel (``torch.neg(src, out=dst)``, fp16).
    The fractions use the larger: the roof a streaming kernel can reach."""
    src = torch.empty(1 << 29, dtype=torch.float16, device="cuda")
    dst = torch.empty_like(src)
    t_mem = graph_time([lambda: dst.copy_(src)] * 4)
    t_sm = graph_time([lambda: torch.neg(src, out=dst)] * 4)
    return {"memcpy_GBps": 2 * 2**30 / t_mem / 1e9, "sm_copy_GBps": 2 * 2**30 / t_sm / 1e9}


def make_weights(K: int, N: int, bits: int, group: int, copies: int):
    pack = 32 // bits
    out = []
    for _ in range(copies):
        qw = torch.randint(-2**31, 2**31 - 1, (K // pack, N), dtype=torch.int32, device="cuda")
        s = (torch.rand(K // group, N, device="cuda") * 0.01).half()
        out.append((qw, s))
    return out


def random_packed(bits: int, group: int, asym: bool, act: bool, K: int, N: int):
    """A random weight in the internal layout on the GPU and its fp32 dequantisation ``W [N, K]``."""
    from gfx906_llm.quant.packing import act_order_perm, dequantize_internal, pack_internal

    g = K if group == -1 else group
    q = torch.randint(0, 2**bits, (K, N), device="cuda")
    s = (torch.rand(K // g, N, device="cuda") * 0.02 + 0.001).half()
    z = torch.randint(0, 2**bits, (K // g, N), device="cuda") if asym else None
    perm = act_order_perm(torch.randperm(K, device="cuda") // g, g, K) if act else None
    pw = pack_internal(q, s, z, bits, group, perm)
    return pw, dequantize_internal(pw)


def check_correctness(max_m: int = 300, chosen=lambda M: None) -> list[dict]:
    """Real-size agreement with ``x @ dequant(W).T`` in fp32 (the test oracle), every code path
    (HALF2 at 1..4 rows forced too; ``chosen(M)``: the launch override of the measured table, for
    the dispatch rows); repeated launches catch split-K ticket races."""
    out = []
    for bits, group, asym, act, K, N in ((4, 128, False, False, 4096, 4096 + 96), (4, 32, True, True, 4096, 1024),
                                         (4, 64, True, False, 4096, 2048), (4, -1, True, False, 4096, 1024),
                                         (8, -1, False, False, 14336, 1024), (8, 64, True, False, 4096, 2048),
                                         (4, 128, True, True, 14336, 4096)):
        pw, w = random_packed(bits, group, asym, act, K, N)  # w [N, K] fp32
        for M in (1, 2, 3, 4, 5, 8, 16, 17, 64, 300):
            if M > max_m:
                break
            x = torch.randn(M, K, device="cuda").half()
            ref = x.float() @ w.t()
            variants = [("dispatch", None, chosen(M) if M <= 16 else None)]
            if M > 16:
                variants.append(("gemm", "gemm", None))
            if M <= 4 and bits == 4:
                variants.append(("half2", "gemv", dict(HALF2=True)))
            for name, force, ov in variants:
                err = 0.0
                for _ in range(20 if M <= 16 else 2):
                    y = k.w4a16_linear(x, pw.qweight, pw.scales, pw.zeros, pw.perm, None, bits, pw.group_size, K,
                                       force=force, override=ov)
                    err = max(err, ((y.float() - ref).abs().max() / ref.abs().max()).item())
                out.append({"bits": bits, "group": group, "asym": asym, "act_order": act, "K": K, "N": N, "M": M,
                            "path": name, "max_err_rel_to_max": err, "ok": err < 2e-3})
    return out


def _gemv_variants(M: int) -> list[dict]:
    """Launch overrides swept at M rows: HALF2 (M <= 4) with and without the register prefetch,
    the tensor-core dot path (M >= 2)."""
    h2 = []
    if M <= 4:
        tiles = ((128, 2), (64, 2), (128, 4), (256, 4)) if M == 1 else ((64, 2), (64, 4), (128, 4), (32, 2))
        h2 = [dict(HALF2=True, PREFETCH=pf, BLOCK_N=bn, num_warps=nw, programs_per_cu=ppc, num_stages=1)
              for pf in (True, False) for bn, nw in tiles for ppc in ((2, 4, 8, 16) if M == 1 else (4, 8, 16))]
    if M == 1:
        return h2 + [dict(HALF2=False, BLOCK_N=256, num_warps=4, programs_per_cu=16, MAGIC=False, num_stages=1)]
    return h2 + [dict(HALF2=False, USE_DOT=True, EXPAND=False, MAGIC=True, PREFETCH=pf, BLOCK_N=bn,
                      programs_per_cu=ppc, num_warps=nw, num_stages=st)
                 for pf in (False, True)
                 for bn, ppc, nw, st in ((128, 4, 4, 3), (64, 8, 4, 3), (256, 4, 8, 3), (128, 8, 4, 1), (64, 16, 4, 1))]


def _best(rows: list[dict], shapes: list, ms: tuple) -> dict | None:
    """The override with the best geometric-mean fraction over ``shapes`` x ``ms`` (correct rows only)."""
    by = {}
    for r in rows:
        if "us" in r and r["M"] in ms and (r["K"], r["N"]) in shapes and r["err"] < 2e-3:
            by.setdefault(json.dumps(r["override"], sort_keys=True), []).append(r["frac_of_copy_bw"])
    full = {key: v for key, v in by.items() if len(v) == len(shapes) * len(ms)}
    if not full:
        return None
    key = max(full, key=lambda kk: sum(map(math.log, full[kk])))
    return json.loads(key)


def _gemm_variants() -> list[dict]:
    return [dict(EXPAND=ex, MAGIC=True, BLOCK_M=bm, BLOCK_N=bn, num_warps=nw, num_stages=st)
            for ex in (True, False) for bm, bn, nw, st in ((64, 128, 4, 4), (128, 128, 8, 3), (128, 256, 8, 3),
                                                           (128, 128, 4, 4))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--sweep", action="store_true", help="sweep, then time the table with the winners")
    ap.add_argument("--budget-s", type=float, default=300.0, help="no new sweep timing after this")
    ap.add_argument("--out", default=None)
    ap.add_argument("--check", action="store_true", help="also check every path at real sizes")
    ap.add_argument("--check-max-m", type=int, default=300)
    ap.add_argument("--prefill-m", type=int, nargs="*", default=PREFILL_M)
    ap.add_argument("--prefill-all", action="store_true", help="prefill on every shape (else 4096x14336)")
    ap.add_argument("--reduce-launch", choices=("config", "on", "off"), default="config",
                    help="split-K sum: CONFIGS' choice, the separate splitk_reduce launch, or the ticket epilogue")
    a = ap.parse_args()
    if a.reduce_launch != "config":
        from gfx906_llm.kernels.gfx906 import w4a16_gemv as gv

        cfg = gv.CONFIGS[gv.config_key()]
        for c in (cfg["m1"], cfg["dot"], *cfg.get("half2_m", {}).values()):
            c["REDUCE_LAUNCH"] = a.reduce_launch == "on"
    t0 = time.time()
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    res = {"device": props.name, "triton": triton.__version__, "torch": torch.__version__, "bits": a.bits,
           "group_size": a.group, **copy_bandwidth(), "decode": [], "prefill": [], "sweep": []}
    copy_bw = max(res["memcpy_GBps"], res["sm_copy_GBps"]) * 1e9
    res["copy_bw_GBps"] = copy_bw / 1e9
    from gfx906_llm.quant.packing import PackedWeight, dequantize_internal
    fp16_s = {}  # (K, N, M) -> seconds of the fp16 linear

    def setup(K, N):
        wbytes = K * N * a.bits // 8 + (K // a.group) * N * 2
        ws = make_weights(K, N, a.bits, a.group, max(2, -(-3 * l2 // wbytes)))
        wf = [torch.randn(N, K, device="cuda").half() for _ in range(max(2, -(-3 * l2 // (K * N * 2))))]
        w32 = dequantize_internal(PackedWeight(ws[0][0], ws[0][1], None, None, a.bits, a.group, K, N))  # [N, K]

        def ours(x, qw, s, **kw):
            return k.w4a16_linear(x, qw, s, None, None, None, a.bits, a.group, K, **kw)

        def measure(M, ov):
            x = torch.randn(M, K, device="cuda").half()
            ref = x.float() @ w32.t()
            err = ((ours(x, *ws[0], override=ov).float() - ref).abs().max() / ref.abs().max()).item()
            t = graph_time([lambda qw=qw, s=s: ours(x, qw, s, override=ov) for qw, s in ws])
            if (K, N, M) not in fp16_s:
                fp16_s[K, N, M] = graph_time([lambda w=w: torch.nn.functional.linear(x, w) for w in wf])
            tf = fp16_s[K, N, M]
            return {"K": K, "N": N, "M": M, "override": ov, "us": t * 1e6, "eff_GBps": wbytes / t / 1e9,
                    "frac_of_copy_bw": wbytes / t / copy_bw, "torch_fp16_us": tf * 1e6, "speedup_vs_fp16": tf / t,
                    "err": err}
        return measure

    # 1. sweep, in order of priority, until the budget ends
    plan = [(s, 1) for s in SHAPES] + [(s, m) for m in (2, 4, 16, 8) for s in SHAPES[:4]]
    for (K, N), M in plan if a.sweep else ():
        if time.time() - t0 > a.budget_s:
            break
        measure = setup(K, N)
        for ov in _gemv_variants(M):
            if time.time() - t0 > a.budget_s:
                break
            try:
                res["sweep"].append(measure(M, ov))
            except Exception as e:  # a config that does not compile is recorded and skipped
                res["sweep"].append({"K": K, "N": N, "M": M, "override": ov, "error": str(e)[:200]})
        torch.cuda.empty_cache()
        dump(res, a.out)
    # 2. the winners (None: the file's CONFIGS), then the table with them
    b1 = _best(res["sweep"], SHAPES, (1,))
    b2, b4 = (_best(res["sweep"], SHAPES[:4], (m,)) for m in (2, 4))
    bdot = _best([r for r in res["sweep"] if r["override"].get("USE_DOT")], SHAPES[:4], (8, 16))
    res["chosen"] = {"1": b1, "2": b2, "4": b4, "dot": bdot}

    def chosen(M):
        return b1 if M == 1 else b2 if M == 2 else b4 if M <= 4 else bdot

    for K, N in SHAPES:
        measure = setup(K, N)
        res["decode"] += [measure(M, chosen(M)) for M in DECODE_M]
        torch.cuda.empty_cache()
        dump(res, a.out)
    if a.check:
        res["correctness"] = check_correctness(a.check_max_m, chosen)
        res["correctness_all_ok"] = all(c["ok"] for c in res["correctness"])
        dump(res, a.out)
    for K, N in (SHAPES if a.prefill_all else [(4096, 14336)]) if a.prefill_m else ():
        wbytes = K * N * a.bits // 8 + (K // a.group) * N * 2
        ws = make_weights(K, N, a.bits, a.group, max(2, -(-3 * l2 // wbytes)))
        wf = [torch.randn(N, K, device="cuda").half() for _ in range(max(2, -(-3 * l2 // (K * N * 2))))]

        def ours(x, qw, s, **kw):
            return k.w4a16_linear(x, qw, s, None, None, None, a.bits, a.group, K, **kw)

        for M in a.prefill_m:
            if time.time() - t0 > a.budget_s + 60:
                break
            x = torch.randn(M, K, device="cuda").half()
            flop = 2 * M * K * N
            tg = graph_time([lambda qw=qw, s=s: ours(x, qw, s, force="gemm") for qw, s in ws[:2]])
            t = graph_time([lambda qw=qw, s=s: ours(x, qw, s) for qw, s in ws[:2]])
            tf = graph_time([lambda w=w: torch.nn.functional.linear(x, w) for w in wf[:2]])
            td = graph_time([lambda qw=qw, s=s: ours(x, qw, s, force="dequant") for qw, s in ws[:2]])
            res["prefill"].append({"K": K, "N": N, "M": M, "fused_us": tg * 1e6, "fused_TFLOPs": flop / tg / 1e12,
                                   "fused_vs_fp16": tf / tg, "fused_vs_dequant_then_matmul": td / tg,
                                   "dispatch_TFLOPs": flop / t / 1e12, "dispatch_vs_fp16": tf / t,
                                   "torch_fp16_TFLOPs": flop / tf / 1e12, "dequant_then_matmul_TFLOPs": flop / td / 1e12})
        del ws, wf
        torch.cuda.empty_cache()
        dump(res, a.out)
    res["elapsed_s"] = time.time() - t0
    dump(res, a.out)
    summary(res)


def summary(res: dict) -> None:
    """Short text last: the decode table, the winners, the best sweep rows, correctness failures."""
    print(f"copy: memcpy {res['memcpy_GBps']:.0f} GB/s, SM copy {res['sm_copy_GBps']:.0f} GB/s")
    print("chosen:", json.dumps(res.get("chosen")))
    print("decode table: M: frac of copy bw / x fp16 / err")
    for K, N in SHAPES:
        rows = [r for r in res["decode"] if (r["K"], r["N"]) == (K, N)]
        print(f"{K}x{N}: " + " ".join(f"{r['M']}:{r['frac_of_copy_bw']:.2f}/{r['speedup_vs_fp16']:.2f}/{r['err']:.0e}"
                                      for r in rows))
    keys = ("HALF2", "PREFETCH", "USE_DOT", "BLOCK_N", "num_warps", "programs_per_cu", "num_stages")
    groups = {}
    for r in res["sweep"]:
        if "us" in r:
            groups.setdefault((r["K"], r["N"], r["M"]), []).append(r)
    for (K, N, M), rows in groups.items():
        rows.sort(key=lambda r: r["us"])
        print(f"sweep {K}x{N} M{M}: " + " | ".join(
            ",".join(str(r["override"].get(c, "-"))[:1] if c in keys[:3] else str(r["override"].get(c, "-"))
                     for c in keys) + f" {r['frac_of_copy_bw']:.2f}" for r in rows[:3])
            + f" || worst {rows[-1]['frac_of_copy_bw']:.2f}")
    bad = [r for r in res["sweep"] if "error" in r or r.get("err", 0) >= 2e-3]
    if bad:
        print("sweep errors:", len(bad), json.dumps(bad[:2]))
    if "correctness" in res:
        print("correctness all ok:", res["correctness_all_ok"], "max err:",
              max(c["max_err_rel_to_max"] for c in res["correctness"]),
              json.dumps([c for c in res["correctness"] if not c["ok"]][:5]))
    for r in res["prefill"]:
        print(f"prefill {r['K']}x{r['N']} M{r['M']}: fused {r['fused_vs_fp16']:.2f}x fp16, "
              f"{r['fused_vs_dequant_then_matmul']:.2f}x dq+mm; dispatch {r['dispatch_vs_fp16']:.2f}x fp16")
    print("elapsed", round(res.get("elapsed_s", 0), 1))


def dump(res: dict, path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
