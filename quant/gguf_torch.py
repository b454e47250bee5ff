"""Plain-torch GGUF dequantisers: the CPU path of ``GGUFLinearMethod`` and the oracle for the
Triton kernels.

Every function takes raw GGUF bytes exactly as llama.cpp writes them (``uint8 [..., row_bytes]``,
rows of ``block_bytes``-sized blocks) and runs on any torch device. Results are bit-identical to
``gguf.quants.dequantize`` (gguf-py 0.19, ``gguf/quants.py``): the fp32 arithmetic is done in
the same order (e.g. Q4_K computes ``(d * sc) * q - (dmin * m)``, never a fused multiply-add).

Block layouts: llama.cpp ``ggml/src/ggml-common.h`` (``block_q4_0`` ... ``block_iq4_xs``) and
``dequantize_row_*`` in ``ggml-quants.c``. ``natural_codes`` unpacks the integer codes of a
block into the natural element order; the kernel layout in ``gfx906_llm.quant.gguf`` is packed
from those codes.
"""

from __future__ import annotations

import torch

from gfx906_llm.quant.gguf import GGML_QUANT_SIZES, QK_K, QT

#: IQ4_NL / IQ4_XS non-linear 4-bit grid (ggml-common.h ``kvalues_iq4nl``)
KVALUES_IQ4NL = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


def _f16(b: torch.Tensor) -> torch.Tensor:
    """``uint8 [n, 2]`` little-endian halves -> ``fp32 [n, 1]``."""
    return b.contiguous().view(torch.float16).to(torch.float32)


def _shifts(vals: tuple[int, ...], shape: tuple[int, ...], device) -> torch.Tensor:
    return torch.tensor(vals, dtype=torch.uint8, device=device).view(shape)


def _nibbles(qs: torch.Tensor, group: int) -> torch.Tensor:
    """``uint8 [nb, n]`` -> ``uint8 [nb, 2n]``: per ``group`` bytes, low nibbles then high nibbles."""
    nb = qs.shape[0]
    q = qs.reshape(nb, -1, 1, group) >> _shifts((0, 4), (1, 1, 2, 1), qs.device)
    return (q & 0x0F).reshape(nb, -1)


def _crumbs(qs: torch.Tensor, group: int) -> torch.Tensor:
    """2-bit codes: per ``group`` bytes, bits 0-1 of each byte, then bits 2-3, 4-5, 6-7."""
    nb = qs.shape[0]
    q = qs.reshape(nb, -1, 1, group) >> _shifts((0, 2, 4, 6), (1, 1, 4, 1), qs.device)
    return (q & 0x03).reshape(nb, -1)


def _bits(qh: torch.Tensor) -> torch.Tensor:
    """``uint8 [nb, 32]`` bit masks -> ``uint8 [nb, 256]``: element ``s*32+l`` is bit ``s`` of byte ``l``."""
    nb = qh.shape[0]
    q = qh.reshape(nb, 1, 32) >> _shifts(tuple(range(8)), (1, 8, 1), qh.device)
    return (q & 0x01).reshape(nb, -1)


def _u32_bits(qh: torch.Tensor) -> torch.Tensor:
    """``uint8 [nb, 4]`` (a little-endian uint32) -> ``uint8 [nb, 32]``: element i is bit i."""
    word = qh.contiguous().view(torch.int32).to(torch.int64)  # [nb, 1]
    sh = torch.arange(32, device=qh.device, dtype=torch.int64).view(1, 32)
    return ((word >> sh) & 1).to(torch.uint8)


def natural_codes(blocks: torch.Tensor, qtype: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Integer codes of each element, in natural (dequantised) order.

    Args:
        blocks: ``uint8 [nb, block_bytes]`` raw GGUF blocks of one type.
        qtype: a ``GGMLQuantizationType`` value among the block types in ``QT``.

    Returns:
        ``(low, high)``, both ``uint8 [nb, block_elems]``: ``low`` is the 4-bit code (Q4/Q5/
        Q4_K/Q5_K/Q6_K low bits, IQ4 index), the 2-bit code (Q2_K, Q3_K) or the int8 code's bit
        pattern (Q8_0); ``high`` is the extra bit(s) (Q5_0/Q5_1/Q5_K: 1 bit, Q3_K: the hmask
        bit, Q6_K: 2 bits) or None.

    Raises:
        ValueError: ``qtype`` is not a supported block type.
    """
    b = blocks
    if qtype in (QT.Q4_0, QT.IQ4_NL):
        return _nibbles(b[:, 2:18], 16), None
    if qtype == QT.Q4_1:
        return _nibbles(b[:, 4:20], 16), None
    if qtype == QT.Q5_0:
        return _nibbles(b[:, 6:22], 16), _u32_bits(b[:, 2:6])
    if qtype == QT.Q5_1:
        return _nibbles(b[:, 8:24], 16), _u32_bits(b[:, 4:8])
    if qtype == QT.Q8_0:
        return b[:, 2:34].contiguous(), None
    if qtype == QT.Q2_K:
        return _crumbs(b[:, 16:80], 32), None
    if qtype == QT.Q3_K:
        return _crumbs(b[:, 32:96], 32), _bits(b[:, 0:32])
    if qtype == QT.Q4_K:
        return _nibbles(b[:, 16:144], 32), None
    if qtype == QT.Q5_K:
        return _nibbles(b[:, 48:176], 32), _bits(b[:, 16:48])
    if qtype == QT.Q6_K:
        return _nibbles(b[:, 0:128], 64), _crumbs(b[:, 128:192], 32)
    if qtype == QT.IQ4_XS:
        return _nibbles(b[:, 8:136], 16), None
    raise ValueError(f"no block codes for GGML type {qtype!r}; supported: {sorted(int(t) for t in BLOCK_TYPES)}")


def k_scale_min(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K packed 6-bit scales ``uint8 [nb, 12]`` -> ``(sc, m)`` each ``uint8 [nb, 8]``
    (``get_scale_min_k4`` in ggml-quants.c)."""
    d, m, md = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
    sc = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc, mn


def q3k_scales(scales: torch.Tensor) -> torch.Tensor:
    """Q3_K packed 6-bit scales ``uint8 [nb, 12]`` -> signed scales ``fp32 [nb, 16]``."""
    nb = scales.shape[0]
    lo = (scales[:, 0:8].reshape(nb, 1, 8) >> _shifts((0, 4), (1, 2, 1), scales.device)).reshape(nb, 16)
    hi = (scales[:, 8:12].reshape(nb, 1, 4) >> _shifts((0, 2, 4, 6), (1, 4, 1), scales.device)).reshape(nb, 16)
    s = (lo & 0x0F) | ((hi & 0x03) << 4)
    return (s.to(torch.int8) - 32).to(torch.float32)


def iq4xs_scales(b: torch.Tensor) -> torch.Tensor:
    """IQ4_XS block -> signed sub-block scales ``fp32 [nb, 8]``."""
    sh = b[:, 2:4].contiguous().view(torch.int16).to(torch.int32) & 0xFFFF  # [nb, 1]
    sh = (sh >> torch.arange(0, 16, 2, device=b.device, dtype=torch.int32).view(1, 8)) & 3
    sl = (b[:, 4:8].reshape(-1, 4, 1) >> _shifts((0, 4), (1, 1, 2), b.device)).reshape(-1, 8) & 0x0F
    return ((sl.to(torch.int32) | (sh << 4)) - 32).to(torch.float32)


def dequantize_blocks(blocks: torch.Tensor, qtype: int) -> torch.Tensor:
    """``uint8 [nb, block_bytes]`` -> ``fp32 [nb, block_elems]`` (gguf-py's ``dequantize_blocks``)."""
    nb = blocks.shape[0]
    b = blocks
    low, high = natural_codes(b, qtype)
    f32 = torch.float32
    if qtype == QT.Q4_0:
        return _f16(b[:, 0:2]) * (low.to(torch.int8) - 8).to(f32)
    if qtype == QT.Q4_1:
        return (_f16(b[:, 0:2]) * low.to(f32)) + _f16(b[:, 2:4])
    if qtype == QT.Q5_0:
        return _f16(b[:, 0:2]) * ((low | (high << 4)).to(torch.int8) - 16).to(f32)
    if qtype == QT.Q5_1:
        return (_f16(b[:, 0:2]) * (low | (high << 4)).to(f32)) + _f16(b[:, 2:4])
    if qtype == QT.Q8_0:
        return low.view(torch.int8).to(f32) * _f16(b[:, 0:2])
    if qtype == QT.IQ4_NL:
        kv = torch.tensor(KVALUES_IQ4NL, dtype=f32, device=b.device)
        return _f16(b[:, 0:2]) * kv[low.long()]
    if qtype == QT.Q2_K:
        d, dmin = _f16(b[:, 80:82]), _f16(b[:, 82:84])
        sc = b[:, 0:16]
        dl = (d * (sc & 0x0F).to(f32)).reshape(nb, 16, 1)
        ml = (dmin * (sc >> 4).to(f32)).reshape(nb, 16, 1)
        return (dl * low.reshape(nb, 16, 16).to(f32) - ml).reshape(nb, QK_K)
    if qtype == QT.Q3_K:
        dl = (_f16(b[:, 108:110]) * q3k_scales(b[:, 96:108])).reshape(nb, 16, 1)
        q = (low.to(torch.int8) - ((high ^ 1) << 2).to(torch.int8)).to(f32)
        return (dl * q.reshape(nb, 16, 16)).reshape(nb, QK_K)
    if qtype in (QT.Q4_K, QT.Q5_K):
        sc, mn = k_scale_min(b[:, 4:16])
        d = (_f16(b[:, 0:2]) * sc.to(f32)).reshape(nb, 8, 1)
        dm = (_f16(b[:, 2:4]) * mn.to(f32)).reshape(nb, 8, 1)
        q = low if high is None else low | (high << 4)
        return (d * q.reshape(nb, 8, 32).to(f32) - dm).reshape(nb, QK_K)
    if qtype == QT.Q6_K:
        d = (_f16(b[:, 208:210]) * b[:, 192:208].contiguous().view(torch.int8).to(f32)).reshape(nb, 16, 1)
        q = ((low | (high << 4)).to(torch.int8) - 32).to(f32)
        return (d * q.reshape(nb, 16, 16)).reshape(nb, QK_K)
    if qtype == QT.IQ4_XS:
        dl = (_f16(b[:, 0:2]) * iq4xs_scales(b)).reshape(nb, 8, 1)
        kv = torch.tensor(KVALUES_IQ4NL, dtype=f32, device=b.device)
        return (dl * kv[low.long()].reshape(nb, 8, 32)).reshape(nb, QK_K)
    raise ValueError(f"GGML type {qtype!r} is not a block type this module dequantises")


BLOCK_TYPES = (QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0, QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K,
               QT.Q6_K, QT.IQ4_NL, QT.IQ4_XS)
FLOAT_TYPES = (QT.F32, QT.F16, QT.BF16)


def dequantize(raw: torch.Tensor, qtype: int) -> torch.Tensor:
    """Dequantise raw GGUF rows.

    Args:
        raw: ``uint8 [..., row_bytes]``; ``row_bytes`` a multiple of the type's block bytes.
        qtype: GGML type id (``gguf.GGMLQuantizationType`` or int): a block type in
            ``BLOCK_TYPES`` or F32/F16/BF16.

    Returns:
        ``fp32 [..., row_elems]`` on ``raw.device``.

    Raises:
        ValueError: unsupported type, non-uint8 input, or a row size that is not whole blocks.
    """
    qtype = int(qtype)
    if raw.dtype != torch.uint8:
        raise ValueError(f"raw GGUF data must be uint8, got {raw.dtype}")
    if qtype not in GGML_QUANT_SIZES:
        raise ValueError(f"unknown GGML type {qtype}; supported: {sorted(GGML_QUANT_SIZES)}")
    elems, nbytes = GGML_QUANT_SIZES[qtype]
    lead, row_bytes = tuple(raw.shape[:-1]), raw.shape[-1]
    if row_bytes % nbytes:
        raise ValueError(f"row of {row_bytes} bytes is not whole {qtype=} blocks of {nbytes} bytes")
    out_elems = row_bytes // nbytes * elems
    flat = raw.contiguous().reshape(-1, row_bytes)
    if qtype == QT.F32:
        out = flat.view(torch.float32).clone()
    elif qtype == QT.F16:
        out = flat.view(torch.float16).to(torch.float32)
    elif qtype == QT.BF16:
        out = flat.view(torch.bfloat16).to(torch.float32)
    elif qtype in BLOCK_TYPES:
        out = dequantize_blocks(flat.reshape(-1, nbytes), qtype).reshape(-1, out_elems)
    else:
        raise ValueError(f"GGML type {qtype} is not supported; supported: "
                         f"{sorted(int(t) for t in BLOCK_TYPES + FLOAT_TYPES)}")
    return out.reshape(*lead, out_elems)


# ----------------------------------------------------------------------------------------------
# Kernel layout ("planes"): the same bytes per weight as GGUF, split into aligned per-row planes.
#
# Every block type is re-described as 32-element groups g of a row; group g holds elements
# 32g .. 32g+31 and the kernels decode it as two halves (part 0: 32g+j, part 1: 32g+16+j, j<16):
#   q  nibble plane  uint8 [N, K/2]   byte 16g+j = code(32g+j) | code(32g+16+j) << 4
#                                     (Q4_0/Q4_1/Q5_x/IQ4_NL/IQ4_XS: GGUF's own qs order; Q4_K,
#                                     Q5_K and Q6_K's low bits are re-ordered into it)
#      int8 plane    int8  [N, K]     Q8_0 codes, natural order
#      2-bit words   int32 [N, K/16]  Q2_K, Q3_K low bits: word w, bits 2j..2j+1 = element 16w+j
#   h  1-bit words   int32 [N, K/32]  Q5_0/Q5_1 qh (unchanged), Q3_K hmask, Q5_K qh: bit i = element 32g+i
#      2-bit words   int32 [N, K/16]  Q6_K high bits
#   s  scale bytes   uint8 / int8     Q2_K [N, K/16] and Q6_K [N, K/16] (GGUF order); Q3_K, Q4_K,
#                                     Q5_K [N, K/256*12] and IQ4_XS [N, K/256*6] packed as in GGUF
#   d  fp16 [N, K/32] (32-element block types) or [N, K/256] (K-quants): d
#   m  fp16 like d: Q4_1/Q5_1 m, Q2_K/Q4_K/Q5_K dmin
# All planes of a tensor live in one flat uint8 buffer at 16-byte aligned offsets, so every row of
# a plane starts 16-byte aligned when K is a multiple of 256 (wide loads in the kernels).
# ----------------------------------------------------------------------------------------------

_PLANE_ORDER = ("q", "h", "s", "d", "m", "w")


class GGUFPlanes:
    """One GGUF tensor in the kernel layout (see the table above).

    Attributes:
        qtype: GGML type id; n, k: logical ``[n, k]`` shape; buffer: the flat uint8 storage;
        q, h, s, d, m: plane views (None where the type has none); w: ``[n, k]`` float weight
        for F32/F16/BF16 tensors; kv: IQ4 grid ``int8 [16]`` or None.
    """

    def __init__(self, qtype: int, n: int, k: int, buffer: torch.Tensor, specs: dict):
        self.qtype, self.n, self.k = int(qtype), n, k
        self.specs = specs  # name -> (byte offset, dtype, shape)
        self.rebase(buffer)
        self.kv = None
        if self.qtype in (QT.IQ4_NL, QT.IQ4_XS):
            self.kv = torch.tensor(KVALUES_IQ4NL, dtype=torch.int8, device=buffer.device)

    def rebase(self, buffer: torch.Tensor) -> None:
        """Point the plane views at ``buffer`` (a copy of the flat storage)."""
        self.buffer = buffer
        for name in _PLANE_ORDER:
            view = None
            if name in self.specs:
                off, dtype, shape = self.specs[name]
                nbytes = torch.Size(shape).numel() * dtype.itemsize
                view = buffer[off:off + nbytes].view(dtype).view(shape)
            setattr(self, name, view)
        if getattr(self, "kv", None) is not None:
            self.kv = self.kv.to(buffer.device)

    @property
    def nbytes(self) -> int:
        return self.buffer.numel()


def _words(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """``uint8 [N, K]`` codes of ``bits`` bits -> ``int32 [N, K*bits/32]`` (element i at bit bits*i)."""
    per = 32 // bits
    n, k = codes.shape
    c = codes.reshape(n, k // per, per).to(torch.int64)
    sh = torch.arange(per, device=codes.device, dtype=torch.int64) * bits
    w = (c << sh).sum(-1)
    w = torch.where(w >= 2**31, w - 2**32, w)
    return w.to(torch.int32)


def _nibble_plane(codes: torch.Tensor) -> torch.Tensor:
    n, k = codes.shape
    c = codes.reshape(n, k // 32, 2, 16)
    return (c[:, :, 0] | (c[:, :, 1] << 4)).reshape(n, k // 2)


def planes_tensors(raw: torch.Tensor, qtype: int, k: int) -> dict[str, torch.Tensor]:
    """Raw GGUF rows ``uint8 [N, row_bytes]`` -> the kernel planes (separate tensors)."""
    qtype = int(qtype)
    n = raw.shape[0]
    if qtype in FLOAT_TYPES:
        return {"w": dequantize(raw, qtype).to(torch.float16)}
    elems, nbytes = GGML_QUANT_SIZES[qtype]
    blocks = raw.contiguous().reshape(-1, nbytes)
    low, high = natural_codes(blocks, qtype)
    low, high = low.reshape(n, k), None if high is None else high.reshape(n, k)
    nb = k // elems

    def f16(a, b):  # bytes a:b of every block -> fp16 [n, nb]
        return blocks[:, a:b].contiguous().view(torch.float16).reshape(n, nb)

    def by(a, b):  # bytes a:b of every block -> uint8 [n, nb*(b-a)]
        return blocks[:, a:b].contiguous().reshape(n, nb * (b - a))

    p: dict[str, torch.Tensor] = {}
    if qtype == QT.Q8_0:
        p["q"] = low.view(torch.int8)
    elif qtype in (QT.Q2_K, QT.Q3_K):
        p["q"] = _words(low, 2)
    else:
        p["q"] = _nibble_plane(low)
    if qtype in (QT.Q5_0, QT.Q5_1, QT.Q3_K, QT.Q5_K):
        p["h"] = _words(high, 1)
    elif qtype == QT.Q6_K:
        p["h"] = _words(high, 2)
    if qtype in (QT.Q4_0, QT.Q8_0, QT.IQ4_NL, QT.Q5_0):
        p["d"] = f16(0, 2)
    elif qtype in (QT.Q4_1, QT.Q5_1):
        p["d"], p["m"] = f16(0, 2), f16(2, 4)
    elif qtype == QT.Q2_K:
        p["s"], p["d"], p["m"] = by(0, 16), f16(80, 82), f16(82, 84)
    elif qtype == QT.Q3_K:
        p["s"], p["d"] = by(96, 108), f16(108, 110)
    elif qtype in (QT.Q4_K, QT.Q5_K):
        p["s"], p["d"], p["m"] = by(4, 16), f16(0, 2), f16(2, 4)
    elif qtype == QT.Q6_K:
        p["s"], p["d"] = by(192, 208).view(torch.int8), f16(208, 210)
    elif qtype == QT.IQ4_XS:
        p["s"], p["d"] = by(2, 8), f16(0, 2)
    return p


def _align(n: int, a: int = 16) -> int:
    return (n + a - 1) // a * a


def pack_planes(raw: torch.Tensor, qtype: int, k: int, device=None) -> GGUFPlanes:
    """Repack raw GGUF rows ``uint8 [N, row_bytes]`` (logical ``[N, k]``) into one flat buffer.

    The buffer holds the same bytes per weight as the GGUF tensor plus at most 15 padding bytes
    per plane (F32/BF16 tensors are stored as fp16).
    """
    device = raw.device if device is None else device
    tens = planes_tensors(raw.to(device), qtype, k)
    offs, total = {}, 0
    for name in _PLANE_ORDER:
        if name in tens:
            offs[name] = total
            total = _align(total + tens[name].numel() * tens[name].element_size())
    buf = torch.empty(total, dtype=torch.uint8, device=device)
    specs = {}
    for name, off in offs.items():
        t = tens[name].contiguous()
        nbytes = t.numel() * t.element_size()
        buf[off:off + nbytes].copy_(t.view(-1).view(torch.uint8))
        specs[name] = (off, t.dtype, tuple(t.shape))
    return GGUFPlanes(qtype, raw.shape[0], k, buf, specs)
