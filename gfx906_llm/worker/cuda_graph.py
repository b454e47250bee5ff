"""Decode steps replayed from captured graphs (CUDA graphs on NVIDIA, HIP graphs on ROCm).

A decode step (every scheduled request adds exactly one token) launches hundreds of small
kernels; from Python each launch costs tens of microseconds, more than the kernel itself at
batch 1. ``DecodeGraphs`` captures ``compute_logits(model(input_ids, positions))`` and the
greedy argmax of the logits once per batch size in ``sizes`` (vLLM's ``cuda_graph_sizes``), over
one persistent input buffer, and a step then costs one host-to-device copy and one replay (the
sampler uses the in-graph argmax when every row is greedy and nothing edits the logits).

A batch of ``n`` requests runs in the smallest captured size ``b >= n``; the ``b - n`` padding
rows are one-token requests of context 1 whose slot is -1 (no KV write) and whose block table row
is block 0 (read, never written), so they cannot disturb real requests; their logits are dropped.
The attention kernels take every length from device memory and the graphs are captured with
``max_seq_len = max_model_len`` (the split-KV segment count is fixed at capture, and the kernel
splits each request's actual context among the segments), so one graph serves any context.

Without ``capture`` (the CPU, tests) ``run`` executes the same padded step eagerly.

Async scheduling: ``run(sched, prev_tokens)`` takes a step whose rows are placeholders (the
scheduler scheduled it before the previous step's tokens reached the host); each row's input id
is gathered on the device, inside the graph, from the previous step's sampled ids
(``self.sampled``, where the in-graph argmax left them, or a copy of ``prev_tokens`` there), at
the row given by ``ScheduledRequest.prev_row``. The pinned staging buffers are double-buffered,
and a buffer is rewritten only after the event recorded behind its last upload has completed, so
filling step N+1's inputs never races the copy of step N's.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
import torch

from gfx906_llm.attention.metadata import AttentionMetadata, forward_context
from gfx906_llm.config import cdiv
from gfx906_llm.engine.scheduler import SchedulerOutput
from gfx906_llm.kernels.gfx906.step_io import resolve_input_ids
from gfx906_llm.worker.sampler import argmax_rows

logger = logging.getLogger(__name__)

DEFAULT_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def capture_sizes(requested: list[int] | None, max_num_seqs: int) -> list[int]:
    """Batch sizes to capture: ``requested`` (vLLM's ``--cuda-graph-sizes``) or the defaults, at
    most ``max_num_seqs``, always including ``min(max_num_seqs, largest)`` so every batch fits.

    Raises:
        ValueError: a size < 1.
    """
    sizes = list(requested) if requested else list(DEFAULT_SIZES)
    if any(s < 1 for s in sizes):
        raise ValueError(f"--cuda-graph-sizes {sizes}: sizes must be >= 1")
    top = min(max(sizes), max_num_seqs)
    return sorted({s for s in sizes if s <= top} | {top})


def graph_memory_bytes(sizes: list[int], vocab_size: int) -> int:
    """Bytes to keep free for captured graphs: the fp32 logits every size keeps as its output,
    plus 256 MiB for the graphs' intermediate activations (0 without sizes)."""
    return sum(sizes) * vocab_size * 4 + (256 << 20) if sizes else 0


def is_decode_step(sched: SchedulerOutput) -> bool:
    """True when every scheduled request adds one token (what the graphs were captured for)."""
    return bool(sched.scheduled) and sched.total_num_scheduled_tokens == len(sched.scheduled)


class DecodeGraphs:
    """Captured decode steps for ``sizes`` batch sizes.

    Args:
        model: the model (``forward(input_ids [T] int64, positions [T] int64) -> [T, d]`` and
            ``compute_logits([S, d]) -> [S, V]`` fp32).
        device: the model's device.
        sizes: ascending batch sizes (``capture_sizes``).
        max_model_len, block_size: set the block table width, ``cdiv(max_model_len, block_size)``.
        capture: capture graphs (CUDA/ROCm devices); False runs the padded step eagerly.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, sizes: list[int], max_model_len: int,
                 block_size: int, capture: bool = True):
        self.model = model
        self.device = device
        self.sizes = sorted(sizes)
        self.max_model_len = max_model_len
        self.block_size = block_size
        self.capture_enabled = capture
        B = self.sizes[-1]
        self.max_blocks = cdiv(max_model_len, block_size)
        pin = device.type == "cuda"
        # persistent device inputs, one byte buffer so that a step uploads them in one copy: int64
        # [4, B] = input ids | positions | slot mapping | prev_rows (-1, or the row of the previous
        # step's samples that holds the input id: async steps); int32 seq_lens [B] and block
        # table [B, max_blocks] (last: a step copies only its b rows); query_start_loc is arange
        self._layout = _layout(B, self.max_blocks)
        self._inp = torch.zeros(self._layout[-1], dtype=torch.uint8, device=device)
        self.tok, self.seq_lens, self.block_table = _views(self._inp, B, self.max_blocks, self._layout)
        self.query_start_loc = torch.arange(B + 1, dtype=torch.int32, device=device)
        # [B] int64: greedy ids of the last replay (argmax of its logits, computed in the graph);
        # the next step's graph gathers its input ids from here (async scheduling)
        self.sampled = torch.zeros(B, dtype=torch.int64, device=device)
        # pinned host staging of the same layout, written with numpy, copied asynchronously; two
        # sets used in turn, each with the event recorded after its last upload
        self._staging = [self._new_staging(B, pin) for _ in range(2)]
        self._cur = 0
        self._use_staging(0)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}

    def _new_staging(self, B: int, pin: bool) -> dict:
        buf = torch.zeros(self._layout[-1], dtype=torch.uint8, pin_memory=pin)
        h_tok, h_seq, h_bt = _views(buf, B, self.max_blocks, self._layout)
        return {"buf": buf, "tok": h_tok, "seq": h_seq, "bt": h_bt, "event": None}

    def _use_staging(self, i: int) -> None:
        st = self._staging[i]
        if st["event"] is not None:
            st["event"].synchronize()  # its previous upload has been read by the device
        self._cur = i
        self.h_buf, self.h_tok, self.h_seq, self.h_bt = st["buf"], st["tok"], st["seq"], st["bt"]
        self.n_tok, self.n_seq, self.n_bt = self.h_tok.numpy(), self.h_seq.numpy(), self.h_bt.numpy()

    # ---- capture --------------------------------------------------------------------------------
    def _meta(self, b: int) -> AttentionMetadata:
        return AttentionMetadata(num_tokens=b, max_query_len=1, max_seq_len=self.max_model_len,
                                 query_start_loc=self.query_start_loc[:b + 1], seq_lens=self.seq_lens[:b],
                                 block_table=self.block_table[:b], slot_mapping=self.tok[2, :b])

    def _step_fn(self, b: int) -> Callable[[], torch.Tensor]:
        tok, pos, prev_rows = self.tok[0, :b], self.tok[1, :b], self.tok[3, :b]

        def step() -> torch.Tensor:
            ids = resolve_input_ids(tok, prev_rows, self.sampled)  # before this step overwrites sampled
            logits = self.model.compute_logits(self.model(ids, pos))  # [b, V] fp32
            self.sampled[:b].copy_(argmax_rows(logits))
            return logits
        return step

    @torch.inference_mode()
    def capture(self) -> float:
        """Capture every size, largest first, sharing one memory pool. Returns seconds taken.

        The padding inputs (slot -1, context 1, block 0) are what each capture runs on, so the
        warm-up runs also compile every Triton kernel the decode step uses."""
        if not self.capture_enabled:
            return 0.0
        t0 = time.perf_counter()
        self._write_padding(0, self.sizes[-1])
        self._upload(self.sizes[-1])
        pool = None
        for b in reversed(self.sizes):
            fn = self._step_fn(b)
            with forward_context(self._meta(b)):
                for _ in range(2):
                    fn()
                torch.cuda.synchronize(self.device)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=pool):
                    self.outputs[b] = fn()
            pool = g.pool()
            self.graphs[b] = g
        torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        logger.info("captured decode graphs for batch sizes %s in %.1f s", self.sizes, dt)
        return dt

    # ---- one step -------------------------------------------------------------------------------
    def bucket(self, n: int) -> int | None:
        """The smallest captured size that holds ``n`` requests, or None."""
        for b in self.sizes:
            if b >= n:
                return b
        return None

    def _write_padding(self, n: int, b: int) -> None:
        self.n_tok[0, n:b] = 0
        self.n_tok[1, n:b] = 0
        self.n_tok[2, n:b] = -1
        self.n_tok[3, n:b] = -1
        self.n_seq[n:b] = 1
        self.n_bt[n:b, 0] = 0

    def _upload(self, b: int) -> None:
        nbytes = self._layout[2] + 4 * b * self.max_blocks  # everything up to block-table row b
        self._inp[:nbytes].copy_(self.h_buf[:nbytes], non_blocking=True)
        if self.device.type == "cuda":
            ev = torch.cuda.Event()
            ev.record()
            self._staging[self._cur]["event"] = ev

    @torch.inference_mode()
    def run(self, sched: SchedulerOutput,
            prev_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
        """One decode step: ``(logits [S, V] fp32, request ids of the S rows that sample, greedy)``.

        ``greedy``: ``[S]`` int64 on the device, the argmax of each row's logits (computed in the
        graph), or None when some rows do not sample. It is a view of ``self.sampled``, which the
        next ``run`` overwrites: enqueue its readers before that.
        ``prev_tokens`` ``[S']`` int64 on the device: the previous step's sampled ids, required when
        the rows are placeholders (``ScheduledRequest.prev_row`` set: all rows or none); row i's
        input id is then ``prev_tokens[prev_row]``, gathered on the device inside the graph.
        The logits tensor is the graph's output buffer: read it (enqueue its readers) before the
        next ``run``.
        Raises:
            ValueError: a step that is not a decode step or is larger than the largest size.
        """
        n = len(sched.scheduled)
        b = self.bucket(n)
        if b is None or not is_decode_step(sched):
            raise ValueError(f"not a decode step of at most {self.sizes[-1]} requests")
        gather = sched.scheduled[0].prev_row is not None
        assert all((s.prev_row is not None) == gather for s in sched.scheduled)
        assert not gather or prev_tokens is not None
        self._use_staging(1 - self._cur)
        bs = self.block_size
        rows, sample_ids = [], []
        for i, s in enumerate(sched.scheduled):
            p = s.num_computed_tokens
            blocks = s.block_ids
            if gather:
                self.n_tok[0, i] = 0  # replaced on the device
                self.n_tok[3, i] = s.prev_row
            else:
                self.n_tok[0, i] = s.request.all_token_ids[p]
                self.n_tok[3, i] = -1
            self.n_tok[1, i] = p
            self.n_tok[2, i] = blocks[p // bs] * bs + p % bs
            self.n_seq[i] = p + 1
            self.n_bt[i, :len(blocks)] = blocks
            if s.do_sample:
                rows.append(i)
                sample_ids.append(s.request.request_id)
        self._write_padding(n, b)
        self._upload(b)
        if gather and prev_tokens.data_ptr() != self.sampled.data_ptr():  # sampled outside the graph
            self.sampled[:prev_tokens.numel()].copy_(prev_tokens)
        if b in self.graphs:
            self.graphs[b].replay()
            logits = self.outputs[b]
        else:
            with forward_context(self._meta(b)):
                logits = self._step_fn(b)()
        if len(rows) == n:
            return logits[:n], sample_ids, self.sampled[:n]
        return logits[torch.as_tensor(np.asarray(rows), device=logits.device)], sample_ids, None


def _layout(B: int, max_blocks: int) -> tuple[int, int, int, int]:
    """Byte offsets of the step inputs in one buffer: (tok, seq_lens, block_table, total)."""
    o_seq = 4 * B * 8
    o_bt = o_seq + cdiv(4 * B, 8) * 8
    return 0, o_seq, o_bt, o_bt + 4 * B * max_blocks


def _views(buf: torch.Tensor, B: int, max_blocks: int, layout: tuple[int, int, int, int]):
    """``(tok int64 [4, B], seq_lens int32 [B], block_table int32 [B, max_blocks])`` over ``buf`` (uint8)."""
    _, o_seq, o_bt, end = layout
    return (buf[:o_seq].view(torch.int64).view(4, B), buf[o_seq:o_seq + 4 * B].view(torch.int32),
            buf[o_bt:end].view(torch.int32).view(B, max_blocks))
