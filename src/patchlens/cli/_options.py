"""Command-line options generated from declarations: a method's parameters and the metrics' options.

Shared by every subcommand that runs a method (explain, compare, batch) or
scores maps (compare, benchmark), so no subcommand keeps its own list of
method or metric options.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ..errors import PatchlensError
from ..methods.base import Method


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: expected true or false")


def add_method_arguments(parser: argparse.ArgumentParser, methods: Sequence[type[Method]], front_end: str) -> None:
    """Add ``--param-name`` options for each parameter of ``methods`` (shared names once).

    The defaults shown are ``front_end``'s (the command's name), those :func:`method_params`
    fills in: explain and batch stop sampling methods once settled, compare keeps fixed counts.
    """
    seen: set[str] = set()
    for cls in methods:
        infos = [p for p in cls.parameters() if p.name not in seen]
        if not infos:
            continue
        group = parser.add_argument_group(f"{cls.name} options")
        for info in infos:
            seen.add(info.name)
            kind: Any = _bool if info.type is bool else info.type
            extra = f" (one of: {', '.join(map(str, info.choices))})" if info.choices else ""
            default = info.default_for(front_end)
            group.add_argument(
                flag(info.name),
                dest=f"method__{info.name}",
                type=kind,
                default=argparse.SUPPRESS,
                metavar=info.type.__name__.upper(),
                help=f"{info.help}{extra} [default: {default}]",
            )


def add_other_method_arguments(parser: argparse.ArgumentParser) -> None:
    """Accept, unlisted, the options of every other registered method, so that one given to a method that
    does not take it (``--method occlusion --n-masks 10``) reaches ``validation.check_method_options``
    and its one line naming the methods that have it, instead of argparse's usage message.
    """
    from ..methods import registry

    for cls in registry().values():
        for info in cls.parameters():
            if flag(info.name) not in parser._option_string_actions:  # the chosen method's, or the command's own
                parser.add_argument(flag(info.name), dest=f"method__{info.name}", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def explicit_params(args: argparse.Namespace, cls: type[Method]) -> dict[str, Any]:
    """The method options given on the command line for ``cls``, and only those."""
    names = {p.name for p in cls.parameters()}
    return {key[8:]: value for key, value in vars(args).items() if key.startswith("method__") and key[8:] in names}


def method_params(args: argparse.Namespace, cls: type[Method], front_end: str) -> dict[str, Any]:
    """The method options given on the command line, as keyword arguments for ``cls``, with the
    defaults that ``front_end`` (the command) declares for those not given.
    """
    return cls.with_defaults(explicit_params(args, cls), front_end)


def add_metric_arguments(
    parser: argparse.ArgumentParser, only: Sequence[str] | None = None, defaults: dict[str, Any] | None = None,
    notes: dict[str, str] | None = None,
) -> None:
    """Add ``--option-name`` flags for the metrics' declared options (:class:`patchlens.metrics.Options`), or for
    those in ``only``; ``defaults`` are this command's own where it has them, ``notes`` more words for some.
    """
    from ..metrics.base import option_infos

    group = parser.add_argument_group("metric options")
    for info in option_infos():
        if info.group != "metrics" or (only is not None and info.name not in only):
            continue
        shown = (defaults or {}).get(info.name, info.default)
        choices = f" (one of: {', '.join(map(str, info.choices))})" if info.choices else ""
        group.add_argument(
            flag(info.name), dest=f"metric__{info.name}", type=info.type, default=argparse.SUPPRESS,
            metavar=info.type.__name__.upper(),
            help=f"{info.help}{choices}{(notes or {}).get(info.name, '')} [default: {'none' if shown is None else shown}]",
        )


def metric_options(args: argparse.Namespace) -> dict[str, Any]:
    """The metric options given on the command line, by their declared names."""
    return {key[8:]: value for key, value in vars(args).items() if key.startswith("metric__")}


def given_method_options(args: argparse.Namespace) -> list[str]:
    return [k[8:] for k in vars(args) if k.startswith("method__")]


def peek_option(argv: Sequence[str], name: str, default: str) -> str:
    """The value of ``--name X`` or ``--name=X`` in ``argv`` before full parsing."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def method_command(
    sub: Any, argv: Sequence[str], name: str, *, help: str, description: str, examples: str, note: str = ""
) -> tuple[argparse.ArgumentParser, type[Method] | None, str]:
    """A subcommand parser that takes ``--method`` and shows that method's generated options.

    Returns the parser, the method class chosen on the command line (None for an
    unknown name; the run reports it) and the comma list of method names.
    """
    from ..methods import registry

    chosen = peek_option(argv, "--method", "rise")
    methods = registry()
    names = ", ".join(methods)
    parser = sub.add_parser(
        name,
        help=help,
        description=description,
        # argparse prints the epilog after every option, so the method's options are above it
        epilog=examples + f"\nmethods: {names}\n(the '{chosen} options' above are those of --method {chosen}; "
        f"'patchlens {name} --method NAME --help' shows another's{note})",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser, methods.get(chosen), names


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    """Options for a model behind an HTTP endpoint (``--model http://...``)."""
    group = parser.add_argument_group("remote model options (with --model http://HOST:PORT/v2/models/NAME)")
    group.add_argument(
        "--header", action="append", default=None, metavar="'NAME: VALUE'",
        help="HTTP header sent with every request, repeatable; the value never appears in output or files. "
        "$PATCHLENS_HEADERS (one header a line) keeps a token off the command line, where ps shows it",
    )
    # not --protocol: that is the evaluation protocol of compare and benchmark
    group.add_argument("--remote-protocol", default=None, help="oip-v2 or kserve-v1 [default: from the URL]")
    group.add_argument("--in-flight", type=int, default=None, help="requests sent at the same time [default: 4]")
    group.add_argument("--request-batch", type=int, default=None, help="images per request [default: the server's max batch, else 8]")
    group.add_argument("--max-queries", type=int, default=None, help="most images sent to the server; past it the run stops, unfinished [default: no limit]")
    group.add_argument("--timeout", type=float, default=None, help="seconds to wait for an answer before retrying [default: 60]")
    group.add_argument("--retries", type=int, default=None, help="further tries on errors, timeouts, 429 and 5xx [default: 5]")
    group.add_argument("--output", default=None, help="the server's output to explain, when it has several")
    group.add_argument(
        "--binary", action=argparse.BooleanOptionalAction, default=None,
        help="send tensors as raw bytes (Open Inference Protocol's binary extension; ~2x faster than JSON) or not "
        "[default: when the server lists the extension or answers a one-image probe correctly]",
    )


def remote_options(args: argparse.Namespace) -> dict[str, Any]:
    """``load_model`` keyword arguments from :func:`add_remote_arguments`; none for a local model."""
    names = ("header", "remote_protocol", "in_flight", "request_batch", "max_queries", "timeout", "retries", "output", "binary")
    given = {name: getattr(args, name, None) for name in names}
    given = {name: value for name, value in given.items() if value is not None}
    if not str(args.model).startswith(("http://", "https://")):
        if given:
            first = next(iter(given))
            shown = f"--{'' if given[first] is not False else 'no-'}{first.replace('_', '-')}"
            raise PatchlensError(f"{shown}: only for a remote model (--model http://...)")
        return {}
    if "header" in given:
        given["headers"] = given.pop("header")
    if "remote_protocol" in given:
        given["protocol"] = given.pop("remote_protocol")
    given["progress"] = not getattr(args, "quiet", False)
    return given
