"""Test-wide settings: Triton kernels run in the interpreter when there is no GPU."""

import os

import torch

if not torch.cuda.is_available():
    # must be set before triton is imported anywhere
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest


@pytest.fixture(scope="session")
def smollm2_gguf_path():
    """The real SmolLM2-135M-Instruct Q4_1 GGUF (downloaded once, sha256-checked)."""
    from gfx906_llm.demo_models import fetch

    return fetch("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma3_gguf_path():
    from gfx906_llm.demo_models import fetch

    return fetch("gemma-3-270m")


@pytest.fixture(scope="session")
def qwen25_coder_gguf_path():
    from gfx906_llm.demo_models import fetch

    return fetch("qwen2.5-coder-0.5b-instruct")


@pytest.fixture(autouse=True)
def _clean_splitk_accumulators():
    """A failed test may leave a split-K accumulator unread (gfx906_llm/layers/splitk.py); zero it
    so that the failure does not spread to the tests after it."""
    yield
    from gfx906_llm.layers.splitk import reset_accumulators

    reset_accumulators()
