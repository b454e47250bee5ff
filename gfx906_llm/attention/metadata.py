"""Per-step attention metadata and the forward context that carries it to every layer."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch


@dataclass(slots=True)
class AttentionMetadata:
    """T tokens in the step, R requests; int32 tensors on the model's device.

    Attributes:
        num_tokens: T (tokens actually scheduled; trailing padding rows may follow).
        max_query_len, max_seq_len: host-known maxima (no device sync needed).
        query_start_loc: ``[R + 1]`` cumulative query lengths.
        seq_lens: ``[R]`` KV lengths after this step (context + query).
        block_table: ``[R, max_blocks_per_seq]`` block ids (unused entries 0).
        slot_mapping: ``[T]`` ``block_id * block_size + offset`` for each new token; -1 = padding.
    """

    num_tokens: int
    max_query_len: int
    max_seq_len: int
    query_start_loc: torch.Tensor
    seq_lens: torch.Tensor
    block_table: torch.Tensor
    slot_mapping: torch.Tensor


_CURRENT: AttentionMetadata | None = None


@contextlib.contextmanager
def forward_context(meta: AttentionMetadata) -> Iterator[None]:
    """Make ``meta`` visible to the attention layers for one forward pass."""
    global _CURRENT
    prev, _CURRENT = _CURRENT, meta
    try:
        yield
    finally:
        _CURRENT = prev


def get_attention_metadata() -> AttentionMetadata:
    if _CURRENT is None:
        raise RuntimeError("attention called outside forward_context()")
    return _CURRENT
