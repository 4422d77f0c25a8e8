"""`audioconv` command line: parse, call the library, print. One module per subcommand in
``audioconv/commands/``; each has ``register(subparsers)`` which adds its parser and sets
``func`` (a callable taking the parsed args and returning an exit code)."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["manifest", "augment", "train", "evaluate", "project", "topk", "evolve", "demo",
            "shards",
            "export"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audioconv",
        description="Augment waveforms, train log-mel CNNs and project their hidden units back onto the "
                    "time-frequency plane (Zeiler & Fergus deconvnet).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"audioconv.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"audioconv.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"audioconv {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
