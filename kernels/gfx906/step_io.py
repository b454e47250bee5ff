"""The decode graph's ends, Triton: input ids gathered from the previous step's samples, and the
greedy argmax of the logits.

Async scheduling (``gfx906_llm/worker/cuda_graph.py``) launches decode step N+1 before step N's
sampled ids reach the host: row ``i`` of step N+1 then reads its input id from ``prev_tokens
[prev_rows[i]]`` (step N's samples, on the device); rows with ``prev_rows[i] < 0`` keep the id
the host wrote. One launch inside the captured graph (the torch form is four: clamp, gather,
compare, select), so the gather costs the step nothing outside the graph.

``argmax_rows``: the first index of each row's maximum (``torch.argmax``'s result) in two
launches: the maxima of ``CHUNK``-wide slices of each row (one program each), then the first
slice holding the row's maximum. The torch form takes five kernels (two reductions, two gathers,
an index computation): 18 us of a batch-1 8B decode step on an H100 (benchmarks/NOTES_e2e.md).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def resolve_input_ids_kernel(tok_ptr, prev_rows_ptr, prev_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n
    r = tl.load(prev_rows_ptr + offs, mask=ok, other=-1)
    t = tl.load(tok_ptr + offs, mask=ok, other=0)
    g = tl.load(prev_ptr + tl.maximum(r, 0), mask=ok & (r >= 0), other=0)
    tl.store(out_ptr + offs, tl.where(r >= 0, g, t), mask=ok)


def resolve_input_ids(tok: torch.Tensor, prev_rows: torch.Tensor, prev_tokens: torch.Tensor,
                      use_triton: bool | None = None) -> torch.Tensor:
    """``out[i] = prev_tokens[prev_rows[i]] if prev_rows[i] >= 0 else tok[i]``.

    Args:
        tok: ``[n]`` int64, the ids the host wrote.
        prev_rows: ``[n]`` int64, a row of ``prev_tokens`` or -1.
        prev_tokens: ``[S]`` int64, the previous step's sampled ids (same device).
        use_triton: the Triton kernel (default: on GPUs), else torch.
    Returns:
        ``[n]`` int64 on ``tok``'s device.
    """
    if use_triton is None:
        use_triton = tok.is_cuda
    if not use_triton:
        return torch.where(prev_rows >= 0, prev_tokens.index_select(0, prev_rows.clamp(min=0)), tok)
    n = tok.numel()
    out = torch.empty_like(tok)
    BLOCK = max(16, min(1024, triton.next_power_of_2(n)))
    resolve_input_ids_kernel[(triton.cdiv(n, BLOCK),)](tok, prev_rows, prev_tokens, out, n, BLOCK=BLOCK, num_warps=1)
    return out


@triton.jit
def _chunk_max_kernel(x_ptr, vals_ptr, idx_ptr, V, stride_x, C, CHUNK: tl.constexpr):
    s = tl.program_id(0)
    c = tl.program_id(1)
    offs = c * CHUNK + tl.arange(0, CHUNK)
    x = tl.load(x_ptr + s.to(tl.int64) * stride_x + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
    m = tl.max(x, 0)
    first = tl.min(tl.where(x == m, offs, 2147483647), 0)  # ties: the first index, as torch.argmax
    tl.store(vals_ptr + s * C + c, m)
    tl.store(idx_ptr + s * C + c, first)


@triton.jit
def _row_argmax_kernel(vals_ptr, idx_ptr, out_ptr, C, C_PAD: tl.constexpr):
    s = tl.program_id(0)
    offs = tl.arange(0, C_PAD)
    ok = offs < C
    v = tl.load(vals_ptr + s * C + offs, mask=ok, other=float("-inf"))
    i = tl.load(idx_ptr + s * C + offs, mask=ok, other=2147483647)
    m = tl.max(v, 0)
    tl.store(out_ptr + s, tl.min(tl.where(v == m, i, 2147483647), 0).to(tl.int64))


def argmax_rows_triton(x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``x.argmax(-1)`` of ``x [S, V]`` (fp32/fp16/bf16, unit stride in V) as int64 ``[S]``, the first
    index of each row's maximum. Rows holding NaN are not supported (torch would return the NaN's
    index; here a NaN never compares equal, so such a row gives an arbitrary index)."""
    S, V = x.shape
    C = triton.cdiv(V, chunk)
    vals = torch.empty((S, C), dtype=torch.float32, device=x.device)
    idx = torch.empty((S, C), dtype=torch.int32, device=x.device)
    out = torch.empty(S, dtype=torch.int64, device=x.device)
    _chunk_max_kernel[(S, C)](x, vals, idx, V, x.stride(0), C, CHUNK=chunk, num_warps=4)
    _row_argmax_kernel[(S,)](vals, idx, out, C, C_PAD=max(16, triton.next_power_of_2(C)), num_warps=1)
    return out
