"""Where a served decode step's GPU time goes, as the engine really runs it (graphs, async
scheduling, PDL): torch profiler device events of N steady batch-1 steps; prints JSON.

    python benchmarks/profile_graph.py MODEL [--steps 30] [--input-len 128] [--batch 1]
        [--patch '{"w4a16_gemv:cuda.m1.half2.programs_per_cu": 12}']

Device events (kernels inside graph replays, memcpys, kernels launched outside graphs) are
sorted by start. For each: ``idle`` = time the GPU ran nothing before it started, ``marginal`` =
how far it moved the end of the busy span (with PDL a kernel starts while its predecessor runs
and waits; its raw duration includes that wait, its marginal time does not). Per kernel name:
launches, idle and marginal microseconds per step. Their sums are the step's GPU wall time.
W4A16 GEMV launches are told apart by their place in the step (``[qkv]``, ``[o]``, ``[gate_up]``,
``[down]``: a Llama block's four linears in order). ``--patch`` sets entries of a kernel module's
``CONFIGS`` before the engine starts (``module:key.key...``), to compare launch settings in the
served step; the registers of each compiled GEMV variant are printed at the end.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

import importlib

from gfx906_llm.config import EngineConfig
from gfx906_llm.engine.engine import LLMEngine
from gfx906_llm.sampling_params import SamplingParams


def short(name: str) -> str:
    """Kernel name without template arguments or signature; memcpy/memset names kept."""
    if not name.startswith(("Memcpy", "Memset")):
        name = name.split("(")[0].split("<")[0]
    return name[:60]


GEMV_ROLES = ("qkv", "o", "gate_up", "down")


def apply_patch(patch: dict) -> None:
    """``{"module:a.b.c": value}`` -> ``gfx906_llm.kernels.gfx906.module.CONFIGS[a][b][c] = value``."""
    for key, value in patch.items():
        mod, path = key.split(":")
        d = importlib.import_module(f"gfx906_llm.kernels.gfx906.{mod}").CONFIGS
        *head, last = path.split(".")
        for k in head:
            d = d[int(k) if k.isdigit() and int(k) in d else k]
        d[int(last) if last.isdigit() and int(last) in d else last] = value


def compiled_registers(fn) -> list[dict]:
    """Registers and spills of every compiled variant of a Triton kernel (best effort across versions)."""
    out = []
    caches = getattr(fn, "device_caches", None) or {}
    for entry in caches.values():
        kernels = entry[0] if isinstance(entry, tuple) else entry
        for k in getattr(kernels, "values", lambda: [])():
            meta = getattr(k, "metadata", None)
            out.append({"n_regs": getattr(k, "n_regs", None), "n_spills": getattr(k, "n_spills", None),
                        "num_warps": getattr(meta, "num_warps", None), "shared": getattr(meta, "shared", None)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--no-async-scheduling", action="store_true")
    ap.add_argument("--patch", default="{}", help="JSON {module:key.path: value} for kernel CONFIGS")
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    apply_patch(json.loads(a.patch))
    engine = LLMEngine(EngineConfig(model=a.model, max_model_len=2048, max_num_seqs=max(8, a.batch),
                                    async_scheduling=not a.no_async_scheduling))
    sp = SamplingParams(temperature=0.0, max_tokens=a.steps + 40, ignore_eos=True)

    def run(tag: str, profiled: bool):
        for b in range(a.batch):
            engine.add_request(f"{tag}{b}", [1000 + 7 * b + i for i in range(a.input_len)], sp)
        for _ in range(8):  # prefill, then a few decode steps
            engine.step()
        torch.cuda.synchronize()
        prof = None
        if profiled:
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(a.steps):
                    engine.step()
                torch.cuda.synchronize()
        while engine.has_unfinished_requests():
            engine.step()
        return prof

    run("warm", False)
    prof = run("p", True)
    evs = [e for e in prof.events() if e.device_type.name == "CUDA" and e.time_range.end > e.time_range.start]
    evs.sort(key=lambda e: e.time_range.start)
    agg = defaultdict(lambda: [0, 0.0, 0.0, 0.0])  # launches, idle, marginal, raw
    busy_end = evs[0].time_range.start
    t0 = busy_end
    gemv_i = 0
    for e in evs:
        s, t = e.time_range.start, e.time_range.end
        name = short(e.name)
        if name.startswith("resolve_input_ids"):
            gemv_i = 0  # a step's graph starts here
        elif name.startswith("w4a16_gemv"):
            name = f"{name}[{GEMV_ROLES[gemv_i % 4]}]"
            gemv_i += 1
        row = agg[name]
        row[0] += 1
        row[1] += max(0.0, s - busy_end)
        row[2] += max(0.0, t - max(s, busy_end))
        row[3] += t - s
        busy_end = max(busy_end, t)
    n = a.steps
    span = busy_end - t0
    rows = sorted(agg.items(), key=lambda kv: -(kv[1][1] + kv[1][2]))
    out = {"label": a.label, "patch": json.loads(a.patch), "model": a.model, "batch": a.batch, "steps": n, "async": not a.no_async_scheduling,
           "us_per_step": round(span / n, 1), "tok_s": round(a.batch * n / span * 1e6, 1),
           "idle_us_per_step": round(sum(r[1] for _, r in rows) / n, 1),
           "kernels": [{"name": k, "launches": round(r[0] / n, 2), "idle_us": round(r[1] / n, 1),
                        "marginal_us": round(r[2] / n, 1), "raw_us": round(r[3] / n, 1)} for k, r in rows]}
    print(json.dumps(out))
    for k in out["kernels"][:25]:
        print(f"{k['marginal_us']:8.1f} marg {k['idle_us']:7.1f} idle {k['raw_us']:8.1f} raw {k['launches']:6.2f}x  {k['name']}")
    from gfx906_llm.kernels.gfx906.w4a16_gemv import w4a16_gemv_kernel
    print("w4a16_gemv variants:", json.dumps(compiled_registers(w4a16_gemv_kernel)))


if __name__ == "__main__":
    main()
