"""User knobs (EngineConfig) and what the model's config says (ModelConfig).

EngineConfig mirrors vLLM's engine arguments and CLI flag names (``--max-model-len``,
``--max-num-seqs``, ``--max-num-batched-tokens``, ``--gpu-memory-utilization``, ``--dtype``,
``--block-size``, ``--served-model-name``, ``--seed``, ``--device``).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field, fields
from typing import Any

import torch

logger = logging.getLogger(__name__)

_DTYPES = {"float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float32": torch.float32, "float": torch.float32, "fp32": torch.float32}


@dataclass
class EngineConfig:
    """Engine arguments. ``validate()`` (run by ``__post_init__``) raises ValueError naming the
    offending value and the accepted range."""

    model: str | None = None  # HF folder, .gguf file, or demo-model name; None: the SmolLM2 demo
    tokenizer: str | None = None
    dtype: str = "auto"  # auto | float16 | bfloat16 | float32
    device: str = "auto"  # auto | cpu | cuda
    max_model_len: int | None = None
    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None
    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    kv_cache_memory_bytes: int | None = None  # explicit KV budget; default on CPU: 1 GiB
    enable_chunked_prefill: bool = True
    seed: int = 0
    served_model_name: list[str] | None = None
    quantization: str | None = None  # None: the checkpoint's; "gguf": keep GGUF blocks; "none": dequantise GGUF
    enforce_eager: bool = False  # True: no CUDA/HIP graphs for decode steps
    cuda_graph_sizes: list[int] | None = None  # decode batch sizes to capture (None: 1, 2, 4, 8, 16, 24, ... 256)
    # launch decode step N+1 before step N's tokens reach the host (vLLM's --async-scheduling);
    # None: on where decode graphs are captured (CUDA/ROCm without enforce_eager), off on the CPU
    async_scheduling: bool | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.dtype not in ("auto", *_DTYPES):
            raise ValueError(f"--dtype {self.dtype!r}: expected auto, float16, bfloat16 or float32")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"--device {self.device!r}: expected auto, cpu or cuda")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"--max-model-len {self.max_model_len}: must be >= 1")
        if self.max_num_seqs < 1:
            raise ValueError(f"--max-num-seqs {self.max_num_seqs}: must be >= 1")
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < 1:
            raise ValueError(f"--max-num-batched-tokens {self.max_num_batched_tokens}: must be >= 1")
        if self.block_size not in (8, 16, 32, 64, 128):
            raise ValueError(f"--block-size {self.block_size}: expected one of 8, 16, 32, 64, 128")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"--gpu-memory-utilization {self.gpu_memory_utilization}: must be in (0, 1]")
        if self.quantization not in (None, "gguf", "none", "gptq", "awq", "compressed-tensors"):
            raise ValueError(f"--quantization {self.quantization!r}: expected gguf, none, gptq, awq or compressed-tensors")
        if self.cuda_graph_sizes is not None and (not self.cuda_graph_sizes or min(self.cuda_graph_sizes) < 1):
            raise ValueError(f"--cuda-graph-sizes {self.cuda_graph_sizes}: expected one or more sizes >= 1")
        if self.kv_cache_memory_bytes is not None and self.kv_cache_memory_bytes <= 0:
            raise ValueError(f"kv_cache_memory_bytes {self.kv_cache_memory_bytes}: must be > 0")

    @staticmethod
    def add_cli_args(parser: argparse.ArgumentParser) -> None:
        """Add the engine flags (vLLM's names) to ``parser``."""
        parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the model's)")
        parser.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"],
                            help="activation/weight dtype (auto: fp16 on GPUs, fp32 on the CPU)")
        parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
        parser.add_argument("--max-model-len", type=int, default=None, help="context length (default: the model's)")
        parser.add_argument("--max-num-seqs", type=int, default=256, help="requests in one step at most")
        parser.add_argument("--max-num-batched-tokens", type=int, default=None, help="tokens in one step at most")
        parser.add_argument("--block-size", type=int, default=16, help="tokens per KV-cache block")
        parser.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                            help="fraction of GPU memory the engine may take (weights + KV cache)")
        parser.add_argument("--kv-cache-memory-bytes", type=int, default=None,
                            help="KV-cache size in bytes (default on the CPU: 1 GiB)")
        parser.add_argument("--no-enable-chunked-prefill", dest="enable_chunked_prefill", action="store_false")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--served-model-name", nargs="+", default=None)
        parser.add_argument("--quantization", "-q", default=None,
                            help="GGUF files: 'gguf' keeps the weights in their blocks (default on GPUs), "
                                 "'none' dequantises them at load (default on the CPU)")
        parser.add_argument("--enforce-eager", action="store_true",
                            help="run decode steps eagerly instead of replaying CUDA/HIP graphs")
        parser.add_argument("--cuda-graph-sizes", type=int, nargs="+", default=None,
                            help="decode batch sizes captured as graphs (default 1 2 4 8 16 24 32 48 64 96 128 "
                                 "192 256, at most --max-num-seqs)")
        parser.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                            help="schedule and launch decode step N+1 while step N runs on the device, its "
                                 "sampled ids fed on the device (default: on with CUDA/HIP graphs, off "
                                 "with --enforce-eager and on the CPU)")

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace) -> "EngineConfig":
        kw = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        return cls(**kw)


def resolve_dtype(requested: str, checkpoint_dtype: torch.dtype | None, platform) -> torch.dtype:
    """The dtype to run in: fp16 on gfx906 and other GPUs by default, fp32 on the CPU.

    A bf16 checkpoint runs in fp16 where the hardware has no bf16 (gfx906), with a warning
    since values beyond fp16's range (65504) would overflow.
    """
    if requested != "auto":
        dt = _DTYPES[requested]
    elif platform.is_gpu:
        dt = checkpoint_dtype if checkpoint_dtype in (torch.float16, torch.bfloat16) else torch.float16
        if not platform.supports_bf16:
            dt = torch.float16
    else:
        dt = torch.float32
    if dt == torch.bfloat16 and not platform.supports_bf16:
        raise ValueError(f"--dtype bfloat16 is not supported on {platform.arch}; use float16")
    if checkpoint_dtype == torch.bfloat16 and dt == torch.float16:
        logger.warning("bf16 checkpoint cast to fp16 on %s: values above 65504 would overflow", platform.arch)
    return dt


def _get(cfg: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return v
    return default


@dataclass
class ModelConfig:
    """What the engine needs from a Hugging Face ``PretrainedConfig`` (transformers 4 or 5 schema).

    Attributes follow HF names; rope settings come from ``rope_parameters`` (transformers 5) or
    ``rope_theta`` + ``rope_scaling`` (transformers 4).
    """

    architecture: str
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool
    checkpoint_dtype: torch.dtype | None
    hf_config: Any = field(repr=False, default=None)

    @classmethod
    def from_hf(cls, hf: Any) -> "ModelConfig":
        """Build from a transformers config object.

        Raises:
            ValueError: missing required fields (names the field).
        """
        archs = _get(hf, "architectures") or []
        model_type = getattr(hf, "model_type", "")
        text = getattr(hf, "text_config", None)
        if text is not None and getattr(hf, "num_hidden_layers", None) is None:
            hf_text = text
        else:
            hf_text = hf
        heads = _get(hf_text, "num_attention_heads")
        hidden = _get(hf_text, "hidden_size")
        if heads is None or hidden is None:
            raise ValueError(f"config of model_type {model_type!r} lacks num_attention_heads/hidden_size")
        rope_params = _get(hf_text, "rope_parameters")
        rope_scaling = _get(hf_text, "rope_scaling")
        theta = _get(hf_text, "rope_theta")
        if isinstance(rope_params, dict):
            # transformers 5: {"rope_type": ..., "rope_theta": ..., <scaling fields>}; Gemma 3 nests per layer type
            if "full_attention" in rope_params and isinstance(rope_params["full_attention"], dict):
                rope_params = rope_params["full_attention"]
            theta = rope_params.get("rope_theta", theta)
            if rope_params.get("rope_type", "default") != "default":
                rope_scaling = dict(rope_params)
        if isinstance(rope_scaling, dict):
            rtype = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
            rope_scaling = None if rtype == "default" else {**rope_scaling, "rope_type": rtype}
        dtype = _get(hf, "dtype", "torch_dtype")
        if isinstance(dtype, str):
            dtype = _DTYPES.get(dtype)
        return cls(
            architecture=archs[0] if archs else model_type,
            model_type=model_type,
            hidden_size=hidden,
            num_hidden_layers=_get(hf_text, "num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=_get(hf_text, "num_key_value_heads", default=heads),
            head_dim=_get(hf_text, "head_dim", default=hidden // heads),
            intermediate_size=_get(hf_text, "intermediate_size"),
            vocab_size=_get(hf_text, "vocab_size"),
            rms_norm_eps=float(_get(hf_text, "rms_norm_eps", "layer_norm_eps", default=1e-6)),
            rope_theta=float(theta if theta is not None else 10000.0),
            rope_scaling=rope_scaling,
            max_position_embeddings=int(_get(hf_text, "max_position_embeddings", default=4096)),
            tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
            attention_bias=bool(_get(hf_text, "attention_bias", default=model_type == "qwen2")),
            checkpoint_dtype=dtype if isinstance(dtype, torch.dtype) else None,
            hf_config=hf_text,
        )

    def kv_bytes_per_token(self, dtype: torch.dtype) -> int:
        """Bytes of K and V per token over all layers."""
        elem = torch.tensor([], dtype=dtype).element_size()
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * elem


def default_max_num_batched_tokens(device_is_gpu: bool) -> int:
    """Default token budget per step (vLLM's 2048 on GPUs; smaller steps on the CPU keep
    decode latency low while a long prompt is prefilled in chunks)."""
    return 2048 if device_is_gpu else 512


def cdiv(a: int, b: int) -> int:
    return -(-a // b)

