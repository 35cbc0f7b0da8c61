"""``patchlens serve-model``: any model patchlens can load, served over the Open Inference Protocol v2."""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

from ..errors import PatchlensError
from ._model_options import add_model_arguments, load_cli_model
from .serve import _is_loopback, allowed_hosts

#: where the token comes from when --token is not given (a command line shows in ps; the environment does not)
TOKEN_ENV = "PATCHLENS_SERVE_TOKEN"

#: the commands this module adds and their one-line help (read without importing this module: cli/_help.py)
COMMANDS = {
    "serve-model": "serve a model over the Open Inference Protocol v2 (KServe/Triton REST), for remote explanation",
}


EXAMPLES = """examples:
  patchlens serve-model                                  the default model at http://127.0.0.1:8500/v2/models/default
  PATCHLENS_SERVE_TOKEN=$(cat token.txt) patchlens serve-model --model timm:resnet50 --device cuda --host 0.0.0.0
  patchlens explain cat.jpg --model http://127.0.0.1:8500/v2/models/default   (from the other side)
"""


def register(sub: Any, _argv: list[str]) -> None:
    p = sub.add_parser(
        "serve-model",
        help=COMMANDS["serve-model"],
        description="Serve a model over HTTP (Open Inference Protocol v2: metadata, infer, health), so that "
        "patchlens or any KServe/Triton client on another machine can score images with it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="default", help="model spec, loaded once at startup [default: default]")
    p.add_argument("--name", default=None, help="the model's name in its URL [default: from the spec, 'default' for the default model]")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N [default: auto]")
    p.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on; other machines can reach the model only if you change it [default: 127.0.0.1]",
    )
    p.add_argument("--port", type=int, default=8500, help="port; 0 picks a free one [default: 8500]")
    p.add_argument("--max-batch", type=int, default=32, help="most images in one request [default: 32]")
    p.add_argument("--queue", type=int, default=16, help="requests running or waiting; more get 503 + Retry-After [default: 16]")
    add_model_arguments(p)  # --activation, --labels, --input-size...: the scores served are the ones patchlens explains
    p.add_argument(
        "--token", default=None,
        help=f"require 'Authorization: Bearer TOKEN' on every request but health checks; ${TOKEN_ENV} keeps it out of ps "
        "[default: none, or $" + TOKEN_ENV + "]",
    )
    p.add_argument(
        "--allowed-hosts", default=None, metavar="NAMES",
        help="comma list of Host names the server answers to, '*' for any (protects against DNS rebinding) "
        "[default: localhost, 127.0.0.1, ::1, and --host]",
    )
    p.add_argument("--max-memory-mb", type=float, default=1024,
                   help="memory that request bodies in flight may cost (JSON ~18x its size); more get 503 [default: 1024]")
    p.add_argument("--idle-timeout", type=float, default=30, help="seconds before an idle or stalled connection is closed [default: 30]")
    p.set_defaults(run=run)


def host_guard(hosts: tuple[str, ...]) -> Any:
    """``patchlens serve``'s Host and Origin rule, for the model server (which cannot import the web layer)."""
    from ..web.guard import refusal

    return lambda method, host, origin: refusal(method, host, origin, hosts)


def run(args: argparse.Namespace) -> int:
    from ..models.remote.server import ModelServer

    if not 0 <= args.port <= 65535:
        raise PatchlensError(f"--port {args.port}: must be between 0 and 65535")
    name = args.name or re.sub(r"[^A-Za-z0-9_.-]+", "_", args.model.rsplit("/", 1)[-1].split(":")[-1]).strip("_") or "model"
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    if token is not None and (len(token) < 8 or any(ord(c) < 33 or ord(c) > 126 for c in token)):  # before the model loads
        raise PatchlensError(f"--token (or ${TOKEN_ENV}): at least 8 printable characters without spaces (the token is not shown)")
    hosts = allowed_hosts(args.allowed_hosts, args.host)
    classifier = load_cli_model(args)
    server = ModelServer(classifier, name=name, host=args.host, port=args.port, max_batch=args.max_batch, queue=args.queue,
                         token=token, guard=host_guard(hosts), max_memory_mb=args.max_memory_mb, idle_timeout=args.idle_timeout)
    if not _is_loopback(args.host):
        print(f"patchlens: warning: listening on {args.host}: other machines can use this model", file=sys.stderr)
    print(f"patchlens: {classifier.model_id} served at {server.url}  (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.httpd.server_close()
    return 0
