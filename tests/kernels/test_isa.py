"""ISA report: every registered kernel's gfx906 configurations compile without scratch spills and
within 64 KiB of LDS (stock Triton, AOT, no GPU needed)."""

from __future__ import annotations

import functools
import json

import pytest

pytest.importorskip("triton")
from gfx906_llm.kernels import isa  # noqa: E402


@functools.lru_cache(maxsize=None)
def gfx906_rows() -> tuple:
    return tuple(json.dumps(r) for r in isa.report(arches=("gfx906",)))


def rows() -> list[dict]:
    return [json.loads(r) for r in gfx906_rows()]


def _modules() -> list[str]:
    import pkgutil

    import gfx906_llm.kernels.gfx906 as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__))


def test_some_kernel_registers_gfx906_configs():
    assert rows(), "no kernel registered an isa_specs() configuration for gfx906"


@pytest.mark.parametrize("module", _modules())
def test_gfx906_configs_compile_without_spills_and_fit_lds(module):
    """One test per kernel module, so a failure names the module whose configuration spills."""
    bad = {r["kernel"]: isa.problems(r) for r in rows() if r["module"] == module and isa.problems(r)}
    assert not bad, f"gfx906 configurations of {module} with problems: {bad}"


def test_report_covers_attention_and_cache_kernels():
    names = {r["kernel"] for r in rows()}
    for prefix in ("unified_attention[", "reduce_segments[", "reshape_and_cache["):
        assert any(n.startswith(prefix) for n in names), f"no {prefix} rows in {sorted(names)}"
    for r in rows():
        if r["kernel"].startswith("unified_attention[decode"):
            assert r["ld_x4"] + r["ld_x2"] > 0, f"{r['kernel']}: K/V loads are not vectorised: {r}"
            assert r["waves_per_simd"] >= 2, f"{r['kernel']}: occupancy {r['waves_per_simd']} < 2 waves/SIMD"


def test_parse_counts_instruction_mix():
    asm = """
    ; NumVgprs: 40
    ; NumSgprs: 20
    ; ScratchSize: 0
    ; Occupancy: 6
        global_load_dwordx4 v[0:3], v[4:5], off
        global_load_dwordx4 v[0:3], v[4:5], off
        buffer_load_dwordx2 v[0:1], v2, s[4:7], 0 offen
        global_load_dword v1, v[4:5], off
        global_load_ushort v1, v[4:5], off
        v_dot2_f32_f16 v1, v2, v3, v1
        v_fma_f32 v1, v2, v3, v1
        ds_read_b128 v[0:3], v9
    """
    r = isa._parse(asm, "gfx906")
    assert (r["vgprs"], r["sgprs"], r["scratch_bytes"], r["waves_per_simd"]) == (40, 20, 0, 6)
    assert (r["ld_x4"], r["ld_x2"], r["ld_x1"], r["ld_16"]) == (2, 1, 1, 1)
    assert (r["v_dot2"], r["v_fma"], r["ds_ops"], r["v_mfma"]) == (1, 1, 1, 0)
    assert isa.problems(dict(r, lds_bytes=70000)) == ["LDS 70000 B > 65536"]
    assert isa.problems(dict(r, lds_bytes=0, scratch_bytes=8)) == ["spills 8 B to scratch"]


def test_table_and_json_cli(capsys):
    r = rows()[0]
    table = isa.format_table([r])
    assert r["kernel"] in table and "vgprs" in table
    assert isa.main(["--json", "--arch", "gfx906", "--kernel", "reduce_segments"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out and all(x["kernel"].startswith("reduce_segments") for x in out)
