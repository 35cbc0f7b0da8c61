"""The ``patchlens`` command. Each subcommand lives in its own module here.

A module that defines ``register(subparsers, argv)`` is found automatically;
``register`` adds its parser and sets ``run=function(args) -> exit code``.
The CLI calls only the public API; a :class:`PatchlensError` becomes a one-line
message, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import logging
import os
import pkgutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import PatchlensError
from . import _help


def command_modules() -> list[str]:
    """The modules here that may define commands, in the order their commands are listed."""
    return sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    names = command_modules()
    # A command run from its own module (explain.py runs "explain") needs only that module:
    # the others import metrics, scipy, the audit and the batch store, a second or more on
    # a busy 2-core CPU. Anything else (no command, --help, a name no module has) registers all.
    command = argv[0] if argv and not argv[0].startswith("-") else None
    if command and command.replace("-", "_") in names:
        parser, sub = _bare_parser()
        if _register(sub, command.replace("-", "_"), argv) and command in sub.choices:
            return parser
    parser, sub = _bare_parser()
    for name in names:
        _register(sub, name, argv)
    return parser


def _bare_parser() -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(
        prog="patchlens",
        description="See which parts of an image drive a classifier's decision.",
        epilog="Run 'patchlens COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"patchlens {__version__}")
    return parser, parser.add_subparsers(dest="command", metavar="COMMAND")


def _register(sub: Any, name: str, argv: Sequence[str]) -> bool:
    module = importlib.import_module(f"{__name__}.{name}")
    if not hasattr(module, "register"):
        return False
    module.register(sub, list(argv))
    return True


def _print_help(argv: list[str]) -> int:
    """The help ``argv`` asks for, without importing torch where the text is known (see cli/_help.py)."""
    text = None
    # Methods registered in this process (a plug-in imported by a script that calls main) are in no
    # source file of the key; with the registry loaded, building the parser is quick anyway.
    keep = "patchlens.methods.base" not in sys.modules
    if _help.top_level(argv):
        summaries = _help.command_summaries(Path(__file__).parent, command_modules())
        if summaries is not None:
            parser, sub = _bare_parser()
            _help.summary_parser(sub, summaries)
            text = parser.format_help()
    elif keep:
        text = _help.remembered(argv)
    if text is None:
        parser = build_parser(argv)
        if not argv:
            text = parser.format_help()
        else:
            buffer = io.StringIO()
            try:
                with contextlib.redirect_stdout(buffer):
                    parser.parse_args(argv)
            except SystemExit as exc:
                sys.stdout.write(buffer.getvalue())
                if exc.code not in (0, None):
                    raise  # a usage error before the help flag: argparse has said why on stderr
                if keep:
                    _help.remember(argv, buffer.getvalue())
                return 0
            sys.stdout.write(buffer.getvalue())  # pragma: no cover - argparse always exits after help
            return 0
    sys.stdout.write(text)
    return 2 if not argv else 0  # ``patchlens`` alone is a usage error that shows the help


def _unknown_option(parser: argparse.ArgumentParser, args: argparse.Namespace, given: str) -> str:
    """One line for an option the command does not have, with the closest it does have."""
    import difflib

    command = getattr(args, "command", None)
    subparsers = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    sub = subparsers.choices.get(command) if subparsers is not None and command else None
    if sub is None:
        return f"{given}: not an option of patchlens; 'patchlens --help' lists the commands"
    options = [o for o in sub._option_string_actions if o.startswith("--")]
    close = difflib.get_close_matches(given.split("=")[0], options, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{given}: not an option of patchlens {command}{hint}; 'patchlens {command} --help' lists them"


def error(message: str) -> None:
    print(f"patchlens: error: {message}", file=sys.stderr)


def _one_line_warnings() -> None:
    """Patchlens's own warnings print as one line (``patchlens: warning: ...``), not with a source line under them."""
    plain = warnings.showwarning

    def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if not category.__module__.startswith("patchlens"):
            return plain(message, category, filename, lineno, file, line)
        print(f"patchlens: warning: {' '.join(str(message).split())}", file=file or sys.stderr)

    if getattr(plain, "__name__", "") != "show":
        warnings.showwarning = show


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _one_line_warnings()
    if argv[:1] == ["--version"]:  # before the parser: its subcommands import torch (seconds) for nothing
        print(f"patchlens {__version__}")
        return 0
    if not argv:
        return _print_help(argv)
    if _help.asks_for_help(argv):
        raise SystemExit(_print_help(argv))  # as argparse does after a help text
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would print the top-level usage, which says nothing about the command's options
        error(_unknown_option(parser, args, unknown[0]))
        return 2
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        from ._checks import positive_batch_size

        positive_batch_size(getattr(args, "batch_size", None))  # every command that runs a model has it
        return int(args.run(args) or 0)
    except PatchlensError as exc:
        error(str(exc))
        return 2
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except BrokenPipeError:  # `patchlens methods | head`: the reader has what it wanted
        # Python would print a traceback on flushing stdout at exit; point it at /dev/null first
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # the shell's code for a command ended by SIGPIPE


#: commands whose process ends as soon as they are done: they leave nothing open (no server, worker, Ray or temporary files)
QUICK_EXIT = ("explain", "methods", "models")


def console() -> None:
    """The ``patchlens`` program (the console script and ``python -m patchlens``): :func:`main`, then exit.

    Once torch is loaded, tearing the interpreter down (freeing every module) takes 0.6 s of CPU
    (benchmarks/RESULTS.md, "Start-up"), more than some commands' own work. After a command of
    :data:`QUICK_EXIT`, which has written and closed everything it makes, the process ends at once.
    """
    argv = sys.argv[1:]
    code = main(argv)
    if argv[:1] and argv[0] in QUICK_EXIT:
        logging.shutdown()  # flushes the log's handlers
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can reach the reader anyway
                stream.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    console()
