"""Group-wise integer weight quantisation: the quantiser shared by every tool, and round-to-nearest.

Conventions (the ones GPTQ, AWQ and compressed-tensors all reduce to): a linear weight ``W``
``[N, K]`` (out_features, in_features) is cut along K into groups of ``group_size`` columns
(``group_size == -1``: one group of K, i.e. per output channel). Each (row, group) has a scale
``s`` and an unsigned zero point ``z`` in ``[0, 2**bits - 1]``; the integer code is
``q = clamp(round(w / s) + z, 0, 2**bits - 1)`` and the value it stands for is ``s * (q - z)``.
Symmetric quantisation fixes ``z = 2**(bits-1)`` (8 for 4 bits), as GPTQ's ``Quantizer`` does
(``zero = (maxq + 1) / 2``), which is also compressed-tensors' signed ``[-8, 7]`` code shifted by 8.

Scales are rounded to fp16 before the codes are computed, so the checkpoint (fp16 scales)
reproduces exactly the weights the algorithms measured their error on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class QuantizedWeight:
    """One quantised linear layer, format-neutral.

    Attributes:
        qweight: uint8 ``[N, K]`` codes in ``[0, 2**bits - 1]``, original column order.
        scales: float32 ``[N, G]`` (fp16-representable), G = number of groups.
        zeros: int32 ``[N, G]`` unsigned zero points in ``[0, 2**bits - 1]``.
        g_idx: int32 ``[K]`` group of each input column (``k // group_size`` without act-order).
        bits, group_size (``-1`` = per channel), sym: the settings the codes were made with.
        bias: float ``[N]`` or None.
    """

    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    g_idx: torch.Tensor
    bits: int
    group_size: int
    sym: bool
    bias: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.qweight.shape)  # type: ignore[return-value]

    @property
    def desc_act(self) -> bool:
        """True when ``g_idx`` is not the trivial ``k // group_size`` (act-order was used)."""
        k = self.qweight.shape[1]
        gs = k if self.group_size == -1 else self.group_size
        return not torch.equal(self.g_idx.long(), torch.arange(k) // gs)

    def dequantize(self) -> torch.Tensor:
        """float32 ``[N, K]``: ``scales[:, g_idx] * (qweight - zeros[:, g_idx])``."""
        g = self.g_idx.long()
        return self.scales[:, g] * (self.qweight.float() - self.zeros[:, g].float())


def check_settings(bits: int, group_size: int) -> None:
    """ValueError unless bits is 2..8 and group_size is -1 or positive."""
    if bits not in (2, 3, 4, 5, 6, 7, 8):
        raise ValueError(f"bits={bits} not supported; accepted: 2..8")
    if group_size != -1 and group_size <= 0:
        raise ValueError(f"group_size={group_size} invalid; accepted: -1 (per channel) or > 0")


def num_groups(in_features: int, group_size: int) -> int:
    """``ceil(K / group_size)`` (1 for ``-1``): a K that is not a multiple of the group size ends
    in a shorter group, as AutoGPTQ's ``math.ceil(infeatures / group_size)`` buffers allow."""
    return 1 if group_size == -1 else -(-in_features // group_size)


def find_params(
    w: torch.Tensor, bits: int, sym: bool, include_zero: bool = True, min_zero: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero of each row of ``w`` ``[N, g]`` (one group) -> (scale ``[N]``, zero ``[N]``).

    ``include_zero=True`` widens the range to contain 0 (GPTQ's ``Quantizer.find_params``);
    False uses the plain min/max (AWQ's ``pseudo_quantize_tensor``), except for a group entirely
    above or below 0, whose range is widened to contain 0 so that its zero fits in ``[0, maxq]``.
    ``min_zero=1`` keeps the asymmetric zero >= 1 for GPTQ's v1 checkpoint format, which stores
    ``zero - 1`` in 4 bits and so cannot hold a zero of 0 (the range is then re-fitted as
    [0, xmax] with zero 1).
    Both scale and zero are float32; scales are rounded to fp16.
    """
    maxq = 2**bits - 1
    w = w.float()
    xmin, xmax = w.amin(dim=1), w.amax(dim=1)
    if include_zero:
        xmin, xmax = xmin.clamp(max=0), xmax.clamp(min=0)
    if sym:
        amax = torch.maximum(xmin.abs(), xmax.abs())
        amax = torch.where(amax == 0, torch.ones_like(amax), amax)
        scale = (2 * amax / maxq).half().float()
        scale = torch.where(scale == 0, torch.full_like(scale, 2**-24), scale)
        return scale, torch.full_like(scale, float((maxq + 1) // 2))
    same = xmin == xmax
    xmin = torch.where(same, xmin - 1, xmin)
    xmax = torch.where(same, xmax + 1, xmax)
    # a group entirely above or below 0 would need a zero point outside [0, maxq] (which the
    # formats cannot store, and clamping it shifts every code): widen its range to contain 0
    outside = (xmin > 0) | (xmax < 0)
    xmin, xmax = torch.where(outside, xmin.clamp(max=0), xmin), torch.where(outside, xmax.clamp(min=0), xmax)
    # the zero point is computed from the fp16-rounded scale the checkpoint stores: from the
    # unrounded one, the rounding could shift the covered range by up to maxq * 2**-11 steps
    scale = ((xmax - xmin) / maxq).clamp(min=1e-5).half().float()
    zero = torch.round(-xmin / scale).clamp(0, maxq)
    if min_zero > 0:
        low = zero < min_zero
        # refit: codes 0..maxq cover [-min_zero*s, (maxq-min_zero)*s] with s from xmax
        s_alt = (xmax.clamp(min=1e-8) / (maxq - min_zero)).clamp(min=1e-5)
        s_alt = torch.maximum(s_alt, (-xmin / min_zero).clamp(min=0)).half().float()
        scale = torch.where(low, s_alt, scale)
        zero = torch.where(low, torch.full_like(zero, float(min_zero)), zero)
    return scale, zero


def quantize_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes ``clamp(round(w / scale) + zero, 0, maxq)`` (float32, same shape as ``w``);
    ``scale``/``zero`` broadcast against ``w`` (``[N, 1]`` for one column group)."""
    return torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)


def quantize_rtn(
    weight: torch.Tensor,
    bits: int = 4,
    group_size: int = 128,
    sym: bool = True,
    include_zero: bool = False,
    min_zero: int = 0,
    bias: torch.Tensor | None = None,
) -> QuantizedWeight:
    """Round-to-nearest quantisation of ``weight`` ``[N, K]`` (any float dtype).

    A K that is not a multiple of ``group_size`` ends in a shorter group (see ``num_groups``).

    Raises:
        ValueError: unsupported bits or group_size.
    """
    n, k = weight.shape
    check_settings(bits, group_size)
    gs = k if group_size == -1 else group_size
    w = weight.float()
    full = (k // gs) * gs
    parts = [w[:, :full].reshape(-1, gs)] if full else []  # [N*G_full, g]
    if full < k:
        parts.append(w[:, full:])  # [N, K - full]: the short last group
    params = [find_params(p, bits, sym, include_zero, min_zero) for p in parts]
    scale = torch.cat([p[0].reshape(n, -1) for p in params], dim=1)  # [N, G]
    zero = torch.cat([p[1].reshape(n, -1) for p in params], dim=1)
    g_idx = torch.arange(k) // gs
    q = quantize_codes(w, scale[:, g_idx], zero[:, g_idx], bits)  # [N, K]
    return QuantizedWeight(
        qweight=q.to(torch.uint8),
        scales=scale,
        zeros=zero.to(torch.int32),
        g_idx=g_idx.to(torch.int32),
        bits=bits,
        group_size=group_size,
        sym=sym,
        bias=None if bias is None else bias.detach().float().clone(),
    )


def fake_quantize(weight: torch.Tensor, bits: int, group_size: int, sym: bool, include_zero: bool = False) -> torch.Tensor:
    """``quantize_rtn(...).dequantize()`` in ``weight``'s dtype: what RTN makes of ``weight``."""
    return quantize_rtn(weight, bits, group_size, sym, include_zero).dequantize().to(weight.dtype)
