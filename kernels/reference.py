"""Plain-torch reference ops: the CPU path of the engine and the oracle for every Triton kernel.

Everything here runs on any torch device, in any float dtype, with no host synchronisation
beyond what indexing needs. The Triton kernels in ``gfx906_llm.kernels.gfx906`` are tested
against these functions on fresh random inputs.

Paged KV cache layout (vLLM): ``k_cache`` and ``v_cache`` are ``[num_blocks, block_size,
num_kv_heads, head_dim]``; token ``t`` of a request lives in slot
``block_table[r, t // block_size] * block_size + t % block_size``.
"""

from __future__ import annotations

import torch


def reshape_and_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Write new keys and values into the paged cache, in place.

    Args:
        key, value: ``[T, num_kv_heads, head_dim]`` for the T tokens of this step.
        k_cache, v_cache: ``[num_blocks, block_size, num_kv_heads, head_dim]``.
        slot_mapping: ``[T]`` int32/int64, ``block_id * block_size + offset``; negative slots
            (padding) are skipped.
    """
    num_blocks, block_size, hkv, d = k_cache.shape
    if bool((slot_mapping < 0).any()):
        # index_select rather than boolean indexing: the latter is very slow on CPU tensors
        keep = (slot_mapping >= 0).nonzero().squeeze(1)
        key, value, slot_mapping = key.index_select(0, keep), value.index_select(0, keep), slot_mapping.index_select(0, keep)
    slots = slot_mapping.long()
    k_cache.view(num_blocks * block_size, hkv, d).index_copy_(0, slots, key.to(k_cache.dtype))
    v_cache.view(num_blocks * block_size, hkv, d).index_copy_(0, slots, value.to(v_cache.dtype))


def gather_kv(
    k_cache: torch.Tensor, v_cache: torch.Tensor, block_table_row: torch.Tensor, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous ``[seq_len, num_kv_heads, head_dim]`` keys and values of one request."""
    block_size = k_cache.shape[1]
    nblk = (seq_len + block_size - 1) // block_size
    blocks = block_table_row[:nblk].long()
    k = k_cache[blocks].flatten(0, 1)[:seq_len]
    v = v_cache[blocks].flatten(0, 1)[:seq_len]
    return k, v


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, kv_len: torch.Tensor,
            scale: float, sliding_window: int | None, soft_cap: float | None) -> torch.Tensor:
    """Batched grouped-query attention with causal/window masks, fp32 softmax.

    q ``[B, L, Hq, D]``; k, v ``[B, S, Hkv, D]``; q_pos ``[B, L]`` absolute query positions;
    kv_len ``[B]`` valid keys per batch row. Returns ``[B, L, Hq, D]`` fp32.
    """
    B, L, hq, d = q.shape
    S, hkv = k.shape[1], k.shape[2]
    g = hq // hkv
    qg = q.float().view(B, L, hkv, g, d)
    s = torch.einsum("blhgd,bshd->bhgls", qg, k.float()) * scale  # [B, Hkv, G, L, S]
    if soft_cap is not None and soft_cap > 0:
        s = soft_cap * torch.tanh(s / soft_cap)
    kpos = torch.arange(S, device=q.device)[None, None, :]  # [1, 1, S]
    mask = (kpos <= q_pos[:, :, None]) & (kpos < kv_len[:, None, None])  # [B, L, S]
    if sliding_window is not None and sliding_window > 0:
        mask &= kpos > q_pos[:, :, None] - sliding_window
    s = s.masked_fill(~mask[:, None, None], float("-inf"))
    p = torch.softmax(s, dim=-1)
    out = torch.einsum("bhgls,bshd->blhgd", p, v.float())
    return out.reshape(B, L, hq, d)


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    block_table: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
    soft_cap: float | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Unified (mixed prefill/decode) causal attention over a paged KV cache.

    Request ``r`` owns query rows ``query_start_loc[r]:query_start_loc[r+1]`` (``q_len`` of
    them) and ``seq_lens[r]`` keys, of which the last ``q_len`` belong to this step: query row
    ``i`` sits at position ``p = seq_lens[r] - q_len + i`` and sees keys ``j <= p`` (and, with a
    sliding window ``w``, only ``j > p - w``, as Hugging Face's sliding-window mask).

    Args:
        q: ``[T, num_heads, head_dim]``.
        k_cache, v_cache: ``[num_blocks, block_size, num_kv_heads, head_dim]``, already holding
            this step's keys and values. ``num_heads`` must be a multiple of ``num_kv_heads``
            (grouped-query attention: query head ``h`` reads KV head ``h // (num_heads //
            num_kv_heads)``).
        query_start_loc: ``[R + 1]`` cumulative query lengths.
        seq_lens: ``[R]`` KV lengths after this step.
        block_table: ``[R, max_blocks_per_seq]`` block ids.
        scale: softmax scale, usually ``head_dim ** -0.5``.
        sliding_window: window size in tokens, or None for full attention.
        soft_cap: logit soft-capping ``cap * tanh(s / cap)`` (Gemma 2), or None.
        out: optional ``[T, num_heads, head_dim]`` output buffer.

    Returns:
        ``[T, num_heads, head_dim]`` in ``q.dtype``; rows that belong to no request (padding
        after ``query_start_loc[-1]``) are zero. Softmax runs in fp32.
    """
    if out is None:
        out = torch.zeros_like(q)
    else:
        out.zero_()
    qsl = query_start_loc.tolist()
    sls = seq_lens.tolist()
    R = len(sls)
    if R and qsl[R] == R:
        # every request decodes one token: one batched gather over the block table
        block_size = k_cache.shape[1]
        nblk = -(-max(sls) // block_size)
        blocks = block_table[:, :nblk].long()  # [R, nblk]
        k = k_cache[blocks].flatten(1, 2)  # [R, nblk * block_size, Hkv, D]
        v = v_cache[blocks].flatten(1, 2)
        kv_len = seq_lens.long()
        res = _attend(q[:R, None], k, v, (kv_len - 1)[:, None], kv_len, scale, sliding_window, soft_cap)
        out[:R] = res[:, 0].to(q.dtype)
        return out
    for r in range(R):
        start, end = qsl[r], qsl[r + 1]
        q_len, seq_len = end - start, sls[r]
        if q_len == 0:
            continue
        k, v = gather_kv(k_cache, v_cache, block_table[r], seq_len)  # [S, Hkv, D]
        pos = torch.arange(seq_len - q_len, seq_len, device=q.device)[None]  # [1, L]
        kv_len = torch.tensor([seq_len], device=q.device)
        res = _attend(q[None, start:end], k[None], v[None], pos, kv_len, scale, sliding_window, soft_cap)
        out[start:end] = res[0].to(q.dtype)
    return out


def _value(x):
    """A tensor, or the summed value of split-K partials (``gfx906_llm.layers.splitk``)."""
    from gfx906_llm.layers.splitk import as_tensor

    return as_tensor(x)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, offset: float = 0.0) -> torch.Tensor:
    """RMSNorm (Zhang & Sennrich 2019) in fp32: ``x / rms(x) * (offset + weight)``.

    ``offset=1.0`` gives Gemma's ``(1 + weight)`` convention. Shape ``[..., hidden]``; the
    result has ``x.dtype`` (``x`` may be a ``gfx906_llm.layers.splitk.SplitKPartials``).
    """
    x = _value(x)
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (xf * (offset + weight.float())).to(x.dtype)


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float, offset: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``residual = x + residual``; returns ``(rms_norm(residual), residual)`` (``x`` may be a
    ``gfx906_llm.layers.splitk.SplitKPartials``)."""
    residual = _value(x) + residual
    return rms_norm(residual, weight, eps, offset), residual


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """SwiGLU activation: ``[..., 2 * I] -> [..., I]`` as ``silu(x[..., :I]) * x[..., I:]``
    (``x`` may be a ``gfx906_llm.layers.splitk.SplitKPartials``)."""
    gate, up = _value(x).chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up


def gelu_tanh_and_mul(x: torch.Tensor) -> torch.Tensor:
    """GeGLU with tanh-approximated GELU (Gemma): ``[..., 2 * I] -> [..., I]`` (``x`` as for
    ``silu_and_mul``)."""
    gate, up = _value(x).chunk(2, dim=-1)
    return torch.nn.functional.gelu(gate, approximate="tanh") * up


def rotary_embedding(
    positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """NeoX-style (rotate-half) rotary embedding, as Hugging Face Llama applies it.

    Args:
        positions: ``[T]`` int64 token positions.
        q: ``[T, Hq, D]``; k: ``[T, Hkv, D]``.
        cos_sin_cache: ``[max_position, D]`` fp32 holding ``cos`` in the first ``D/2`` columns and
            ``sin`` in the last ``D/2`` (RoFormer, Su et al. 2021).

    Returns:
        Rotated ``(q, k)`` in their input dtypes.
    """
    cs = cos_sin_cache.index_select(0, positions)  # [T, D]
    half = cs.shape[-1] // 2
    cos = cs[:, None, :half]
    sin = cs[:, None, half:]

    def rot(x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        x1, x2 = xf[..., :half], xf[..., half:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)

    return rot(q), rot(k)


def _check_qkv_rope_cache(qkv, positions, cos_sin_cache, k_cache, v_cache, slot_mapping, num_heads: int,
                          num_kv_heads: int, head_dim: int, q_norm_weight, k_norm_weight, out) -> None:
    """The input checks shared by this reference and the Triton ``qkv_rope_cache`` (ValueError)."""
    ws = getattr(qkv, "ws", None)  # a gfx906_llm.layers.splitk.SplitKPartials (duck-typed: no import)
    dtype = qkv.dtype
    if num_heads < 1 or num_kv_heads < 1 or num_heads % num_kv_heads:
        raise ValueError(f"num_heads {num_heads} must be a positive multiple of num_kv_heads {num_kv_heads}")
    if head_dim < 2 or head_dim > 256 or head_dim % 2:
        raise ValueError(f"head_dim {head_dim} must be even and in [2, 256]")
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"qkv dtype {dtype} must be float16, bfloat16 or float32")
    n = (num_heads + 2 * num_kv_heads) * head_dim
    shape = tuple(ws.shape[1:]) if ws is not None else tuple(qkv.shape)
    if len(shape) != 2 or shape[1] != n:
        raise ValueError(f"qkv {shape} must be [T, (num_heads + 2 * num_kv_heads) * head_dim = {n}]")
    if ws is None and qkv.stride(-1) != 1:
        raise ValueError(f"qkv needs a contiguous last dim, got strides {tuple(qkv.stride())}")
    T = shape[0]
    if positions.dim() != 1 or positions.shape[0] != T or positions.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"positions {tuple(positions.shape)} {positions.dtype} must be int32/int64 [T = {T}]")
    if cos_sin_cache.dim() != 2 or cos_sin_cache.shape[1] != head_dim or not cos_sin_cache.is_floating_point():
        raise ValueError(f"cos_sin_cache {tuple(cos_sin_cache.shape)} must be float [max_position, {head_dim}]")
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape or tuple(k_cache.shape[2:]) != (num_kv_heads, head_dim):
        raise ValueError(f"k_cache {tuple(k_cache.shape)} / v_cache {tuple(v_cache.shape)} must both be "
                         f"[num_blocks, block_size, {num_kv_heads}, {head_dim}]")
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("k_cache and v_cache need a contiguous last (head_dim) dimension")
    if slot_mapping.dim() != 1 or slot_mapping.shape[0] > T or slot_mapping.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"slot_mapping {tuple(slot_mapping.shape)} {slot_mapping.dtype} must be int32/int64 [<= {T}]")
    for name, w in (("q_norm_weight", q_norm_weight), ("k_norm_weight", k_norm_weight)):
        if w is not None and tuple(w.shape) != (head_dim,):
            raise ValueError(f"{name} {tuple(w.shape)} must be [{head_dim}]")
    if out is not None and (tuple(out.shape) != (T, num_heads, head_dim) or out.dtype != dtype or out.stride(-1) != 1):
        raise ValueError(f"out {tuple(out.shape)} {out.dtype} must be [{T}, {num_heads}, {head_dim}] {dtype} "
                         "with a contiguous last dim")


def qkv_rope_cache(
    qkv, positions: torch.Tensor, cos_sin_cache: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    slot_mapping: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int, *,
    q_norm_weight: torch.Tensor | None = None, k_norm_weight: torch.Tensor | None = None, norm_eps: float = 1e-6,
    norm_offset: float = 0.0, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The attention block's small ops after the QKV projection, composed from the ops above.

    Splits ``qkv`` into q ``[T, Hq, D]``, k and v ``[T, Hkv, D]``; RMSNorms each q / k head when
    its weight is given (Qwen3, Gemma-3: ``rms_norm`` with ``norm_eps`` and ``norm_offset``);
    applies the NeoX rotary embedding to q and k (``rotary_embedding``); writes k and v at
    ``slot_mapping`` into the paged caches (``reshape_and_cache``: negative slots and rows
    ``t >= slot_mapping.shape[0]`` are skipped).

    Args:
        qkv: ``[T, (Hq + 2 * Hkv) * D]`` fp16/bf16/fp32 with a contiguous last dim, or a
            ``gfx906_llm.layers.splitk.SplitKPartials`` whose value is that tensor.
        positions: ``[T]`` int32/int64; cos_sin_cache: ``[max_position, D]`` fp32 (cos | sin).
        k_cache, v_cache: ``[num_blocks, block_size, Hkv, D]``; slot_mapping: ``[<= T]`` int32/int64.
        q_norm_weight, k_norm_weight: ``[D]`` or None.
        out: optional ``[T, Hq, D]`` buffer in qkv's dtype.

    Returns:
        q after norm and rotary, a new contiguous ``[T, Hq, D]`` tensor (or ``out``) in qkv's
        dtype. ``qkv`` is not modified.

    Raises:
        ValueError: shapes, dtypes or head counts that do not fit together (see the checks).
    """
    _check_qkv_rope_cache(qkv, positions, cos_sin_cache, k_cache, v_cache, slot_mapping, num_heads,
                          num_kv_heads, head_dim, q_norm_weight, k_norm_weight, out)
    from gfx906_llm.layers.splitk import as_tensor

    x = as_tensor(qkv)  # [T, N]
    T = x.shape[0]
    q, k, v = x.split([num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim], dim=-1)
    q = q.unflatten(-1, (num_heads, head_dim))  # [T, Hq, D]
    k = k.unflatten(-1, (num_kv_heads, head_dim))  # [T, Hkv, D]
    v = v.unflatten(-1, (num_kv_heads, head_dim))
    if q_norm_weight is not None:
        q = rms_norm(q, q_norm_weight, norm_eps, norm_offset)
    if k_norm_weight is not None:
        k = rms_norm(k, k_norm_weight, norm_eps, norm_offset)
    q, k = rotary_embedding(positions.long(), q, k, cos_sin_cache.float())
    n = slot_mapping.shape[0]
    if n:
        reshape_and_cache(k[:n], v[:n], k_cache, v_cache, slot_mapping)
    if out is None:
        return q.contiguous()
    return out.copy_(q) if T else out
