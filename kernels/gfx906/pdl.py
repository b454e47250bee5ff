"""Programmatic dependent launch (PDL, NVIDIA sm_90+) for the kernels of a decode step.

A batch-1 decode step is a chain of ~300 dependent launches; between two of them the GPU drains
the first grid, then starts the next one's programs (~1-2 us per boundary, 128 of them in front of
a W4A16 GEMV that then ramps up its weight stream). With PDL a kernel launched with
``launch_pdl=True`` may start while the one before it runs, once every program of that one has
executed ``griddepcontrol.launch_dependents``; ``griddepcontrol.wait`` then blocks until the
previous grid has completed and its memory is visible (CUDA programming guide, "Programmatic
Dependent Launch and Synchronization"; CUDA graphs keep it as a programmatic edge).

The rule every kernel here follows: ``pdl_launch`` (launch dependents) at the very top, ``pdl_wait``
before any global store and before any early return, so that a grid's completion implies the
completion of every grid before it. Between the two a kernel may only read what no kernel of the
step writes: weights and other constants, the step's inputs (positions, slot mapping, seq_lens,
block table, query_start_loc: uploaded before the step's first kernel, which launches without PDL),
and KV-cache rows of earlier steps. A grid may start as soon as its predecessor's programs have
all begun, so the kernel two back may still be running: reading its output before the wait is a
race. What the kernels read early: the RMSNorm weight, the rotary table and positions
(``qkv_rope_cache``), the first KV tile of earlier steps (attention), the first weight block and
its scales of short W4A16 splits (``PRELOAD``). The GGUF integer-dot GEMV is the exception that
launches without PDL (slower with it, see ``gguf_mmvq_kernel``); its q8_1 quantiser uses it. The W4A16 GEMV may also issue L2 prefetches of its
first weight blocks (``GFX906_LLM_PDL_PREFETCH``, default 0).

Measured on an H100 with the 8B-shaped GPTQ model, graph-replayed decode steps (NOTES_e2e.md,
session 5), one device call each:
* PDL with 2 prefetched blocks per GEMV program: batch 1 2.65 ms per step against 2.44 ms
  without PDL (342 against 364 tok/s), batch 8 4.23 against 4.49 ms. The ~15 MB of early
  prefetches seem to delay the latency-bound kernel they overlap.
* PDL without the prefetch (the default): batch 1 2.36 against 2.45 ms (412 against 397 tok/s),
  batch 8 4.31 against 4.49 ms (1836 against 1764 tok/s).

On by default on CUDA devices of compute capability 9.0 or newer; ``GFX906_LLM_PDL=0`` turns it
off. On AMD, in the CPU interpreter and on older GPUs the constexpr ``PDL`` is False and nothing is
emitted.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


@functools.lru_cache(maxsize=None)
def _enabled(device_type: str, index: int | None) -> bool:
    if os.environ.get("GFX906_LLM_PDL", "1") == "0" or device_type != "cuda" or torch.version.hip:
        return False
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return False
    return torch.cuda.get_device_capability(index)[0] >= 9


def pdl_enabled(device: torch.device) -> bool:
    """True where kernels launch with PDL: a CUDA device of compute capability 9.0 or newer,
    unless ``GFX906_LLM_PDL=0``."""
    return _enabled(device.type, device.index)


def prefetch_blocks() -> int:
    """K blocks per program the W4A16 GEMV prefetches into L2 before its wait
    (``GFX906_LLM_PDL_PREFETCH``, default 0: measured slower with 2, see the module docstring)."""
    return max(0, int(os.environ.get("GFX906_LLM_PDL_PREFETCH", "0")))


def launch_kwargs(enabled: bool) -> dict:
    """The launch option that goes with ``PDL=enabled`` (Triton's ``launch_pdl``)."""
    return {"launch_pdl": True} if enabled else {}


def pdl_kwargs(device: torch.device) -> dict:
    """A kernel's ``PDL`` constexpr and the matching launch option, for a launch on ``device``."""
    enabled = pdl_enabled(device)
    return {"PDL": enabled, **launch_kwargs(enabled)}


@triton.jit
def pdl_start(PDL: tl.constexpr):
    """Let the next kernel start its programs, then wait for the previous kernel (see module doc)."""
    if PDL:
        gdc_launch_dependents()
        gdc_wait()


@triton.jit
def pdl_launch(PDL: tl.constexpr):
    if PDL:
        gdc_launch_dependents()


@triton.jit
def pdl_wait(PDL: tl.constexpr):
    if PDL:
        gdc_wait()


@triton.jit
def prefetch_l2(ptrs, mask, base_ptr, PDL: tl.constexpr):
    """``prefetch.global.L2`` of the 128-byte lines at ``ptrs`` where ``mask`` (elsewhere the line at
    ``base_ptr``, which must be a valid address), PTX inline asm."""
    if PDL:
        safe = tl.where(mask, ptrs, base_ptr)
        tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n mov.u32 $0, 0;", "=r,l", [safe],
                                  dtype=tl.int32, is_pure=False, pack=1)
