"""Runs one scheduler step on the model: inputs, forward under the attention context, sampling.

A step is ``launch`` (enqueue the forward and the device sampling, start the copy of the sampled
ids to the host) then ``collect`` (wait for that copy, build the RunnerOutput); ``execute`` does
both. Between the two the engine may launch the next decode step, whose input ids are the
launched step's samples, read on the device (async scheduling).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from gfx906_llm.attention.metadata import AttentionMetadata, forward_context
from gfx906_llm.config import cdiv
from gfx906_llm.engine.request import Request
from gfx906_llm.engine.scheduler import SchedulerOutput
from gfx906_llm.loader.model_loader import LoadedModel
from gfx906_llm.platform import Platform
from gfx906_llm.worker.cuda_graph import DecodeGraphs, is_decode_step
from gfx906_llm.worker.inputs import build_step_inputs
from gfx906_llm.worker.sampler import PendingSample, Sampler

logger = logging.getLogger(__name__)

DEFAULT_CPU_KV_BYTES = 1 << 30
# step sizes (tokens) run once at start on GPUs: every GEMV row bucket (powers of 2 up to 64),
# each with and without Triton's "divisible by 16" specialisation, then prefill sizes
WARMUP_TOKENS = (2, 3, 5, 8, 9, 16, 17, 24, 32, 33, 47, 48, 64, 65, 100, 128, 129, 256, 257, 512, 513, 1024, 1025)


@dataclass
class RunnerOutput:
    """Per sampling request: the token, and logprob details when asked for."""

    sampled: dict[str, int] = field(default_factory=dict)
    logprob: dict[str, float] = field(default_factory=dict)
    rank: dict[str, int] = field(default_factory=dict)
    top: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


@dataclass
class PendingStep:
    """A launched step: ``sample.token_ids`` ``[S]`` (device) row i is ``sample_req_ids[i]``'s."""

    sample_req_ids: list[str]
    reqs: list[Request]
    sample: PendingSample | None  # None: no request samples in this step

    @property
    def sample_rows(self) -> dict[str, int]:
        return {rid: i for i, rid in enumerate(self.sample_req_ids)}


class ModelRunner:
    def __init__(self, loaded: LoadedModel, platform: Platform, block_size: int, seed: int = 0):
        self.loaded = loaded
        self.model = loaded.model
        self.cfg = loaded.model_config
        self.platform = platform
        self.device = torch.device(platform.device)
        self.block_size = block_size
        self.sampler = Sampler()
        self.generators: dict[str, torch.Generator] = {}
        self.kv_caches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.graphs: DecodeGraphs | None = None
        torch.manual_seed(seed)

    # ---- KV cache ------------------------------------------------------------------------------
    def kv_block_bytes(self) -> int:
        return self.block_size * self.cfg.kv_bytes_per_token(self.loaded.dtype)

    def profile_num_blocks(self, gpu_memory_utilization: float, kv_cache_memory_bytes: int | None,
                           max_num_batched_tokens: int, max_num_seqs: int, max_model_len: int,
                           reserve_bytes: int = 0) -> int:
        """Blocks that fit the budget: an explicit byte count, else on GPUs
        ``gpu_memory_utilization`` of the device's memory minus what is in use, an activation
        estimate for a full step and ``reserve_bytes`` (captured graphs), else 1 GiB on the CPU.
        Never more than all sequences can use."""
        if kv_cache_memory_bytes is not None:
            budget = kv_cache_memory_bytes
        elif self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            c = self.cfg
            elem = self.loaded.dtype.itemsize
            act = max_num_batched_tokens * elem * 4 * (
                4 * c.hidden_size + 2 * c.intermediate_size + (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim)
            act += max_num_seqs * c.vocab_size * 4 * 4
            budget = int(total * gpu_memory_utilization) - (total - free) - act - reserve_bytes
        else:
            budget = DEFAULT_CPU_KV_BYTES
        num = budget // self.kv_block_bytes()
        cap = cdiv(max_model_len, self.block_size) * max_num_seqs
        return int(max(0, min(num, cap)))

    def allocate_kv_cache(self, num_blocks: int) -> None:
        """One ``[num_blocks, block_size, num_kv_heads, head_dim]`` K and V cache per layer."""
        c = self.cfg
        shape = (num_blocks, self.block_size, c.num_key_value_heads, c.head_dim)
        self.kv_caches = []
        for attn in self.model.attention_layers():
            k = torch.zeros(shape, dtype=self.loaded.dtype, device=self.device)
            v = torch.zeros(shape, dtype=self.loaded.dtype, device=self.device)
            attn.bind_kv_cache(k, v, self.platform)
            self.kv_caches.append((k, v))
        logger.info("KV cache: %d blocks of %d tokens (%.1f MiB)", num_blocks, self.block_size,
                    num_blocks * self.kv_block_bytes() / 2**20)

    def capture_graphs(self, sizes: list[int], max_model_len: int, capture: bool | None = None) -> float:
        """Capture decode graphs for ``sizes`` (after ``allocate_kv_cache``); returns seconds.
        ``capture=False`` (default on the CPU) keeps the padded decode buffers but runs them
        eagerly (what async scheduling needs where there are no graphs).

        A capture that fails (an operation the platform's graphs do not support) leaves the
        engine eager, with a warning, rather than failing the start."""
        capture = self.device.type == "cuda" if capture is None else capture
        graphs = DecodeGraphs(self.model, self.device, sizes, max_model_len, self.block_size, capture=capture)
        try:
            dt = graphs.capture()
        except RuntimeError as e:  # torch's CUDA/HIP errors are RuntimeErrors
            torch.cuda.synchronize(self.device)  # a broken context raises here, and the start fails
            logger.warning("decode graph capture failed (%s); decode steps run eagerly", str(e).splitlines()[0])
            self.graphs = None
            return 0.0
        self.graphs = graphs
        return dt

    @torch.inference_mode()
    def warmup(self, max_num_batched_tokens: int, max_num_seqs: int, force: bool = False) -> float:
        """Run mixed-step shapes once (after ``allocate_kv_cache``) so that Triton compiles their
        kernel variants at start rather than in the middle of serving (a new variant takes
        seconds). Each step is one decode request plus a prefill chunk, ``T`` tokens in all, for
        ``T`` in ``WARMUP_TOKENS`` up to the token budget; then the sampled-rows head for 1 to
        ``max_num_seqs`` rows. Slots are -1: nothing is written to the KV cache. Returns seconds
        (0 on the CPU, which runs no Triton kernels, unless ``force``: tests)."""
        if self.device.type != "cuda" and not force:
            return 0.0
        t0 = time.perf_counter()
        dev = self.device
        sizes = sorted({t for t in WARMUP_TOKENS if t <= max_num_batched_tokens} | {max(2, max_num_batched_tokens)})
        hidden = None
        for T in sizes:
            ids = torch.zeros(T, dtype=torch.int64, device=dev)
            pos = torch.cat([torch.zeros(1, dtype=torch.int64, device=dev), torch.arange(T - 1, device=dev)])
            meta = AttentionMetadata(
                num_tokens=T, max_query_len=T - 1, max_seq_len=T - 1,
                query_start_loc=torch.tensor([0, 1, T], dtype=torch.int32, device=dev),
                seq_lens=torch.tensor([1, T - 1], dtype=torch.int32, device=dev),
                block_table=torch.zeros((2, cdiv(T, self.block_size)), dtype=torch.int32, device=dev),
                slot_mapping=torch.full((T,), -1, dtype=torch.int64, device=dev))
            with forward_context(meta):
                hidden = self.model(ids, pos)  # [T, d]
        if hidden is not None:
            rows = sorted({r for r in (1, 2, 3, 5, 8, 9, 16, 17, 32, 33, 47, 64, 65, 128, 129, 256)
                           if r <= min(max_num_seqs, hidden.shape[0])})
            for r in rows:
                self.model.compute_logits(hidden[:r])
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        dt = time.perf_counter() - t0
        logger.info("warm-up of %d step sizes (kernel compilation) in %.1f s", len(sizes), dt)
        return dt

    # ---- one step ------------------------------------------------------------------------------
    @property
    def max_decode_graph_rows(self) -> int:
        """The largest decode step DecodeGraphs runs (0 without them): async steps go through it."""
        return self.graphs.sizes[-1] if self.graphs is not None else 0

    def runs_via_graphs(self, sched: SchedulerOutput) -> bool:
        """True when ``sched`` is a decode step that DecodeGraphs can run (captured or eager)."""
        g = self.graphs
        return g is not None and is_decode_step(sched) and g.bucket(len(sched.scheduled)) is not None

    def execute(self, sched: SchedulerOutput) -> RunnerOutput:
        return self.collect(self.launch(sched))

    @torch.inference_mode()
    def launch(self, sched: SchedulerOutput, prev: PendingStep | None = None) -> PendingStep:
        """Enqueue ``sched``'s forward and sampling; nothing here waits for the device.

        ``prev``: the launched step whose samples are this step's input ids (rows with
        ``prev_row`` set; ``sched`` must then be a decode step that ``runs_via_graphs``)."""
        for rid in sched.finished_req_ids:
            self.generators.pop(rid, None)
        if sched.is_empty:
            return PendingStep([], [], None)
        via_graphs = self.runs_via_graphs(sched)
        greedy = None
        placeholders = sched.scheduled[0].prev_row is not None
        assert not placeholders or (via_graphs and prev is not None and prev.sample is not None)
        if via_graphs:
            if placeholders:  # input ids gathered on the device from the launched step's samples
                logits, sample_req_ids, greedy = self.graphs.run(sched, prev.sample.token_ids)  # [S, V] fp32
            else:
                logits, sample_req_ids, greedy = self.graphs.run(sched)  # [S, V] fp32, replayed
        else:
            inp = build_step_inputs(sched, self.block_size, self.device)
            with forward_context(inp.attn):
                hidden = self.model(inp.input_ids, inp.positions)  # [T, d]
            sample_req_ids = inp.sample_req_ids
            if not sample_req_ids:
                return PendingStep([], [], None)
            logits = self.model.compute_logits(hidden.index_select(0, inp.logits_indices))  # [S, V] fp32
        if not sample_req_ids:
            return PendingStep([], [], None)
        by_id = {s.request.request_id: s.request for s in sched.scheduled}
        reqs = [by_id[rid] for rid in sample_req_ids]
        for r in reqs:
            if r.params.seed is not None and r.request_id not in self.generators:
                self.generators[r.request_id] = Sampler.make_generator(r.params.seed + r.index, self.device)
        sample = self.sampler.launch(logits, reqs, self.generators, num_pending=1 if placeholders else 0,
                                     greedy_ids=greedy)
        return PendingStep(sample_req_ids, reqs, sample)

    def collect(self, step: PendingStep) -> RunnerOutput:
        """Wait for ``step``'s sampled ids on the host; the RunnerOutput of every sampling row."""
        out = RunnerOutput()
        if step.sample is None:
            return out
        so = step.sample.result()
        for i, rid in enumerate(step.sample_req_ids):
            out.sampled[rid] = so.token_ids[i]
            params = step.reqs[i].params
            if so.logprobs is not None and params.logprobs is not None:
                out.logprob[rid] = so.logprobs[i]
                out.rank[rid] = so.ranks[i]
                k = params.logprobs
                out.top[rid] = list(zip(so.top_ids[i][:k], so.top_logprobs[i][:k]))
        return out
