"""Prefill (M = 64..4096) speed of the fused W4A16 GEMM's SWAP path on the Llama-3-8B linear shapes
against torch's fp16 matmul and "dequantise to fp16, then torch matmul"; prints JSON lines, then a
short table. For choosing CONFIGS["cuda"]["gemm"] in kernels/gfx906/w4a16_gemm.py (issue 4).

Usage: python benchmarks/sweep_prefill_gemm.py [--ms 64 128 ...] [--cands A B ...] [--budget-s 150]
       [--check [NAME ...]] [--config] [--out FILE]
       python benchmarks/sweep_prefill_gemm.py --replay FILE  (no GPU: the table of what the
       dispatcher now picks, from a saved run's rows)

* Timings: CUDA-graph replays (``bench_w4a16.graph_time``) of back-to-back calls, each on a
  different copy of the weights (together over 3x the L2 size, for the quantised weights, the fp16
  weights and the dequantise path alike), so every call reads its weight from HBM.
* fp16 = ``torch.nn.functional.linear(x, W)`` with ``W [N, K]`` fp16; dq+mm = ``w4a16_linear(...,
  force="dequant")`` (the Triton dequantise kernel into a transient ``[K, N]`` fp16 buffer, then
  ``torch.matmul``); ``cand:<name>`` = ``force="gemm"`` with the candidate's launch override;
  ``dispatch`` = the dispatcher with the CONFIGS in the file (``--config`` times it per M).
* Every candidate row carries ``err`` = max |y - ref| / max |ref| against ``x @ dequant(W).T`` in
  fp32 on the timed weights (fresh random data each run); ``--check`` also runs the winners on
  asymmetric / act-order / 8-bit / bf16 weights with N not a multiple of the tile.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from bench_w4a16 import graph_time, make_weights, random_packed
from gfx906_llm.kernels.gfx906 import w4a16_gemm as k
from gfx906_llm.quant.packing import PackedWeight, dequantize_internal

SHAPES = [(4096, 14336), (4096, 4096), (14336, 4096), (4096, 28672), (4096, 1024)]  # (K in, N out)
MS = [32, 48, 64, 128, 256, 512, 1024, 4096]


def _c(bm, bn, warps, stages, kd=128, split_ctas=1):
    return dict(SWAP=True, KD=kd, BLOCK_M=bm, BLOCK_N=bn, GROUP_M=8, num_warps=warps, num_stages=stages,
                split_ctas=split_ctas, min_split_blocks=4, EVEN_N=True)


CANDS = {  # name -> w4a16_linear override (force="gemm"); KD: K rows per tl.dot (16 = one dot per chunk)
    "A": _c(64, 64, 4, 3), "B": _c(64, 128, 8, 4), "C": _c(128, 64, 4, 4), "D": _c(128, 128, 8, 3),
    "D4": _c(128, 128, 8, 4), "E": _c(128, 128, 8, 3, 64), "G": _c(256, 64, 8, 3), "H": _c(256, 128, 8, 3, 64),
    "A2": _c(64, 64, 4, 3, split_ctas=2), "c16": _c(64, 128, 8, 4, 16), "e16": _c(128, 128, 8, 3, 16),
}


def emit(row: dict, rows: list) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)


def sweep(a, rows: list, t0: float) -> None:
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    for K, N in SHAPES[:a.shapes]:
        wbytes = K * N // 2 + (K // 128) * N * 2
        ws = make_weights(K, N, 4, 128, max(2, -(-3 * l2 // wbytes)))
        wf = [torch.randn(N, K, device="cuda").half() for _ in range(max(2, -(-3 * l2 // (K * N * 2))))]
        w32 = dequantize_internal(PackedWeight(ws[0][0], ws[0][1], None, None, 4, 128, K, N))  # [N, K] fp32

        def ours(x, qw, s, **kw):
            return k.w4a16_linear(x, qw, s, None, None, None, 4, 128, K, **kw)

        for M in a.ms:
            x = torch.randn(M, K, device="cuda").half()
            ref = x.float() @ w32.t()
            flop = 2 * M * K * N
            base = {"K": K, "N": N, "M": M}
            tf = graph_time([lambda w=w: torch.nn.functional.linear(x, w) for w in wf])
            td = graph_time([lambda qw=qw, s=s: ours(x, qw, s, force="dequant") for qw, s in ws])
            emit(dict(base, kind="fp16", us=tf * 1e6, TFLOPs=flop / tf / 1e12), rows)
            emit(dict(base, kind="dq+mm", us=td * 1e6, TFLOPs=flop / td / 1e12), rows)
            runs = [(f"cand:{n}", dict(force="gemm", override=CANDS[n])) for n in a.cands
                    if CANDS[n]["BLOCK_M"] <= max(64, M)]
            if M <= 64:
                runs.append(("gemv", dict(force="gemv")))
            if a.config:
                runs.append(("dispatch", {}))
            for name, kw in runs:
                if time.time() - t0 > a.budget_s:
                    break
                try:
                    err = ((ours(x, *ws[0], **kw).float() - ref).abs().max() / ref.abs().max()).item()
                    t = graph_time([lambda qw=qw, s=s: ours(x, qw, s, **kw) for qw, s in ws])
                except Exception as e:  # a candidate that does not compile or launch is recorded
                    emit(dict(base, kind=name, error=str(e)[:300]), rows)
                    continue
                emit(dict(base, kind=name, us=t * 1e6, TFLOPs=flop / t / 1e12, x_fp16=tf / t, x_dqmm=td / t,
                          err=err), rows)
        del ws, wf, w32
        torch.cuda.empty_cache()


def winners(rows: list) -> dict:
    """Per M: the candidate with the best geometric mean of x_fp16 over the shapes it ran on all of."""
    out = {}
    shapes = {(r["K"], r["N"]) for r in rows}
    for M in sorted({r["M"] for r in rows}):
        by = {}
        for r in rows:
            if r["M"] == M and r["kind"].startswith("cand:") and "us" in r and r["err"] < 2e-3:
                by.setdefault(r["kind"], []).append(r["x_fp16"])
        full = {n: v for n, v in by.items() if len(v) == len(shapes)}
        if full:
            best = max(full, key=lambda n: sum(map(math.log, full[n])))
            out[M] = (best, math.exp(sum(map(math.log, full[best])) / len(full[best])))
    return out


def check(names: list[str], dtypes=(torch.float16, torch.bfloat16)) -> list[dict]:
    """The candidates ``names`` (and the dispatcher) on weights the sweep does not cover."""
    out = []
    for bits, group, asym, act, K, N in ((4, 128, False, False, 4096, 1024 + 96), (4, 32, True, True, 4096, 1024),
                                         (8, -1, False, False, 4096, 1024 + 96), (8, 64, True, False, 4096, 2048),
                                         (4, 128, True, True, 14336, 1024)):
        pw, w = random_packed(bits, group, asym, act, K, N)  # w [N, K] fp32
        for dtype in dtypes if (bits, group) == (4, 128) and not asym else dtypes[:1]:
            for M in (65, 300):
                x = torch.randn(M, K, device="cuda").to(dtype)
                bias = torch.randn(N, device="cuda").to(dtype)
                ref = x.float() @ w.t() + bias.float()
                for name in names + ["dispatch"]:
                    kw = {} if name == "dispatch" else dict(force="gemm", override=dict(CANDS[name], EVEN_N=True))
                    err = 0.0
                    for _ in range(3):
                        y = k.w4a16_linear(x, pw.qweight, pw.scales, pw.zeros, pw.perm, bias, bits, pw.group_size, K,
                                           **kw)
                        err = max(err, ((y.float() - ref).abs().max() / ref.abs().max()).item())
                    tol = 2e-3 if dtype == torch.float16 else 1e-2
                    out.append({"bits": bits, "group": group, "asym": asym, "act": act, "N": N, "M": M,
                                "dtype": str(dtype), "path": name, "err": err, "ok": err < tol})
    return out


def replay(path: str, arch: str = "cuda", cus: int = 132) -> None:
    """Per shape and M, the row of a saved run that ``choose_path`` / ``gemm_launch_params`` (the
    file's CONFIGS[arch]) now select: x fp16 / x dq+mm (the GEMM rows by their launch settings)."""
    rows = json.load(open(path))["rows"]
    t = {(r["K"], r["N"], r["M"], r["kind"]): r["us"] for r in rows if "us" in r}
    keys = ("BLOCK_M", "BLOCK_N", "KD", "num_warps", "num_stages", "split_ctas", "GROUP_M")
    print("dispatch from", path, f"({arch}, {cus} SMs): x fp16 / x dq+mm [path]")
    for K, N in SHAPES:
        line = f"{K}x{N}:"
        for M in sorted({r["M"] for r in rows if (r["K"], r["N"]) == (K, N)}):
            path_ = k.choose_path(M, K, N, arch)
            kind = {"gemv": "gemv", "dequant": "dq+mm"}.get(path_)
            if path_ == "gemm":
                p = dict(k.CONFIGS[arch]["gemm"][0][1])  # the launch settings, not the split result
                p.update(next(c for b, c in k.CONFIGS[arch]["gemm"] if M <= b and -(-M // c["BLOCK_M"]) *
                              -(-N // c["BLOCK_N"]) >= c.get("min_tiles", 0)))
                kind = next((f"cand:{n}" for n, c in CANDS.items() if all(c.get(x) == p.get(x) for x in keys)), None)
            us = t.get((K, N, M, kind))
            line += f" {M}:" + (f"{t[K, N, M, 'fp16'] / us:.2f}/{t[K, N, M, 'dq+mm'] / us:.2f}[{kind}]" if us else
                                f"-[{kind}]")
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ms", type=int, nargs="*", default=MS)
    ap.add_argument("--cands", nargs="*", default=list(CANDS))
    ap.add_argument("--shapes", type=int, default=len(SHAPES), help="the first this many of SHAPES")
    ap.add_argument("--budget-s", type=float, default=150.0, help="no new candidate timing after this")
    ap.add_argument("--check", nargs="*", default=None, help="candidates to check (none: the winners)")
    ap.add_argument("--config", action="store_true", help="also time the dispatcher with the file's CONFIGS")
    ap.add_argument("--out", default=None)
    ap.add_argument("--replay", default=None, help="a saved --out file: the dispatcher's picks, no GPU")
    a = ap.parse_args()
    if a.replay:
        return replay(a.replay)
    t0 = time.time()
    rows: list[dict] = []
    sweep(a, rows, t0)
    win = winners(rows)
    res = {"device": torch.cuda.get_device_name(0), "rows": rows, "winners": win}
    if a.check is not None:
        ends = [win[m][0].split(":")[1] for m in (min(win), max(win))] if win else []
        names = a.check or sorted(set(ends))  # the winners at the smallest and the largest M
        res["check"] = check(names)
        res["check_ok"] = all(c["ok"] for c in res["check"])
    res["elapsed_s"] = time.time() - t0
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    summary(res)


def summary(res: dict) -> None:
    """The short table last: per shape and M, x fp16 / x dq+mm of the best candidate (and dispatch)."""
    rows = res["rows"]
    print("\nSUMMARY", res["device"], f"elapsed {res['elapsed_s']:.0f} s")
    keyed = {}
    for r in rows:
        keyed.setdefault((r["K"], r["N"], r["M"]), []).append(r)
    for (K, N, M), rs in keyed.items():
        ok = [r for r in rs if r["kind"].startswith("cand:") and "us" in r and r["err"] < 2e-3]
        fp = next((r["us"] for r in rs if r["kind"] == "fp16"), 0)
        dq = next((r["us"] for r in rs if r["kind"] == "dq+mm"), 0)
        line = f"{K}x{N} M{M}: fp16 {fp:.1f}us dq+mm {dq:.1f}us"
        for r in sorted(ok, key=lambda r: r["us"])[:3]:
            line += f" | {r['kind'][5:]} {r['x_fp16']:.2f}/{r['x_dqmm']:.2f}"
        for r in rs:
            if r["kind"] in ("dispatch", "gemv") and "us" in r:
                line += f" | {r['kind']} {r['x_fp16']:.2f}/{r['x_dqmm']:.2f}"
        bad = [r["kind"] for r in rs if "error" in r or r.get("err", 0) >= 2e-3]
        print(line + (f" | BAD {bad}" if bad else ""))
    print("winners (M: cand, geomean x fp16):", json.dumps(res["winners"]))
    if "check" in res:
        print("check ok:", res["check_ok"], "max err:", max(c["err"] for c in res["check"]),
              json.dumps([c for c in res["check"] if not c["ok"]][:4]))


if __name__ == "__main__":
    main()
