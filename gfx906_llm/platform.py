"""The one place that knows architecture names: detection, capabilities, and the kernel table.

Detection is lazy and cached (nothing runs at import time). Order:
    1. ``GFX906_LLM_ARCH`` environment override (``gfx906``, ``gfx90a``, ``gfx942``, ``gfx1100``,
       ``cuda``, ``cpu``, or any other ``gfx*`` name);
    2. ROCm's KFD topology in sysfs (``/sys/class/kfd/kfd/topology/nodes/*/properties``,
       ``gfx_target_version`` such as ``90006`` for gfx906), read without initialising a GPU;
    3. torch: ``torch.cuda.get_device_properties(0).gcnArchName`` on ROCm builds, the compute
       capability on CUDA builds;
    4. otherwise the CPU.
"""

from __future__ import annotations

import functools
import glob
import importlib
import logging
import os
import re
from dataclasses import dataclass
from typing import Callable

import torch

logger = logging.getLogger(__name__)

#: arch families that have their own launch settings in each kernel's CONFIGS table
KNOWN_ARCHES = ("gfx906", "gfx90a", "gfx942", "gfx1100")


@dataclass(frozen=True)
class Platform:
    """What the engine runs on.

    Attributes:
        kind: ``"rocm"``, ``"cuda"`` or ``"cpu"``.
        arch: ``"gfx906"``, ``"gfx90a"``, ``"gfx942"``, ``"gfx1100"``, another ``"gfx*"``, ``"sm_90"``
            style for NVIDIA, or ``"cpu"``.
        config_key: the key for kernel CONFIGS tables: one of KNOWN_ARCHES, ``"cuda"`` or
            ``"default"``.
        device: torch device string (ROCm and CUDA both appear as ``"cuda"`` to torch).
        reason: how the platform was detected, for ``gfx906-llm env``.
    """

    kind: str
    arch: str
    config_key: str
    device: str
    reason: str
    has_matrix_cores: bool
    supports_bf16: bool
    warp_size: int

    @property
    def is_gpu(self) -> bool:
        return self.kind in ("rocm", "cuda")

    @property
    def default_dtype(self) -> torch.dtype:
        """fp16 on GPUs (gfx906 has no bf16 arithmetic), fp32 on the CPU."""
        return torch.float16 if self.is_gpu else torch.float32


_GFX_FROM_VERSION = {90006: "gfx906", 90010: "gfx90a", 90402: "gfx942", 110000: "gfx1100"}


def _gfx_from_target_version(v: int) -> str:
    if v in _GFX_FROM_VERSION:
        return _GFX_FROM_VERSION[v]
    major, minor, step = v // 10000, (v // 100) % 100, v % 100
    return f"gfx{major}{minor:x}{step:x}"


def _rocm_sysfs_arch() -> str | None:
    for path in sorted(glob.glob("/sys/class/kfd/kfd/topology/nodes/*/properties")):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        m = re.search(r"gfx_target_version\s+(\d+)", text)
        if m and int(m.group(1)) > 0:
            return _gfx_from_target_version(int(m.group(1)))
    return None


def _make(arch: str, reason: str) -> Platform:
    arch = arch.lower()
    if arch == "cpu":
        return Platform("cpu", "cpu", "default", "cpu", reason, False, True, 1)
    if arch == "cuda" or arch.startswith("sm_"):
        return Platform("cuda", arch, "cuda", "cuda", reason, True, True, 32)
    if arch.startswith("gfx"):
        base = arch.split(":")[0]
        key = base if base in KNOWN_ARCHES else "default"
        wave = 32 if base.startswith(("gfx10", "gfx11", "gfx12")) else 64
        matrix = base.startswith(("gfx908", "gfx90a", "gfx94", "gfx95")) or base.startswith(("gfx11", "gfx12"))
        bf16 = base != "gfx906"
        return Platform("rocm", base, key, "cuda", reason, matrix, bf16, wave)
    raise ValueError(f"GFX906_LLM_ARCH={arch!r} is not an arch name (gfx906, gfx90a, gfx942, gfx1100, cuda, cpu)")


@functools.lru_cache(maxsize=None)
def detect_platform(device: str | None = None) -> Platform:
    """Detect (once) what to run on.

    Args:
        device: ``"cpu"`` forces the CPU; ``"cuda"``/``"cuda:N"`` requires a GPU; None auto-detects.

    Raises:
        ValueError: an unknown override or an unavailable requested device.
    """
    if device is not None and device.startswith("cpu"):
        return _make("cpu", "--device cpu")
    override = os.environ.get("GFX906_LLM_ARCH")
    if override:
        return _make(override, "GFX906_LLM_ARCH environment override")
    gpu = torch.cuda.is_available()
    if device is not None and device.startswith("cuda") and not gpu:
        raise ValueError(f"--device {device} requested but torch sees no GPU (torch {torch.__version__})")
    if gpu and torch.version.hip:
        sysfs = _rocm_sysfs_arch()
        if sysfs:
            return _make(sysfs, "ROCm KFD topology (sysfs gfx_target_version)")
        name = torch.cuda.get_device_properties(0).gcnArchName
        return _make(name, f"torch ROCm gcnArchName {name}")
    if gpu:
        major, minor = torch.cuda.get_device_capability(0)
        return _make(f"sm_{major}{minor}", f"torch CUDA compute capability {major}.{minor}")
    return _make("cpu", "no GPU visible to torch")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


# op name -> (module with the Triton launcher, function name); the torch path is the function of
# the same name in kernels/reference.py
_TRITON_OPS: dict[str, tuple[str, str]] = {}


def register_triton_op(op: str, module: str, fn: str) -> None:
    """Declare a Triton implementation of ``op`` (imported only when first asked for on a GPU)."""
    _TRITON_OPS[op] = (module, fn)


register_triton_op("paged_attention", "gfx906_llm.kernels.gfx906.attention", "unified_attention")
register_triton_op("reshape_and_cache", "gfx906_llm.kernels.gfx906.cache_ops", "reshape_and_cache")
register_triton_op("qkv_rope_cache", "gfx906_llm.kernels.gfx906.qkv_rope_cache", "qkv_rope_cache")
for _op in ("rms_norm", "fused_add_rms_norm"):
    register_triton_op(_op, "gfx906_llm.kernels.gfx906.rms_norm", _op)
for _op in ("silu_and_mul", "gelu_tanh_and_mul", "rotary_embedding"):
    register_triton_op(_op, "gfx906_llm.kernels.gfx906.fused_ops", _op)  # rotary: in place on q, k


def use_triton(platform: Platform) -> bool:
    """Triton kernels run on GPUs unless ``GFX906_LLM_KERNELS=torch`` asks for the torch path."""
    if os.environ.get("GFX906_LLM_KERNELS", "").lower() == "torch":
        return False
    return platform.is_gpu and triton_available()


@functools.lru_cache(maxsize=None)
def get_op(op: str, platform: Platform) -> Callable:
    """The implementation of ``op`` for ``platform``: Triton where it exists and runs, else torch."""
    if use_triton(platform) and op in _TRITON_OPS:
        mod, fn = _TRITON_OPS[op]
        try:
            return getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as e:
            logger.warning("Triton kernel %s unavailable (%s); using the torch path", op, e)
    from gfx906_llm.kernels import reference

    return getattr(reference, op)


def get_device_op(op: str, device: torch.device) -> Callable:
    """``get_op`` for tensors on ``device``: CPU tensors always take the torch reference (the CPU
    path and its numerics, whatever GPU is detected); other devices the detected platform's
    implementation. Detection runs at the first call, never at import time."""
    return _device_op(op, device.type)


@functools.lru_cache(maxsize=None)
def _device_op(op: str, device_type: str) -> Callable:
    if device_type == "cpu":
        return get_op(op, _make("cpu", "CPU tensor"))
    return get_op(op, detect_platform())
