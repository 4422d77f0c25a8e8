"""`audioconv` command line: parse, call the library, print. One module per subcommand in
``audioconv/commands/``; each has ``register(subparsers)`` which adds its parser and sets
``func`` (a callable taking the parsed args and returning an exit code).

Every command ends the same way on a user's mistake: one line ``audioconv COMMAND: error: MESSAGE``
on stderr and exit status 2 (bad settings, missing or unreadable files, outputs that cannot be
written: the message names the path and the cause). Library warnings are one line each,
``audioconv COMMAND: warning: MESSAGE``. Output cut short by the reader (``audioconv ... | head``)
ends quietly with status 1, as Python's documentation recommends for a closed pipe.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

COMMANDS = ["manifest", "shards", "rirs", "augment", "train", "cv", "evaluate", "predict", "export", "project", "topk",
            "evolve", "sanity", "faithfulness", "invariance", "report", "demo"]


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


def error_message(error: BaseException) -> str:
    """One line for a user-facing error: the message of ``ValueError``/``RuntimeError``..., and for
    an ``OSError`` its file name(s) and cause (``x.wav: permission denied``)."""
    if isinstance(error, OSError) and type(error).__str__ is OSError.__str__ and error.strerror:
        names = [os.fsdecode(n) for n in (error.filename, error.filename2) if n is not None]
        return (" -> ".join(names) + ": " if names else "") + error.strerror[0].lower() + error.strerror[1:]
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# The Python arguments that library messages suggest, as each command's flags: one message in the
# library, named for the command line where it is raised under it (``use --mode gradient``).
CLI_NAMES = {
    "mode='gradient'": {"project": "--mode gradient", "topk": "--mode gradient", "evolve": "--mode gradient",
                        "sanity": "--methods gradient,grad_cam", "faithfulness": "--methods gradient,grad_cam"},
    "gradcam_layer": {"sanity": "--gradcam-layer", "faithfulness": "--gradcam-layer"},
    "batch_size": {"invariance": "--batch-size"},
}


def cli_names(message: str, command: str) -> str:
    """``message`` with the Python arguments of :data:`CLI_NAMES` replaced by ``command``'s flags."""
    for python, flags in CLI_NAMES.items():
        if command in flags:
            message = message.replace(python, flags[command])
    return message


def _quiet_closed_stdout() -> int:
    """After a ``BrokenPipeError`` on stdout: point stdout at the null device, so the interpreter's
    final flush does not raise again, and return 1 (the status Python uses for EPIPE)."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout has no file descriptor (captured in tests)
        pass
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    prefix = f"audioconv {args.command}"

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prefix}: warning: {message}", file=sys.stderr, flush=True)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # a closed pipe shows here, inside the try, not at exit
        return code
    except BrokenPipeError:
        return _quiet_closed_stdout()
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as e:
        print(f"{prefix}: error: {cli_names(error_message(e), args.command)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
