"""The ``bench`` subcommand: ``gfx906-llm bench latency | throughput | serve`` (JSON on stdout).

Also runnable as ``python -m gfx906_llm.bench.cli ...`` (no server dependencies imported).
"""

from __future__ import annotations

import argparse
import logging
import sys

_MODES = ("latency", "throughput", "serve")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-json", default=None, metavar="PATH", help="also write the JSON result here")


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``bench`` with its three modes on the top-level ``subparsers``."""
    from gfx906_llm.bench import latency, serve, throughput
    from gfx906_llm.config import EngineConfig

    bench = subparsers.add_parser("bench", help="latency | throughput | serve benchmarks (JSON)",
                                  description=__doc__.splitlines()[0])
    modes = bench.add_subparsers(dest="bench_command", required=True)
    for name, mod, help_ in (("latency", latency, "TTFT / TPOT / end-to-end latency of batches, in process"),
                             ("throughput", throughput, "offline generation throughput (LLM.generate)")):
        p = modes.add_parser(name, help=help_, description=mod.__doc__.splitlines()[0])
        p.add_argument("model", nargs="?", default=None,
                       help="HF folder, .gguf file or demo-model name (default: the SmolLM2-135M-Instruct demo)")
        mod.add_args(p)
        EngineConfig.add_cli_args(p)
        _add_common(p)
    p = modes.add_parser("serve", help="streaming load against a running server at several concurrencies",
                         description=serve.__doc__.splitlines()[0])
    serve.add_args(p)
    _add_common(p)
    return bench


def run_bench(args: argparse.Namespace) -> int:
    """Run the chosen mode, print its JSON (and write ``--output-json``). Returns the exit code.

    Raises:
        ValueError: bad arguments (the top-level CLI turns it into exit code 2).
    """
    from gfx906_llm.bench import latency, serve, throughput
    from gfx906_llm.bench.common import emit

    mod = {"latency": latency, "throughput": throughput, "serve": serve}[args.bench_command]
    result = mod.run(args)
    emit(result, args.output_json)
    if args.bench_command == "serve" and any(lv["failed"] for lv in result["levels"]):
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gfx906-llm")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run_bench(args)
    except ValueError as e:
        logging.getLogger("gfx906_llm.bench").error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
