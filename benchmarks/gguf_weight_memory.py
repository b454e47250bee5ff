"""Device memory of a GGUF model's weights when they stay quantised, against the file size.

Usage: python benchmarks/gguf_weight_memory.py [--models NAME ...]   (CPU only; prints JSON)

On a GPU with Triton kernels the engine keeps GGUF blocks (``GGUFConfig``): every linear layer
(and the token embedding / output head) holds its shards repacked into the kernel layout
(``gguf_torch.pack_planes``: the same bytes per weight as the file plus at most 15 alignment
bytes per plane, float shards as fp16), and the remaining parameters (norm weights, biases) are
ordinary tensors in the run dtype (fp16 on gfx906). Both are computed here on the CPU from the
loaded module: the model is built with ``load_model(..., quantization="gguf")`` on the CPU
(which holds the raw GGUF bytes per shard), each shard is packed with the same ``pack_planes``
call that ``GGUFLinearMethod.process_weights_after_loading`` runs on the GPU, and the other
parameters are counted at 2 bytes per element. The result is what ``LoadedModel.weight_bytes``
reports on the GPU (the sum of ``numel * element_size`` over the parameters), without a GPU.

Output per model: ``file_bytes`` (the .gguf file), ``tensor_bytes`` (its tensor data, i.e. the
file minus header, metadata and tokenizer), ``weight_bytes_quantised`` (as above),
``gguf_linear_bytes`` / ``other_param_bytes`` (its two parts), ``cpu_weight_bytes`` (what the
CPU load holds: raw GGUF bytes plus fp32 parameters), ``ratio`` = weight_bytes_quantised /
file_bytes.
"""

from __future__ import annotations

import argparse
import json

MODELS = ("smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-coder-0.5b-instruct")


def weight_memory(name: str) -> dict:
    from gfx906_llm import demo_models
    from gfx906_llm.loader.gguf import open_gguf
    from gfx906_llm.loader.model_loader import load_model
    from gfx906_llm.platform import detect_platform
    from gfx906_llm.quant.gguf_torch import pack_planes

    path = demo_models.fetch(name)
    tensor_bytes = sum(int(t.n_bytes) for t in open_gguf(path).tensors)
    lm = load_model(str(path), detect_platform(), quantization="gguf")
    if next(lm.model.parameters()).device.type != "cpu":
        raise RuntimeError("run this on the CPU: the raw GGUF shards are only kept there")
    gguf_bytes, other_bytes, seen = 0, 0, set()
    for mod in lm.model.modules():
        shards = getattr(mod, "gguf_shards", None)
        if shards is None or id(mod.weight) in seen:
            continue
        seen.add(id(mod.weight))
        for s in shards:
            raw = mod.weight.data[s.offset:s.offset + s.nbytes].view(s.n, -1)
            gguf_bytes += pack_planes(raw, s.qtype, s.k).nbytes
    for p in lm.model.parameters():
        if not getattr(p, "gguf_weight", False):
            other_bytes += p.numel() * 2  # fp16 on the GPU
    file_bytes = path.stat().st_size
    total = gguf_bytes + other_bytes
    return {"model": name, "file": path.name, "file_bytes": file_bytes, "tensor_bytes": tensor_bytes,
            "weight_bytes_quantised": total, "gguf_linear_bytes": gguf_bytes, "other_param_bytes": other_bytes,
            "cpu_weight_bytes": lm.weight_bytes, "ratio": round(total / file_bytes, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    a = ap.parse_args()
    print(json.dumps([weight_memory(m) for m in a.models], indent=1))


if __name__ == "__main__":
    main()
