"""GGUF block decoding in Triton (shared by the GEMV/GEMM kernels) and a dequantise kernel.

The weights are in the kernel layout of ``gfx906_llm.quant.gguf_torch`` (``pack_planes``): the
GGUF bytes split into aligned per-row planes (nibbles / int8 codes / 2-bit words, high-bit
words, scale bytes, fp16 d and m). ``gguf_decode`` turns one 32-element group ``g`` of row ``r``
into its two halves ``w0`` (elements ``32g+j``) and ``w1`` (``32g+16+j``), ``j < 16``, in fp32 with
the same arithmetic as gguf-py's ``dequantize_blocks`` (``gguf/quants.py``) and llama.cpp's
``dequantize_row_*`` (``ggml-quants.c``). ``r``, ``grp`` and ``j`` are broadcastable int tensors,
so one decoder serves 3-D ``[rows, groups, 16]`` tiles (GEMV: every scale is loaded once per
group and the 16 nibble bytes of a group are one 128-bit load) and 2-D ``[K/2, rows]`` tiles
(GEMM: ``tl.dot`` operands).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gfx906_llm.platform import detect_platform

# GGML type ids (gfx906_llm.quant.gguf.QT)
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS = 10, 11, 12, 13, 14, 20, 23
KERNEL_TYPES = (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS)


@triton.jit
def _ex(v, EXPAND: tl.constexpr):
    """Per-group ``[a, b]`` value -> broadcastable against the element tile (axis EXPAND)."""
    if EXPAND == 2:
        return v[:, :, None]
    elif EXPAND == 1:
        return v[:, None, :]
    else:
        return v


@triton.jit
def gguf_decode(q_ptr, h_ptr, s_ptr, d_ptr, m_ptr, kv_ptr, q_rs, h_rs, s_rs, d_rs,
                r, grp, j, rs, gs, QT: tl.constexpr, EXPAND: tl.constexpr):
    """Decode halves ``(w0, w1)`` (fp32, shape of ``r + grp + j``) of 32-element groups.

    Per-group quantities (scales, mins, high-bit words) are computed once per group at the 2-D
    shape of ``rs + gs`` and then given a unit axis at ``EXPAND`` (2: ``[rows, groups, 1]``
    for the dequantise kernel, 1: ``[groups, 1, rows]`` for the GEMM; 0: none), so that every
    scale byte is loaded once per group and the element tile keeps one register layout.
    """
    f32: tl.constexpr = tl.float32
    if QT == 8:  # Q8_0: int8 codes * d
        qp = q_ptr + r * q_rs + grp * 32 + j
        d = _ex(tl.load(d_ptr + rs * d_rs + gs).to(f32), EXPAND)
        w0 = tl.load(qp).to(f32) * d
        w1 = tl.load(qp + 16).to(f32) * d
    elif QT == 10 or QT == 11:  # Q2_K / Q3_K: 2-bit words (one per 16 elements), per-16 scales
        wp = q_ptr + rs * q_rs + gs * 2
        c0 = (_ex(tl.load(wp), EXPAND) >> (2 * j)) & 3
        c1 = (_ex(tl.load(wp + 1), EXPAND) >> (2 * j)) & 3
        d = tl.load(d_ptr + rs * d_rs + gs // 8).to(f32)
        if QT == 10:
            dmin = tl.load(m_ptr + rs * d_rs + gs // 8).to(f32)
            sp = s_ptr + rs * s_rs + gs * 2
            sc0 = tl.load(sp).to(tl.int32)
            sc1 = tl.load(sp + 1).to(tl.int32)
            dl0 = _ex(d * (sc0 & 15).to(f32), EXPAND)
            dl1 = _ex(d * (sc1 & 15).to(f32), EXPAND)
            ml0 = _ex(dmin * (sc0 >> 4).to(f32), EXPAND)
            ml1 = _ex(dmin * (sc1 >> 4).to(f32), EXPAND)
            w0 = dl0 * c0.to(f32) - ml0
            w1 = dl1 * c1.to(f32) - ml1
        else:
            hw = _ex(tl.load(h_ptr + rs * h_rs + gs), EXPAND)
            q0 = c0 - 4 * (1 - ((hw >> j) & 1))
            q1 = c1 - 4 * (1 - ((hw >> (j + 16)) & 1))
            sb = s_ptr + rs * s_rs + (gs // 8) * 12
            t0 = (gs % 8) * 2
            t1 = t0 + 1
            l0 = (tl.load(sb + t0 % 8).to(tl.int32) >> (4 * (t0 // 8))) & 15
            l1 = (tl.load(sb + t1 % 8).to(tl.int32) >> (4 * (t1 // 8))) & 15
            g0 = (tl.load(sb + 8 + t0 % 4).to(tl.int32) >> (2 * (t0 // 4))) & 3
            g1 = (tl.load(sb + 8 + t1 % 4).to(tl.int32) >> (2 * (t1 // 4))) & 3
            w0 = _ex(d * ((l0 | (g0 << 4)) - 32).to(f32), EXPAND) * q0.to(f32)
            w1 = _ex(d * ((l1 | (g1 << 4)) - 32).to(f32), EXPAND) * q1.to(f32)
    else:  # nibble plane types
        b = tl.load(q_ptr + r * q_rs + grp * 16 + j).to(tl.int32)
        lo = b & 15
        hi = b >> 4
        if QT == 6 or QT == 7 or QT == 13:  # one high bit per element
            hw = _ex(tl.load(h_ptr + rs * h_rs + gs), EXPAND)
            lo = lo | (((hw >> j) & 1) << 4)
            hi = hi | (((hw >> (j + 16)) & 1) << 4)
        if QT == 2 or QT == 3 or QT == 6 or QT == 7 or QT == 20:  # d (and m) per 32
            d = _ex(tl.load(d_ptr + rs * d_rs + gs).to(f32), EXPAND)
            if QT == 2:
                w0 = d * (lo - 8).to(f32)
                w1 = d * (hi - 8).to(f32)
            elif QT == 6:
                w0 = d * (lo - 16).to(f32)
                w1 = d * (hi - 16).to(f32)
            elif QT == 20:
                w0 = d * tl.load(kv_ptr + lo).to(f32)
                w1 = d * tl.load(kv_ptr + hi).to(f32)
            else:
                m = _ex(tl.load(m_ptr + rs * d_rs + gs).to(f32), EXPAND)
                w0 = d * lo.to(f32) + m
                w1 = d * hi.to(f32) + m
        elif QT == 12 or QT == 13:  # Q4_K / Q5_K: packed 6-bit scale and min per 32
            sb = s_ptr + rs * s_rs + (gs // 8) * 12
            t = gs % 8
            a = tl.load(sb + t).to(tl.int32)
            bb = tl.load(sb + t + 4).to(tl.int32)
            c = tl.load(sb + tl.where(t >= 4, t - 4, t)).to(tl.int32)
            sc = tl.where(t < 4, a & 63, (bb & 15) | ((c >> 2) & 0x30))
            mn = tl.where(t < 4, bb & 63, (bb >> 4) | ((a >> 2) & 0x30))
            dd = _ex(tl.load(d_ptr + rs * d_rs + gs // 8).to(f32) * sc.to(f32), EXPAND)
            dm = _ex(tl.load(m_ptr + rs * d_rs + gs // 8).to(f32) * mn.to(f32), EXPAND)
            w0 = dd * lo.to(f32) - dm
            w1 = dd * hi.to(f32) - dm
        elif QT == 14:  # Q6_K: + 2 high bits (one word per 16 elements), int8 scale per 16
            hp = h_ptr + rs * h_rs + gs * 2
            q0 = (lo | (((_ex(tl.load(hp), EXPAND) >> (2 * j)) & 3) << 4)) - 32
            q1 = (hi | (((_ex(tl.load(hp + 1), EXPAND) >> (2 * j)) & 3) << 4)) - 32
            d = tl.load(d_ptr + rs * d_rs + gs // 8).to(f32)
            sp = s_ptr + rs * s_rs + gs * 2
            w0 = _ex(d * tl.load(sp).to(f32), EXPAND) * q0.to(f32)
            w1 = _ex(d * tl.load(sp + 1).to(f32), EXPAND) * q1.to(f32)
        else:  # IQ4_XS (23): 6-bit scale per 32, non-linear grid
            sb = s_ptr + rs * s_rs + (gs // 8) * 6
            t = gs % 8
            sh = (tl.load(sb + t // 4).to(tl.int32) >> (2 * (t % 4))) & 3
            sl = (tl.load(sb + 2 + t // 2).to(tl.int32) >> (4 * (t % 2))) & 15
            dl = _ex(tl.load(d_ptr + rs * d_rs + gs // 8).to(f32) * ((sl | (sh << 4)) - 32).to(f32), EXPAND)
            w0 = dl * tl.load(kv_ptr + lo).to(f32)
            w1 = dl * tl.load(kv_ptr + hi).to(f32)
    return w0, w1


def plane_args(p) -> tuple:
    """Kernel pointer/stride arguments of a ``GGUFPlanes`` (absent planes alias ``q``)."""
    q = p.q
    h = p.h if p.h is not None else q
    s = p.s if p.s is not None else q
    d = p.d
    m = p.m if p.m is not None else d
    kv = p.kv if p.kv is not None else q
    return (q, h, s, d, m, kv, q.stride(0), h.stride(0), s.stride(0), d.stride(0))


def check_planes(p) -> None:
    """ValueError unless ``p`` is a block-quantised GGUFPlanes the kernels handle."""
    if p.qtype not in KERNEL_TYPES:
        raise ValueError(f"GGML type {p.qtype} has no Triton kernel; supported: {KERNEL_TYPES}")
    if p.k % 32:
        raise ValueError(f"in_features {p.k} is not a multiple of 32")


@triton.jit
def _dequant_kernel(out_ptr, rows_ptr, q_ptr, h_ptr, s_ptr, d_ptr, m_ptr, kv_ptr,
                    q_rs, h_rs, s_rs, d_rs, n_out, n_src, G, stride_o,
                    QT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr,
                    HAS_ROWS: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_g = tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN] output rows
    rmask = rn < n_out
    if HAS_ROWS:
        src = tl.load(rows_ptr + rn, mask=rmask, other=0).to(tl.int64)
    else:
        src = tl.minimum(rn, n_src - 1)
    grp = pid_g * BLOCK_G + tl.arange(0, BLOCK_G)  # [BG]
    gmask = grp < G
    j = tl.arange(0, 16)
    gc = tl.minimum(grp, G - 1)
    w0, w1 = gguf_decode(q_ptr, h_ptr, s_ptr, d_ptr, m_ptr, kv_ptr, q_rs, h_rs, s_rs, d_rs,
                         src[:, None, None], gc[None, :, None], j[None, None, :],
                         src[:, None], gc[None, :], QT, 2)  # [BN, BG, 16] x2
    o = out_ptr + rn.to(tl.int64)[:, None, None] * stride_o + grp[None, :, None] * 32 + j[None, None, :]
    mask = rmask[:, None, None] & gmask[None, :, None]
    tl.store(o, w0.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(o + 16, w1.to(out_ptr.dtype.element_ty), mask=mask)


# Dequantisation is a one-off (load-time checks, embedding rows): a plain streaming kernel.
# gfx906: 4 wave64 warps = 256 lanes over a [4, 16, 16] tile: one group-half per lane, the
# 16 nibble bytes of a group are one global_load_dwordx4. Other arches: the same tile.
CONFIGS = {
    key: {"BLOCK_N": 4, "BLOCK_G": 16, "num_warps": 4, "num_stages": 1}
    for key in ("gfx906", "gfx90a", "gfx942", "gfx1100", "cuda", "default")
}


def gguf_dequantize(planes, rows: torch.Tensor | None = None, dtype: torch.dtype = torch.float32,
                    check_rows: bool = True) -> torch.Tensor:
    """Dequantise a GGUF tensor (or only ``rows`` of it) with the Triton kernel.

    Args:
        planes: ``GGUFPlanes`` (kernel layout) of a block type in ``KERNEL_TYPES``.
        rows: optional ``[T]`` integer row indices (e.g. token ids for an embedding).
        dtype: output dtype (fp32 gives values bit-identical to gguf-py).
        check_rows: check that ``rows`` lie in ``[0, n)`` (reads them back: a host sync, not
            allowed in graph capture); the engine's embedding lookup passes False, its token ids
            being checked when requests are added.

    Returns:
        ``[T or n, k]`` tensor of ``dtype`` on the planes' device.

    Raises:
        ValueError: ``rows`` outside ``[0, n)`` (with ``check_rows``).
    """
    check_planes(planes)
    cfg = CONFIGS.get(detect_platform().config_key, CONFIGS["default"])
    n_out = planes.n if rows is None else rows.numel()
    out = torch.empty(n_out, planes.k, dtype=dtype, device=planes.q.device)
    if n_out == 0:
        return out
    rows_t = out if rows is None else rows.reshape(-1).to(device=out.device, dtype=torch.int64)
    if rows is not None and check_rows and (int(rows_t.min()) < 0 or int(rows_t.max()) >= planes.n):
        raise ValueError(f"rows must lie in [0, {planes.n})")
    G = planes.k // 32
    grid = (triton.cdiv(n_out, cfg["BLOCK_N"]), triton.cdiv(G, cfg["BLOCK_G"]))
    _dequant_kernel[grid](out, rows_t, *plane_args(planes), n_out, planes.n, G, out.stride(0),
                          QT=planes.qtype, BLOCK_N=cfg["BLOCK_N"], BLOCK_G=cfg["BLOCK_G"],
                          HAS_ROWS=rows is not None, num_warps=cfg["num_warps"],
                          num_stages=cfg["num_stages"], enable_fp_fusion=False)
    return out


_PTR = {"q": "*u8", "h": "*i32", "s": "*u8", "d": "*fp16", "m": "*fp16", "kv": "*i8"}


def plane_signature(qtype: int) -> dict:
    """Triton signature entries for the plane pointers/strides of ``qtype``."""
    q = "*i8" if qtype == Q8_0 else "*i32" if qtype in (Q2_K, Q3_K) else "*u8"
    s = "*i8" if qtype == Q6_K else "*u8"
    sig = {"q_ptr": q, "h_ptr": "*i32", "s_ptr": s, "d_ptr": "*fp16", "m_ptr": "*fp16", "kv_ptr": "*i8"}
    sig.update({n: "i32" for n in ("q_rs", "h_rs", "s_rs", "d_rs")})
    return sig


#: arguments that real launches see 16-divisible (plane buffers are 16-byte aligned; K % 256 == 0)
PLANE_DIV16 = ["q_ptr", "h_ptr", "s_ptr", "d_ptr", "m_ptr", "kv_ptr", "q_rs"]


def isa_specs() -> list[dict]:
    specs = []
    for arch, cfg in CONFIGS.items():
        for qt in (Q4_0, Q4_K, Q6_K, Q8_0):
            sig = {"out_ptr": "*fp32", "rows_ptr": "*i64", **plane_signature(qt),
                   "n_out": "i32", "n_src": "i32", "G": "i32", "stride_o": "i32",
                   "QT": "constexpr", "BLOCK_N": "constexpr", "BLOCK_G": "constexpr",
                   "HAS_ROWS": "constexpr"}
            specs.append({"name": f"gguf_dequant_qt{qt}", "fn": _dequant_kernel, "signature": sig,
                          "constexprs": {"QT": qt, "BLOCK_N": cfg["BLOCK_N"], "BLOCK_G": cfg["BLOCK_G"],
                                         "HAS_ROWS": False},
                          "num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"], "arch": arch,
                          "divisible_by_16": ["out_ptr", "rows_ptr", *PLANE_DIV16, "stride_o"]})
    return specs
