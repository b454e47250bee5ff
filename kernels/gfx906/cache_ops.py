"""KV-cache write (vLLM ``reshape_and_cache``), Triton.

Token ``t`` of this step writes ``key[t]`` and ``value[t]`` (``[Hkv, D]`` each) into slot
``slot_mapping[t] = block_id * block_size + offset`` of the paged caches ``[num_blocks,
block_size, Hkv, D]``; negative slots (padding tokens) are skipped. Same semantics as
``gfx906_llm.kernels.reference.reshape_and_cache``; no host synchronisation.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# One program per token copies Hkv x D elements of K and of V (2 KiB each for Llama-3-8B): a
# pure copy, bound by bandwidth and launch cost. Each lane should move 16 bytes (8 fp16: one
# dwordx4 load and store), so the launcher picks num_warps = BLOCK_H * D / (8 * warp size),
# capped at max_warps: on gfx906 (wave64) a 8 x 128 head block is 2 warps [ISA: 10 VGPRs,
# dwordx4, 10 waves/SIMD]; Gemma's single 256-wide head is 1 warp with 4 fp16 per lane. BLOCK_H
# heads per loop step keep registers flat in the head count. Same rule on every arch, with the
# wave32 lane count on gfx1100 and NVIDIA.
CONFIGS: dict[str, dict] = {
    "gfx906": {"BLOCK_H": 8, "warp_size": 64, "max_warps": 4},
    "gfx90a": {"BLOCK_H": 8, "warp_size": 64, "max_warps": 4},
    "gfx942": {"BLOCK_H": 8, "warp_size": 64, "max_warps": 4},
    "gfx1100": {"BLOCK_H": 8, "warp_size": 32, "max_warps": 4},
    "cuda": {"BLOCK_H": 8, "warp_size": 32, "max_warps": 4},
    "default": {"BLOCK_H": 8, "warp_size": 32, "max_warps": 4},
}


def _num_warps(cfg: dict, block_h: int, head_pad: int) -> int:
    return max(1, min(cfg["max_warps"], block_h * head_pad // (8 * cfg["warp_size"])))


@triton.jit
def reshape_and_cache_kernel(
    key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
    stride_kt, stride_kh, stride_vt, stride_vh,
    stride_kcb, stride_kcs, stride_kch, stride_vcb, stride_vcs, stride_vch,
    NUM_KV_HEADS: tl.constexpr, HEAD: tl.constexpr, HEAD_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_H: tl.constexpr,
):
    t = tl.program_id(0)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    if slot < 0:
        return
    blk = slot // BLOCK_SIZE
    off = slot % BLOCK_SIZE
    offs_d = tl.arange(0, HEAD_PAD)
    src_k = key_ptr + t.to(tl.int64) * stride_kt
    src_v = value_ptr + t.to(tl.int64) * stride_vt
    dst_k = k_cache_ptr + blk * stride_kcb + off * stride_kcs
    dst_v = v_cache_ptr + blk * stride_vcb + off * stride_vcs
    for h0 in tl.static_range(0, NUM_KV_HEADS, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        mask = (offs_h < NUM_KV_HEADS)[:, None] & (offs_d < HEAD)[None, :]
        k = tl.load(src_k + offs_h[:, None] * stride_kh + offs_d[None, :], mask=mask)  # [BH, D]
        v = tl.load(src_v + offs_h[:, None] * stride_vh + offs_d[None, :], mask=mask)
        tl.store(dst_k + offs_h[:, None] * stride_kch + offs_d[None, :], k.to(k_cache_ptr.dtype.element_ty), mask=mask)
        tl.store(dst_v + offs_h[:, None] * stride_vch + offs_d[None, :], v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def reshape_and_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Write this step's keys and values into the paged cache, in place (Triton).

    Args:
        key, value: ``[T, Hkv, D]`` (any float dtype; cast to the cache dtype), last dim contiguous.
        k_cache, v_cache: ``[num_blocks, block_size, Hkv, D]``, last dim contiguous.
        slot_mapping: ``[T]`` int32/int64; negative entries are skipped. Rows of ``key`` past
            ``slot_mapping.shape[0]`` are ignored.

    Raises:
        ValueError: mismatched shapes or a non-contiguous head dimension.
    """
    if key.dim() != 3 or key.shape != value.shape or k_cache.shape != v_cache.shape or k_cache.dim() != 4:
        raise ValueError(f"expected key/value [T, Hkv, D] and caches [blocks, block_size, Hkv, D], got "
                         f"{tuple(key.shape)}, {tuple(value.shape)}, {tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    _, block_size, hkv, d = k_cache.shape
    if key.shape[1:] != (hkv, d) or slot_mapping.shape[0] > key.shape[0]:
        raise ValueError(f"key {tuple(key.shape)} does not match the cache heads/dim ({hkv}, {d}) or "
                         f"slot_mapping {tuple(slot_mapping.shape)}")
    if min(key.stride(-1), value.stride(-1), k_cache.stride(-1), v_cache.stride(-1)) != 1:
        raise ValueError("key, value and the caches need a contiguous last (head_dim) dimension")
    T = slot_mapping.shape[0]
    if T == 0:
        return
    from gfx906_llm.platform import detect_platform

    cfg = CONFIGS.get(detect_platform().config_key, CONFIGS["default"])
    block_h = min(cfg["BLOCK_H"], triton.next_power_of_2(hkv))
    head_pad = max(16, triton.next_power_of_2(d))
    reshape_and_cache_kernel[(T,)](
        key, value, k_cache, v_cache, slot_mapping,
        key.stride(0), key.stride(1), value.stride(0), value.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        NUM_KV_HEADS=hkv, HEAD=d, HEAD_PAD=head_pad, BLOCK_SIZE=block_size,
        BLOCK_H=block_h, num_warps=_num_warps(cfg, block_h, head_pad),
    )


def isa_specs() -> list[dict]:
    """Llama-3-8B (8 KV heads x 128) and Gemma-3 (1 x 256) cache writes, block size 16, per arch."""
    strides = ("stride_kt", "stride_kh", "stride_vt", "stride_vh", "stride_kcb", "stride_kcs", "stride_kch",
               "stride_vcb", "stride_vcs", "stride_vch")
    sig = {"key_ptr": "*fp16", "value_ptr": "*fp16", "k_cache_ptr": "*fp16", "v_cache_ptr": "*fp16",
           "slot_ptr": "*i64", **{s: "i32" for s in strides},
           **{c: "constexpr" for c in ("NUM_KV_HEADS", "HEAD", "HEAD_PAD", "BLOCK_SIZE", "BLOCK_H")}}
    return [
        {"name": f"reshape_and_cache[h{h}_d{d}]", "fn": reshape_and_cache_kernel, "signature": sig,
         "constexprs": {"NUM_KV_HEADS": h, "HEAD": d, "HEAD_PAD": d, "BLOCK_SIZE": 16,
                        "BLOCK_H": min(cfg["BLOCK_H"], h)},
         "num_warps": _num_warps(cfg, min(cfg["BLOCK_H"], h), d), "num_stages": 1, "arch": arch, "divisible_by_16": list(strides)}
        for arch, cfg in CONFIGS.items() if arch != "default" for h, d in ((8, 128), (1, 256))
    ]
