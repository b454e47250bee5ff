"""``gfx906-llm quantize``: fp16/bf16 Hugging Face folder -> GPTQ / AWQ / compressed-tensors checkpoint.

    gfx906-llm quantize MODEL_DIR --method gptq|awq|rtn --format gptq|awq|compressed-tensors
        --output OUT_DIR [--bits 4] [--group-size 128] [--desc-act] [--sym | --asym]
        [--num-samples 32] [--seq-len 256] [--damp 0.01] [--no-clip] [--dtype float16|bfloat16]

Runs on the CPU with transformers (model loaded in float32). Calibration text: the project's
own ``calibration_data.txt``. Defaults: GPTQ and RTN symmetric, AWQ asymmetric (zero point).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

METHODS = ("gptq", "awq", "rtn")


def build_parser() -> argparse.ArgumentParser:
    from gfx906_llm.quant.tools.writers import FORMATS

    p = argparse.ArgumentParser(prog="gfx906-llm quantize", description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", help="Hugging Face folder (config.json, *.safetensors, tokenizer)")
    p.add_argument("--method", choices=METHODS, default="gptq")
    p.add_argument("--format", choices=FORMATS, default=None, help="default: gptq for gptq/rtn, awq for awq")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=128, help="-1 = per output channel")
    p.add_argument("--desc-act", action="store_true",
                   help="GPTQ act-order: g_idx for --format gptq; static groups (actorder=weight) for compressed-tensors")
    sym = p.add_mutually_exclusive_group()
    sym.add_argument("--sym", dest="sym", action="store_true", default=None)
    sym.add_argument("--asym", dest="sym", action="store_false")
    p.add_argument("--output", "-o", required=True)
    p.add_argument("--num-samples", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--damp", type=float, default=0.01, help="GPTQ dampening, fraction of mean diag(H)")
    p.add_argument("--no-clip", action="store_true", help="AWQ: skip the clipping search")
    p.add_argument("--dtype", choices=("float16", "bfloat16"), default="float16")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--allow-ragged-groups", action="store_true",
                   help="quantise linears whose in_features is not a multiple of --group-size (last group "
                        "shorter, as AutoGPTQ allows); vLLM, AutoAWQ and gfx906-llm's loaders refuse them")
    return p


def _validate(a: argparse.Namespace) -> None:
    if a.format is None:
        a.format = "awq" if a.method == "awq" else "gptq"
    if a.sym is None:
        a.sym = a.method != "awq"
    if a.bits not in (2, 4, 8):
        raise ValueError(f"--bits {a.bits} not supported; accepted: 2, 4, 8")
    if a.format == "awq" and a.bits != 4:
        raise ValueError(f"--format awq stores 4-bit weights only, got --bits {a.bits}")
    if a.desc_act and (a.method != "gptq" or a.format == "awq"):
        raise ValueError("--desc-act needs --method gptq and a format with g_idx (gptq, compressed-tensors)")
    if a.group_size != -1 and a.group_size < 8:
        raise ValueError(f"--group-size {a.group_size} invalid; accepted: -1 or >= 8")
    if a.num_samples < 1 or a.seq_len < 8:
        raise ValueError(f"--num-samples {a.num_samples} / --seq-len {a.seq_len}: need >= 1 / >= 8")


def non_quantized_state(model: torch.nn.Module, quantized_names: set[str]) -> dict[str, torch.Tensor]:
    """The state dict without the quantised linears' weights and biases, with tied (shared-storage)
    tensors kept once, under their first name (``model.embed_tokens.weight`` for tied lm_head)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in model.state_dict().items():
        base = name.rsplit(".", 1)[0]
        if base in quantized_names:
            continue
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            continue
        seen.add(ptr)
        out[name] = t
    return out


def quantize_folder(a: argparse.Namespace, log=print) -> dict:
    """Run the chosen method on ``a.model_dir`` and write ``a.output``; returns timing info.

    Raises:
        ValueError: a linear's in_features is not a multiple of the group size (without
            ``allow_ragged_groups``), or the model is not a supported decoder.
    """
    from gfx906_llm.quant.tools.calibration import calibration_samples, load_model_for_calibration
    from gfx906_llm.quant.tools.writers import write_checkpoint

    t0 = time.perf_counter()
    c0 = time.process_time()
    model, tok = load_model_for_calibration(a.model_dir)
    ids = calibration_samples(tok, a.num_samples, a.seq_len)
    t_load = time.perf_counter() - t0
    from gfx906_llm.quant.tools.calibration import get_decoder_layers

    ragged = sorted({m.in_features for m in get_decoder_layers(model)[0].modules() if isinstance(m, torch.nn.Linear)
                     and a.group_size != -1 and m.in_features % a.group_size})
    if ragged and not a.allow_ragged_groups:
        raise ValueError(f"in_features {ragged} are not multiples of --group-size {a.group_size}: engines "
                         f"(vLLM, AutoAWQ, gfx906-llm) refuse such checkpoints; pick a group size dividing "
                         f"them or pass --allow-ragged-groups")
    min_zero = 1 if (a.format == "gptq" and not a.sym) else 0
    static_groups = a.desc_act and a.format == "compressed-tensors"
    if a.method == "gptq":
        from gfx906_llm.quant.tools.gptq import gptq_quantize_model

        q = gptq_quantize_model(model, ids, a.bits, a.group_size, a.sym, a.desc_act, a.damp, min_zero=min_zero,
                                static_groups=static_groups, log=log)
    elif a.method == "awq":
        from gfx906_llm.quant.tools.awq import awq_quantize_model

        q = awq_quantize_model(model, ids, a.bits, a.group_size, a.sym, clip=not a.no_clip, min_zero=min_zero, log=log)
    else:
        from gfx906_llm.quant.tools.calibration import get_decoder_layers
        from gfx906_llm.quant.tools.rtn import quantize_rtn

        layers, prefix = get_decoder_layers(model)
        q = {}
        for li, layer in enumerate(layers):
            for name, m in layer.named_modules():
                if isinstance(m, torch.nn.Linear):
                    q[f"{prefix}.{li}.{name}"] = quantize_rtn(m.weight.data, a.bits, a.group_size, a.sym,
                                                             min_zero=min_zero, bias=m.bias)
    t_quant = time.perf_counter() - t0 - t_load
    other = non_quantized_state(model, set(q))
    dtype = torch.float16 if a.dtype == "float16" else torch.bfloat16
    write_checkpoint(a.output, a.model_dir, a.format, q, other, bits=a.bits, group_size=a.group_size,
                     sym=a.sym, desc_act=a.desc_act, method=a.method, dtype=dtype, static_groups=static_groups)
    info = {"method": a.method, "format": a.format, "bits": a.bits, "group_size": a.group_size, "sym": a.sym,
            "desc_act": a.desc_act, "num_linears": len(q), "load_s": round(t_load, 2),
            "quantize_s": round(t_quant, 2), "total_s": round(time.perf_counter() - t0, 2),
            "cpu_s": round(time.process_time() - c0, 2), "threads": torch.get_num_threads(), "output": a.output}
    return info


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 2 bad arguments)."""
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        _validate(a)
    except ValueError as e:
        parser.print_usage(sys.stderr)
        print(f"gfx906-llm quantize: error: {e}", file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        info = quantize_folder(a, log=lambda m: print(m, file=sys.stderr))
    except ValueError as e:
        print(f"gfx906-llm quantize: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
