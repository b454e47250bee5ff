"""ISA report: AOT-compile every registered Triton kernel for AMD targets without a GPU.

Every module in ``gfx906_llm.kernels.gfx906`` that defines ``isa_specs() -> list[dict]`` is
discovered with ``pkgutil``; each spec (``name``, ``fn``, ``signature``, ``constexprs``,
``num_warps``, ``num_stages``, ``arch`` = CONFIGS key, optional ``divisible_by_16``: integer
arguments that the runtime sees as multiples of 16) is compiled with stock Triton for
``GPUTarget("hip", arch, 64)`` (32 lanes for gfx11/gfx12), the way Triton's launcher would
specialise it: every pointer 16-byte aligned (``tt.divisibility``), no buffer-op range
assumption. The amdgcn text gives registers, scratch (spills), the compiler's occupancy
(waves per SIMD), and the instruction mix.

Compiling needs Triton's compiler, not its interpreter: when ``TRITON_INTERPRET`` is set (the
CPU test suite sets it), ``report`` runs itself in a subprocess with the variable removed, since
kernels decorated under the interpreter cannot be lowered.

CLI: ``python -m gfx906_llm.kernels.isa [--json] [--arch gfx906 ...] [--kernel SUBSTR ...]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
import time
from collections import Counter

DEFAULT_ARCHES = ("gfx906", "gfx90a", "gfx942", "gfx1100")
LDS_LIMIT = 65536
MAX_WAVES = {"gfx906": 10, "gfx90a": 8, "gfx942": 8, "gfx1100": 16}

_LOAD = re.compile(r"^\s+(?:global|buffer)_load_(\w+)", re.M)
_LOAD_KIND = {"dwordx4": "ld_x4", "b128": "ld_x4", "dwordx3": "ld_x3", "b96": "ld_x3",
              "dwordx2": "ld_x2", "b64": "ld_x2", "dword": "ld_x1", "b32": "ld_x1"}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() not in ("", "0", "false", "off")


def discover(kernels: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    """(specs, errors): specs of every kernel module, filtered by name substrings."""
    import gfx906_llm.kernels.gfx906 as pkg

    specs, errors = [], []
    for mod in pkgutil.iter_modules(pkg.__path__):
        name = f"{pkg.__name__}.{mod.name}"
        try:
            m = importlib.import_module(name)
            if not hasattr(m, "isa_specs"):
                continue
            for s in m.isa_specs():
                s = dict(s, module=mod.name)
                if kernels and not any(k in s["name"] or k == mod.name for k in kernels):
                    continue
                specs.append(s)
        except Exception as e:  # a broken module is a report row, not a crash
            errors.append({"kernel": mod.name, "module": mod.name, "arch": "*", "error": f"{type(e).__name__}: {e}"})
    return specs, errors


def _parse(asm: str, arch: str) -> dict:
    def num(key: str) -> int:
        m = re.search(rf"^\s*; {key}:\s+(\d+)", asm, re.M)
        return int(m.group(1)) if m else -1

    vgprs = num("TotalNumVgprs") if num("TotalNumVgprs") >= 0 else num("NumVgprs")
    loads = Counter(_LOAD_KIND.get(k, "ld_16" if re.search(r"short|u16|b16|d16", k) else "ld_other")
                    for k in _LOAD.findall(asm) if "lds" not in k)
    ops = re.findall(r"^\s+([sv]_\w+|ds_\w+|global_\w+|buffer_\w+|scratch_\w+)", asm, re.M)
    return {
        "vgprs": vgprs, "sgprs": num("TotalNumSgprs") if num("TotalNumSgprs") >= 0 else num("NumSgprs"),
        "scratch_bytes": num("ScratchSize"), "waves_per_simd": num("Occupancy"),
        "v_dot2": sum(o.startswith("v_dot2") for o in ops),
        "v_mfma": sum(o.startswith("v_mfma") for o in ops),
        "v_wmma": sum(o.startswith("v_wmma") for o in ops),
        "v_fma": sum(o.startswith(("v_fma", "v_fmac", "v_mac", "v_pk_fma")) for o in ops),
        **{k: loads.get(k, 0) for k in ("ld_x4", "ld_x3", "ld_x2", "ld_x1", "ld_16")},
        "ds_ops": sum(o.startswith("ds_") for o in ops), "instructions": len(ops),
    }


def compile_spec(spec: dict, arch: str) -> dict:
    """AOT-compile one spec for ``arch``; returns a report row (``error`` set on failure)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    row = {"kernel": spec["name"], "module": spec.get("module", ""), "arch": arch,
           "num_warps": spec["num_warps"], "num_stages": spec["num_stages"]}
    fn = spec["fn"]
    # constexpr parameters with a default that the spec leaves out (e.g. PDL) take their default
    sig, consts = dict(spec["signature"]), dict(spec.get("constexprs", {}))
    for p in fn.params:
        if p.name not in sig and p.is_constexpr and p.has_default:
            sig[p.name] = "constexpr"
            consts.setdefault(p.name, p.default)
    spec = dict(spec, signature=sig, constexprs=consts)
    div16 = set(spec.get("divisible_by_16", ()))
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names)
             if a in spec["signature"] and (spec["signature"][a].startswith("*") or a in div16)}
    t0 = time.perf_counter()
    try:
        src = ASTSource(fn=fn, signature=spec["signature"], constexprs=spec.get("constexprs", {}), attrs=attrs)
        warp = 32 if arch.startswith(("gfx10", "gfx11", "gfx12")) else 64
        opts = {"num_warps": spec["num_warps"], "num_stages": spec["num_stages"]}
        if "waves_per_eu" in spec:
            opts["waves_per_eu"] = spec["waves_per_eu"]
        k = triton.compile(src, target=GPUTarget("hip", arch, warp), options=opts)
        row.update(_parse(k.asm["amdgcn"], arch))
        row["lds_bytes"] = int(k.metadata.shared)
    except Exception as e:
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    row["compile_s"] = round(time.perf_counter() - t0, 2)
    return row


def _report_here(arches, kernels) -> list[dict]:
    specs, rows = discover(kernels)
    for arch in arches:
        rows += [compile_spec(s, arch) for s in specs if s["arch"] == arch]
    return rows


def report(arches=DEFAULT_ARCHES, kernels=None) -> list[dict]:
    """Compile each registered spec for the listed arches (its ``arch`` key must match).

    Returns one dict per (kernel config, arch): vgprs, sgprs, lds_bytes, scratch_bytes,
    waves_per_simd (the compiler's occupancy), v_dot2/v_mfma/v_wmma/v_fma counts, global/buffer
    load counts by width (ld_x4 = 128-bit ... ld_16 = 16-bit), ds_ops, instructions, compile_s,
    or ``error``.

    Raises:
        RuntimeError: the subprocess used under ``TRITON_INTERPRET`` failed.
    """
    arches, kernels = list(arches), list(kernels or [])
    if not _interpreting():
        return _report_here(arches, kernels)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "gfx906_llm.kernels.isa", "--json", "--arch", *arches]
    for k in kernels:
        cmd += ["--kernel", k]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode not in (0, 1):
        raise RuntimeError(f"ISA report subprocess failed ({p.returncode}): {p.stderr[-2000:]}")
    return json.loads(p.stdout)


def problems(row: dict) -> list[str]:
    """What makes a row unacceptable: a compile error, scratch spills, LDS over 64 KiB."""
    if "error" in row:
        return [row["error"]]
    out = []
    if row["scratch_bytes"] > 0:
        out.append(f"spills {row['scratch_bytes']} B to scratch")
    if row["lds_bytes"] > LDS_LIMIT:
        out.append(f"LDS {row['lds_bytes']} B > {LDS_LIMIT}")
    return out


_COLS = [("kernel", 30), ("arch", 7), ("num_warps", 5), ("vgprs", 5), ("sgprs", 5), ("lds_bytes", 6),
         ("scratch_bytes", 7), ("waves_per_simd", 5), ("v_dot2", 6), ("v_mfma", 6), ("v_wmma", 6),
         ("ld_x4", 5), ("ld_x2", 5), ("ld_x1", 5), ("ld_16", 5)]


def format_table(rows: list[dict]) -> str:
    hdr = {"num_warps": "warps", "lds_bytes": "lds", "scratch_bytes": "scratch", "waves_per_simd": "waves"}
    cols = [(c, max([w] + [len(str(r.get(c, ""))) for r in rows])) for c, w in _COLS]
    lines = [" ".join(f"{hdr.get(c, c):>{w}}" if i else f"{hdr.get(c, c):<{w}}" for i, (c, w) in enumerate(cols))]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['kernel']:<{cols[0][1]}} {r['arch']:>7} ERROR {r['error']}")
            continue
        lines.append(" ".join(f"{str(r[c]):>{w}}" if i else f"{r[c]:<{w}}" for i, (c, w) in enumerate(cols)))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry (``gfx906-llm kernels report``). Exit 1 when a gfx906 row has problems."""
    ap = argparse.ArgumentParser(prog="gfx906-llm kernels report", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    ap.add_argument("--arch", nargs="+", default=list(DEFAULT_ARCHES), help="targets (default: %(default)s)")
    ap.add_argument("--kernel", action="append", default=[], help="only kernels whose name contains this")
    args = ap.parse_args(argv)
    rows = report(args.arch, args.kernel)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows))
        for r in rows:
            for p in problems(r):
                print(f"WARNING {r['kernel']} on {r['arch']}: {p}")
    return 1 if any(problems(r) for r in rows if r["arch"] in ("gfx906", "*")) else 0


if __name__ == "__main__":
    sys.exit(main())
