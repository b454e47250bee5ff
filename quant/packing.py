"""Bit packing for GPTQ, AWQ and compressed-tensors checkpoints, and the internal W4A16 layout.

Standard layouts (all pack ``32 // bits`` unsigned integers into one int32, lowest bits first):

* GPTQ (AutoGPTQ / GPTQModel ``qlinear``): ``qweight`` int32 ``[K / pack, N]`` packed along K,
  ``qzeros`` int32 ``[K / g, N / pack]`` packed along N, both in sequential order. Checkpoint
  format ``gptq`` (v1) stores ``zero - 1``; dequantisation reads ``(nibble + 1) & mask``
  (AutoGPTQ's torch kernel); ``gptq_v2`` stores the zero itself.
* AWQ (AutoAWQ ``WQLinear_GEMM``): ``qweight`` int32 ``[K, N / 8]`` and ``qzeros`` ``[K / g, N / 8]``
  packed along N; nibble ``t`` of a word holds column ``AWQ_ORDER[t]`` of its run of 8.
* compressed-tensors ``pack-quantized`` (``pack_to_int32``): signed values ``q`` are stored as
  ``q + 2**(bits-1)``; ``weight_packed`` int32 ``[N, K / pack]`` packed along K,
  ``weight_zero_point`` int32 ``[N / pack, K / g]`` packed along N (``packed_dim=0``).

The internal layout (one for every format, read by ``kernels/gfx906/w4a16_gemv.py`` and
``w4a16_gemm.py``):

* ``qweight`` int32 ``[K_pad / pack, N]``: N is the contiguous dimension, so a program's tile of
  ``P`` word-rows by ``BLOCK_N`` columns is read with 128-bit loads (4 columns per lane).
  K is cut into blocks of ``KB = pack * P`` rows (``P = INTERLEAVE = 16``); inside block ``b``,
  bit field ``j`` (bits ``[bits*j, bits*(j+1))``) of word-row ``b*P + p`` holds input row
  ``k = b*KB + j*P + p``. Shifting a loaded ``[P, BLOCK_N]`` tile by ``bits*j`` therefore gives
  the contiguous K-chunk ``j`` of the block: no reshape or interleave in the kernel, and a chunk
  of ``P`` rows never straddles a quantisation group.
* ``scales`` ``[K_pad / g, N]`` (fp16 on GPUs), ``zeros`` uint8 ``[K_pad / g, N]`` or None
  (symmetric: zero is ``2**(bits-1)``), value ``w[n, k] = (q - zero) * scale``.
* ``perm`` int32 ``[K]`` or None: GPTQ act-order (``desc_act``) checkpoints have a ``g_idx``
  that scatters each group over K. At load the rows are sorted by group (stable argsort of
  ``g_idx``), so groups become contiguous; internal row ``i`` is input feature ``perm[i]``, and
  the kernels gather the activation columns through ``perm`` (the weight is never un-permuted).
* ``K_pad = ceil(K / KB) * KB``; padded rows hold ``q = 0`` and meet activations masked to 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

#: AutoAWQ's nibble order: nibble t of a packed word holds column AWQ_ORDER[t] of its run of 8
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
#: word-rows per K block of the internal layout (the K-chunk length the kernels work on)
INTERLEAVE = 16
SUPPORTED_BITS = (4, 8)


def check_bits(bits: int) -> int:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits} is not supported; supported: {SUPPORTED_BITS}")
    return 32 // bits


def check_group_size(group_size: int, bits: int) -> int:
    """Validate a checkpoint group size for the internal layout (-1 = per channel).

    Raises:
        ValueError: not -1 and not a multiple of ``INTERLEAVE`` that divides, or is divided by,
            the K block ``(32 // bits) * INTERLEAVE`` (32, 64, 128, 256, ... all pass).
    """
    kb = check_bits(bits) * INTERLEAVE
    if group_size != -1 and (group_size <= 0 or group_size % INTERLEAVE or (kb % group_size and group_size % kb)):
        raise ValueError(f"group_size={group_size} unsupported for {bits} bits; use -1 or a multiple of "
                         f"{INTERLEAVE} dividing or divisible by {kb} (32, 64, 128, 256)")
    return group_size


def _to_int32(v: torch.Tensor) -> torch.Tensor:
    """int64 holding 32-bit patterns -> int32 with the same bits (two's complement wrap)."""
    v = v & 0xFFFFFFFF
    return torch.where(v >= 2**31, v - 2**32, v).to(torch.int32)


def pack_int32(q: torch.Tensor, bits: int, dim: int, order: Sequence[int] | None = None) -> torch.Tensor:
    """Pack unsigned ``bits``-bit integers, ``32 // bits`` consecutive ones along ``dim`` per int32.

    Args:
        q: 2-D integer tensor with values in ``[0, 2**bits)``; ``q.shape[dim]`` a multiple of the
            pack factor.
        dim: 0 (GPTQ qweight, compressed-tensors zero points) or 1 (GPTQ qzeros, AWQ,
            compressed-tensors weights).
        order: field ``t`` of each word holds element ``order[t]`` of its run (AWQ_ORDER for AWQ);
            None is sequential.
    Returns:
        int32 tensor, ``q.shape`` with ``dim`` divided by the pack factor.
    Raises:
        ValueError: unsupported bits, a value out of range or a dimension not divisible.
    """
    pack = check_bits(bits)
    if q.shape[dim] % pack:
        raise ValueError(f"dimension {dim} of size {q.shape[dim]} is not a multiple of {pack}")
    q = q.to(torch.int64)
    if q.numel() and (int(q.min()) < 0 or int(q.max()) >= 2**bits):
        raise ValueError(f"values must lie in [0, {2**bits}) to pack {bits} bits")
    order = list(order) if order is not None else list(range(pack))
    qt = q.movedim(dim, -1)
    runs = qt.reshape(*qt.shape[:-1], qt.shape[-1] // pack, pack)[..., order]
    shifts = torch.arange(pack, dtype=torch.int64, device=q.device) * bits
    words = (runs << shifts).sum(-1)
    return _to_int32(words).movedim(-1, dim).contiguous()


def unpack_int32(w: torch.Tensor, bits: int, dim: int, order: Sequence[int] | None = None) -> torch.Tensor:
    """Inverse of :func:`pack_int32`: int32 words -> int32 values in ``[0, 2**bits)``, ``dim``
    multiplied by the pack factor."""
    pack = check_bits(bits)
    if w.dtype != torch.int32:
        raise ValueError(f"packed tensors are int32, got {w.dtype}")
    shifts = torch.arange(pack, dtype=torch.int32, device=w.device) * bits
    wt = w.movedim(dim, -1)
    fields = (wt.unsqueeze(-1) >> shifts) & (2**bits - 1)  # [..., words, pack]
    if order is not None:
        inv = [0] * pack
        for t, c in enumerate(order):
            inv[c] = t
        fields = fields[..., inv]
    return fields.reshape(*wt.shape[:-1], wt.shape[-1] * pack).movedim(-1, dim).contiguous()


@dataclass
class PackedWeight:
    """A linear weight ``W [N, K]`` in the internal layout (see the module docstring).

    Attributes:
        qweight: int32 ``[K_pad // pack, N]``.
        scales: float ``[K_pad // group_size, N]``.
        zeros: uint8 ``[K_pad // group_size, N]`` or None for the symmetric ``2**(bits-1)``.
        perm: int32 ``[K]`` (internal row -> input feature) or None for the identity.
        bits: 4 or 8. group_size: rows per group in internal order (``K_pad`` when per channel).
        in_features: K. out_features: N.
    """

    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    perm: torch.Tensor | None
    bits: int
    group_size: int
    in_features: int
    out_features: int

    @property
    def pack(self) -> int:
        return 32 // self.bits

    @property
    def k_block(self) -> int:
        return self.pack * INTERLEAVE

    @property
    def k_padded(self) -> int:
        return self.qweight.shape[0] * self.pack


def k_block(bits: int) -> int:
    return check_bits(bits) * INTERLEAVE


def act_order_perm(g_idx: torch.Tensor, group_size: int, in_features: int) -> torch.Tensor | None:
    """The row permutation that makes GPTQ groups contiguous, or None when ``g_idx`` is trivial.

    Args:
        g_idx: int ``[K]``, the group of each input feature (GPTQ ``g_idx``).
        group_size: rows per group (``K`` for per-channel).
    Raises:
        ValueError: ``g_idx`` has the wrong length or its groups do not all hold ``group_size`` rows.
    """
    g_idx = g_idx.to(torch.int64).flatten()
    if g_idx.numel() != in_features:
        raise ValueError(f"g_idx has {g_idx.numel()} entries, expected in_features={in_features}")
    trivial = torch.arange(in_features, device=g_idx.device) // group_size
    if torch.equal(g_idx, trivial):
        return None
    counts = torch.bincount(g_idx, minlength=in_features // group_size)
    if counts.numel() != in_features // group_size or bool((counts != group_size).any()):
        raise ValueError(f"g_idx does not assign exactly {group_size} rows to each of the {in_features // group_size} groups")
    return torch.argsort(g_idx, stable=True).to(torch.int32)


def pack_internal(q_kn: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, bits: int,
                  group_size: int, perm: torch.Tensor | None = None) -> PackedWeight:
    """Build the internal layout from unpacked integers.

    Args:
        q_kn: int ``[K, N]``, unsigned values in ``[0, 2**bits)``, in natural input order.
        scales: float ``[K // group_size, N]`` (``[1, N]`` for per channel).
        zeros: int ``[K // group_size, N]`` unsigned zero points, or None for ``2**(bits-1)``.
        group_size: rows per group, or -1 for per channel.
        perm: int ``[K]`` from :func:`act_order_perm`, or None.
    Raises:
        ValueError: unsupported bits or group size, inconsistent shapes.
    """
    pack = check_bits(bits)
    K, N = q_kn.shape
    kb = pack * INTERLEAVE
    k_pad = -(-K // kb) * kb
    per_channel = group_size in (-1, 0) or group_size >= K
    if per_channel:
        g, n_groups = k_pad, 1
    else:
        g = group_size
        if g % INTERLEAVE or (kb % g and g % kb) or K % g:
            raise ValueError(f"group_size={g} unsupported for K={K}, bits={bits}: need a multiple of "
                             f"{INTERLEAVE} that divides or is divided by {kb}, and divides K")
        n_groups = K // g
    if tuple(scales.shape) != (n_groups, N):
        raise ValueError(f"scales shape {tuple(scales.shape)} != expected {(n_groups, N)}")
    if zeros is not None and tuple(zeros.shape) != (n_groups, N):
        raise ValueError(f"zeros shape {tuple(zeros.shape)} != expected {(n_groups, N)}")
    if zeros is not None and bool((zeros == 2 ** (bits - 1)).all()):
        zeros = None  # symmetric in disguise (GPTQ sym checkpoints store the midpoint)
    q = q_kn.to(torch.int64)
    if perm is not None:
        q = q[perm.long()]
    g_pad = k_pad // g
    if k_pad > K:
        q = torch.cat([q, q.new_zeros(k_pad - K, N)])
    words = q.reshape(k_pad // kb, pack, INTERLEAVE, N)  # [blocks, j, p, N]
    shifts = (torch.arange(pack, dtype=torch.int64, device=q.device) * bits).view(1, pack, 1, 1)
    qweight = _to_int32((words << shifts).sum(1)).reshape(k_pad // pack, N)
    sc = scales
    zp = zeros.to(torch.uint8) if zeros is not None else None
    if g_pad > n_groups:
        sc = torch.cat([sc, sc.new_zeros(g_pad - n_groups, N)])
        if zp is not None:
            zp = torch.cat([zp, zp.new_zeros(g_pad - n_groups, N)])
    return PackedWeight(qweight.contiguous(), sc.contiguous(), zp.contiguous() if zp is not None else None,
                        perm.to(torch.int32).contiguous() if perm is not None else None,
                        bits, g, K, N)


def unpack_internal(pw: PackedWeight) -> torch.Tensor:
    """int32 ``[K_pad, N]`` quantised values in internal row order."""
    pack = pw.pack
    w = pw.qweight.reshape(-1, 1, INTERLEAVE, pw.out_features)  # [blocks, 1, p, N]
    shifts = (torch.arange(pack, dtype=torch.int32, device=w.device) * pw.bits).view(1, pack, 1, 1)
    return ((w >> shifts) & (2**pw.bits - 1)).reshape(-1, pw.out_features)


def dequantize_internal(pw: PackedWeight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The dense weight ``W [N, K]`` in natural input order, computed in fp32 then cast to ``dtype``."""
    q = unpack_internal(pw).to(torch.float32)  # [K_pad, N]
    rows = torch.arange(q.shape[0], device=q.device) // pw.group_size
    s = pw.scales.to(torch.float32)[rows]
    z = pw.zeros.to(torch.float32)[rows] if pw.zeros is not None else float(2 ** (pw.bits - 1))
    w = ((q - z) * s)[: pw.in_features]  # [K, N], internal order
    if pw.perm is not None:
        w = torch.empty_like(w).index_copy_(0, pw.perm.long(), w)
    return w.t().to(dtype)
