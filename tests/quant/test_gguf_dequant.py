"""GGUF dequantisation: torch and Triton paths bit-exact against gguf-py, on random blocks and on
real tensor slices of the shipped GGUF files; GGUFLinearMethod / GGUFWeight / embedding_lookup."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

gguf = pytest.importorskip("gguf")

from gfx906_llm.quant import gguf_torch as gt  # noqa: E402
from gfx906_llm.quant.gguf import (GGML_QUANT_SIZES, QT, GGUFConfig, GGUFLinearMethod,  # noqa: E402
                                   GGUFWeight, embedding_lookup)

# byte offsets of the fp16 fields of each block type (kept finite: no NaN/Inf halfs)
HALF_POS = {QT.Q4_0: [0], QT.Q4_1: [0, 2], QT.Q5_0: [0], QT.Q5_1: [0, 2], QT.Q8_0: [0],
            QT.Q2_K: [80, 82], QT.Q3_K: [108], QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q6_K: [208],
            QT.IQ4_NL: [0], QT.IQ4_XS: [0]}


def random_blocks(qt: int, nb: int, rng: np.random.Generator) -> np.ndarray:
    _, nbytes = GGML_QUANT_SIZES[qt]
    b = rng.integers(0, 256, size=(nb, nbytes), dtype=np.uint8)
    for p in HALF_POS[qt]:
        b[:, p:p + 2] = (rng.standard_normal(nb) * 0.05).astype(np.float16).view(np.uint8).reshape(nb, 2)
    return b


def assert_bits_equal(got: torch.Tensor, ref: np.ndarray) -> None:
    got = got.detach().cpu().numpy().reshape(ref.shape)
    bad = got.view(np.uint32) != ref.astype(np.float32).view(np.uint32)
    assert not bad.any(), f"{bad.sum()} of {bad.size} values differ, e.g. {got[bad][:4]} vs {ref[bad][:4]}"


def test_constants_match_gguf_py():
    for t, sizes in GGML_QUANT_SIZES.items():
        assert gguf.GGMLQuantizationType(int(t)).name == QT(t).name
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(int(t))] == sizes


@pytest.mark.parametrize("qt", gt.BLOCK_TYPES, ids=lambda t: QT(t).name)
def test_torch_dequant_random_blocks_bit_exact(qt):
    rng = np.random.default_rng()
    b = random_blocks(qt, 96, rng).reshape(4, -1)  # 4 rows
    ref = gguf.quants.dequantize(b, gguf.GGMLQuantizationType(int(qt)))
    assert_bits_equal(gt.dequantize(torch.from_numpy(b), qt), ref)


@pytest.mark.parametrize("qt", [QT.F32, QT.F16, QT.BF16], ids=lambda t: QT(t).name)
def test_float_passthrough(qt):
    x = torch.randn(3, 64)
    dt = {QT.F32: torch.float32, QT.F16: torch.float16, QT.BF16: torch.bfloat16}[qt]
    raw = x.to(dt).contiguous().view(torch.uint8)
    assert torch.equal(gt.dequantize(raw, qt), x.to(dt).float())


@pytest.mark.parametrize("qt", gt.BLOCK_TYPES, ids=lambda t: QT(t).name)
def test_triton_dequant_random_blocks_bit_exact(qt):
    from gfx906_llm.kernels.gfx906.gguf_dequant import gguf_dequantize

    rng = np.random.default_rng()
    elems, _ = GGML_QUANT_SIZES[qt]
    n, k = 3, 512 if elems == 256 else 96  # 96 = 3 groups: exercises the group-tail mask
    b = random_blocks(qt, n * k // elems, rng).reshape(n, -1)
    ref = gguf.quants.dequantize(b, gguf.GGMLQuantizationType(int(qt)))
    planes = gt.pack_planes(torch.from_numpy(b), qt, k)
    assert planes.nbytes <= b.size + 16 * 6  # same bytes per weight, plus plane alignment
    assert_bits_equal(gguf_dequantize(planes), ref)
    rows = torch.tensor([2, 0, 2])
    assert_bits_equal(gguf_dequantize(planes, rows=rows), ref[[2, 0, 2]])


def _real_slices(path: str, rows: int = 3, max_per_type: int = 2):
    """``(name, qtype, raw [rows, row_bytes], ref fp32)`` for a few tensors of each block type."""
    reader = gguf.GGUFReader(path, "r")
    seen: dict[int, int] = {}
    for t in reader.tensors:
        qt = int(t.tensor_type)
        if qt not in [int(x) for x in gt.BLOCK_TYPES] or len(t.shape) != 2 or seen.get(qt, 0) >= max_per_type:
            continue
        seen[qt] = seen.get(qt, 0) + 1
        raw = np.asarray(t.data).view(np.uint8).reshape(int(t.shape[1]), -1)
        start = np.random.randint(0, raw.shape[0] - rows + 1)
        part = np.array(raw[start:start + rows], copy=True)
        yield t.name, qt, part, gguf.quants.dequantize(part, t.tensor_type), int(t.shape[0])


@pytest.mark.parametrize("fixture", ["smollm2_gguf_path", "gemma3_gguf_path", "qwen25_coder_gguf_path"])
def test_real_tensor_slices_bit_exact(fixture, request):
    from gfx906_llm.kernels.gfx906.gguf_dequant import gguf_dequantize

    path = request.getfixturevalue(fixture)
    types = set()
    for name, qt, part, ref, k in _real_slices(str(path)):
        types.add(QT(qt).name)
        assert_bits_equal(gt.dequantize(torch.from_numpy(part), qt), ref)
        planes = gt.pack_planes(torch.from_numpy(part), qt, k)
        assert_bits_equal(gguf_dequantize(planes), ref)
    expected = {"smollm2_gguf_path": {"Q4_1", "Q8_0"}, "gemma3_gguf_path": {"Q8_0", "Q5_0", "Q4_K", "Q6_K"},
                "qwen25_coder_gguf_path": {"Q5_0", "Q8_0", "Q6_K", "Q4_K"}}[fixture]
    assert expected <= types, f"{fixture}: saw {types}"


def _random_raw(qt: int, n: int, k: int) -> torch.Tensor:
    elems, _ = GGML_QUANT_SIZES[qt]
    return torch.from_numpy(random_blocks(qt, n * k // elems, np.random.default_rng())).reshape(n, -1)


def test_linear_method_mixed_shards_cpu():
    layer = nn.Module()
    method = GGUFConfig.from_hf({}).get_method(layer, "model.layers.0.self_attn.qkv_proj")
    assert isinstance(method, GGUFLinearMethod)
    k, sizes, types = 256, [32, 16, 16], [QT.Q4_K, QT.Q5_0, QT.Q6_K]
    method.create_weights(layer, k, sizes, torch.float32)
    assert layer.weight.gguf_weight
    raws = [_random_raw(t, n, k) for t, n in zip(types, sizes)]
    for i in (2, 0, 1):  # any order
        layer.weight.weight_loader(layer.weight, GGUFWeight(raws[i].numpy(), gguf.GGMLQuantizationType(int(types[i])),
                                                            (sizes[i], k)), i)
    method.process_weights_after_loading(layer)
    assert layer.weight.numel() == sum(r.numel() for r in raws)  # memory = file bytes
    w = torch.cat([gt.dequantize(r, t) for r, t in zip(raws, types)])
    x, bias = torch.randn(2, 3, k), torch.randn(sum(sizes))
    ref = x @ w.T + bias  # fp32 sums in another order: rounding relative to the largest term
    torch.testing.assert_close(method.apply(layer, x, bias), ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    assert torch.equal(method.embedding(layer, torch.tensor([4, 0])), w[[4, 0]])


def test_linear_method_errors():
    layer = nn.Module()
    method = GGUFLinearMethod()
    method.create_weights(layer, 64, [32, 32], torch.float32)
    raw = _random_raw(QT.Q8_0, 32, 64).numpy()
    with pytest.raises(ValueError, match="shape"):
        layer.weight.weight_loader(layer.weight, GGUFWeight(raw, QT.Q8_0, (16, 64)), 0)
    with pytest.raises(ValueError, match="shard_id"):
        layer.weight.weight_loader(layer.weight, GGUFWeight(raw, QT.Q8_0, (32, 64)), 5)
    with pytest.raises(ValueError, match="GGUFWeight"):
        layer.weight.weight_loader(layer.weight, torch.zeros(32, 64), 0)
    layer.weight.weight_loader(layer.weight, GGUFWeight(raw, QT.Q8_0, (32, 64)), 0)
    with pytest.raises(ValueError, match="unloaded"):
        method.process_weights_after_loading(layer)
    with pytest.raises(ValueError, match="unknown GGML type"):
        gt.dequantize(torch.zeros(2, 18, dtype=torch.uint8), 16)  # IQ2_XXS


def test_embedding_lookup_rows_only():
    raw = _random_raw(QT.Q8_0, 10, 64)
    ids = torch.tensor([9, 0, 3, 3])
    full = gt.dequantize(raw, QT.Q8_0)
    assert torch.equal(embedding_lookup(raw, QT.Q8_0, ids), full[ids])
    assert torch.equal(embedding_lookup(GGUFWeight(raw.numpy(), QT.Q8_0, (10, 64)), None, ids), full[ids])
    with pytest.raises(ValueError, match="token ids"):
        embedding_lookup(raw, QT.Q8_0, torch.tensor([10]))
