"""``gfx906-llm``: serve | generate | chat | bench | env | kernels | quantize."""

from __future__ import annotations

import argparse
import json
import logging
import sys


def _add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None,
                   help="HF folder, .gguf file or demo-model name (default: the SmolLM2-135M-Instruct demo)")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)


def _build_parser() -> argparse.ArgumentParser:
    from gfx906_llm import __version__
    from gfx906_llm.config import EngineConfig

    parser = argparse.ArgumentParser(prog="gfx906-llm", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="OpenAI-compatible HTTP server")
    from gfx906_llm.entrypoints.openai.api_server import make_arg_parser

    make_arg_parser(serve)

    gen = sub.add_parser("generate", help="generate a completion for prompts given as arguments")
    _add_model_arg(gen)
    gen.add_argument("--prompt", action="append", required=True, help="a prompt (repeatable)")
    _sampling_args(gen)
    EngineConfig.add_cli_args(gen)

    chat = sub.add_parser("chat", help="interactive chat in the terminal")
    _add_model_arg(chat)
    _sampling_args(chat)
    chat.add_argument("--system", default=None, help="system prompt")
    EngineConfig.add_cli_args(chat)

    from gfx906_llm.bench.cli import add_bench_parser

    add_bench_parser(sub)

    sub.add_parser("env", help="what platform, arch and dtype were detected, and why")

    kern = sub.add_parser("kernels", help="kernel tools: `kernels report` prints the ISA report")
    kern.add_argument("kernel_args", nargs=argparse.REMAINDER)

    quant = sub.add_parser("quantize", help="make GPTQ / AWQ / compressed-tensors checkpoints")
    quant.add_argument("quant_args", nargs=argparse.REMAINDER)
    return parser


def _engine_config(args: argparse.Namespace):
    from gfx906_llm.config import EngineConfig

    return EngineConfig.from_cli_args(args)


def _cmd_generate(args: argparse.Namespace) -> int:
    from gfx906_llm.llm import LLM
    from gfx906_llm.sampling_params import SamplingParams

    llm = LLM.from_engine_config(_engine_config(args))
    sp = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    for prompt, out in zip(args.prompt, llm.generate(args.prompt, sp)):
        print(json.dumps({"prompt": prompt, "text": out.outputs[0].text,
                          "finish_reason": out.outputs[0].finish_reason}))
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    from gfx906_llm.engine.engine import LLMEngine
    from gfx906_llm.sampling_params import SamplingParams

    engine = LLMEngine(_engine_config(args))
    tok = engine.tokenizer
    if not getattr(tok, "chat_template", None):
        print("this model has no chat template", file=sys.stderr)
        return 2
    history: list[dict] = [{"role": "system", "content": args.system}] if args.system else []
    sp = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    print("Type a message; an empty line or Ctrl-D quits.", flush=True)
    turn = 0
    while True:
        try:
            line = input("> ")
        except EOFError:
            break
        if not line.strip():
            break
        history.append({"role": "user", "content": line})
        prompt = tok.apply_chat_template(history, add_generation_prompt=True, tokenize=False)
        engine.add_request(f"chat-{turn}", engine.encode(prompt, add_special_tokens=False), sp)
        turn += 1
        shown = 0
        text = ""
        while engine.has_unfinished_requests():
            for out in engine.step():
                text = out.outputs[0].text
                print(text[shown:], end="", flush=True)
                shown = len(text)
        print(flush=True)
        history.append({"role": "assistant", "content": text})
    return 0


def _cmd_env() -> int:
    import torch

    from gfx906_llm import __version__
    from gfx906_llm.platform import detect_platform, triton_available, use_triton

    p = detect_platform()
    info = {
        "gfx906_llm": __version__,
        "torch": torch.__version__,
        "torch_hip": torch.version.hip,
        "torch_cuda": torch.version.cuda,
        "triton_installed": triton_available(),
        "platform": p.kind,
        "arch": p.arch,
        "kernel_config": p.config_key,
        "detected_by": p.reason,
        "default_dtype": str(p.default_dtype).replace("torch.", ""),
        "bf16": p.supports_bf16,
        "matrix_cores": p.has_matrix_cores,
        "wave_size": p.warp_size,
        "kernels": "triton" if use_triton(p) else "torch",
    }
    print(json.dumps(info, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            from gfx906_llm.entrypoints.openai.api_server import run_server

            run_server(args)
            return 0
        if args.command == "generate":
            return _cmd_generate(args)
        if args.command == "chat":
            return _cmd_chat(args)
        if args.command == "env":
            return _cmd_env()
        if args.command == "bench":
            from gfx906_llm.bench.cli import run_bench

            return run_bench(args)
        if args.command == "kernels":
            rest = list(args.kernel_args)
            if not rest or rest[0] != "report":
                print("usage: gfx906-llm kernels report [--json] [--arch ARCH ...]", file=sys.stderr)
                return 2
            from gfx906_llm.kernels.isa import main as isa_main

            return isa_main(rest[1:])
        if args.command == "quantize":
            from gfx906_llm.quant.tools.cli import main as quant_main

            return quant_main(list(args.quant_args))
    except ValueError as e:
        logging.getLogger("gfx906_llm").error("%s", e)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
