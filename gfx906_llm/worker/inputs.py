"""Turn a SchedulerOutput (plain data) into the step's device tensors, once per step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gfx906_llm.attention.metadata import AttentionMetadata
from gfx906_llm.engine.scheduler import SchedulerOutput


@dataclass
class StepInputs:
    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    attn: AttentionMetadata
    logits_indices: torch.Tensor  # [S] int64: last token row of each request that samples
    sample_req_ids: list[str]  # the S requests, in row order


def build_step_inputs(sched: SchedulerOutput, block_size: int, device: torch.device) -> StepInputs:
    """Flatten the scheduled requests into one token batch (query_start_loc order = schedule order).

    Built on the host with numpy, then copied once per tensor (non-blocking from pinned memory
    would come with graph capture).
    """
    R = len(sched.scheduled)
    T = sched.total_num_scheduled_tokens
    input_ids = np.empty(T, dtype=np.int64)
    positions = np.empty(T, dtype=np.int64)
    slot_mapping = np.empty(T, dtype=np.int64)
    qsl = np.zeros(R + 1, dtype=np.int32)
    seq_lens = np.empty(R, dtype=np.int32)
    max_blocks = max((len(s.block_ids) for s in sched.scheduled), default=1)
    block_table = np.zeros((R, max_blocks), dtype=np.int32)
    logits_idx: list[int] = []
    sample_ids: list[str] = []
    t = 0
    for r, s in enumerate(sched.scheduled):
        n, start = s.num_scheduled_tokens, s.num_computed_tokens
        input_ids[t:t + n] = s.request.all_token_ids[start:start + n]
        pos = np.arange(start, start + n)
        positions[t:t + n] = pos
        blocks = np.asarray(s.block_ids, dtype=np.int64)
        slot_mapping[t:t + n] = blocks[pos // block_size] * block_size + pos % block_size
        block_table[r, :len(s.block_ids)] = s.block_ids
        seq_lens[r] = start + n
        t += n
        qsl[r + 1] = t
        if s.do_sample:
            logits_idx.append(t - 1)
            sample_ids.append(s.request.request_id)
    to = lambda a: torch.from_numpy(a).to(device, non_blocking=True)  # noqa: E731
    meta = AttentionMetadata(
        num_tokens=T,
        max_query_len=int(np.diff(qsl).max()) if R else 0,
        max_seq_len=int(seq_lens.max()) if R else 0,
        query_start_loc=to(qsl),
        seq_lens=to(seq_lens),
        block_table=to(block_table),
        slot_mapping=to(slot_mapping),
    )
    return StepInputs(to(input_ids), to(positions), meta, to(np.asarray(logits_idx, dtype=np.int64)), sample_ids)
