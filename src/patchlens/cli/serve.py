"""``patchlens serve``: the interactive web explorer on this machine."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Any

from ..errors import PatchlensError
from ._model_options import add_model_arguments, load_cli_model

#: the commands this module adds and their one-line help (read without importing this module: cli/_help.py)
COMMANDS = {
    "serve": "start the interactive web explorer (needs: pip install 'patchlens[web]')",
}


EXAMPLES = """examples:
  patchlens serve                                  the default model at http://127.0.0.1:8000
  patchlens serve --model timm:resnet50 --port 8080
  patchlens serve --model torchscript:model.pt --device cuda
"""


def register(sub: Any, _argv: list[str]) -> None:
    p = sub.add_parser(
        "serve",
        help=COMMANDS["serve"],
        description="Start a local web page to upload images, run methods, compare maps and try what-ifs.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", default="default", help="model spec, loaded once at startup (visitors cannot upload models) [default: default]"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N [default: auto]")
    add_model_arguments(p)
    p.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on; other machines can reach the page only if you change it [default: 127.0.0.1]",
    )
    p.add_argument("--port", type=int, default=8000, help="port [default: 8000]")
    p.add_argument("--workers", type=int, default=1, help="explanations computed at the same time [default: 1]")
    p.add_argument("--queue", type=int, default=8, help="explanations that may wait; more are refused with 429 [default: 8]")
    p.add_argument("--max-upload-mb", type=float, default=20, help="largest upload in MB [default: 20]")
    p.add_argument(
        "--allowed-hosts", default=None, metavar="NAMES",
        help="comma list of Host names the server answers to, '*' for any (protects against DNS rebinding) "
             "[default: localhost, 127.0.0.1, ::1, and --host]",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..web.app import create_app
        from ..web.state import WebConfig
    except ImportError as exc:
        raise PatchlensError(
            f"the web explorer needs FastAPI and uvicorn ({exc.name} is missing): pip install 'patchlens[web]'"
        ) from None
    if not 1 <= args.port <= 65535:
        raise PatchlensError(f"--port {args.port}: must be between 1 and 65535")
    if args.workers < 1 or args.queue < 1 or args.max_upload_mb <= 0:
        raise PatchlensError("--workers and --queue must be at least 1, --max-upload-mb above 0")
    config = WebConfig(workers=args.workers, max_queued=args.queue, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                       allowed_hosts=allowed_hosts(args.allowed_hosts, args.host))
    app = create_app(classifier=load_cli_model(args), config=config)
    if not _is_loopback(args.host):
        print(f"patchlens: warning: listening on {args.host}: other machines can use this server", file=sys.stderr)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"patchlens: {app.state.classifier.model_id} ready at http://{shown}:{args.port}/  (Ctrl+C to stop)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def allowed_hosts(given: str | None, listen: str) -> tuple[str, ...]:
    """The Host allowlist: the names given, or loopback names plus the address listened on."""
    from ..web.guard import LOOPBACK_HOSTS

    if given is not None:
        names = tuple(n.strip() for n in given.split(",") if n.strip())
        if not names:
            raise PatchlensError("--allowed-hosts: give at least one name, or '*' for any")
        return names
    extra = () if listen in ("0.0.0.0", "::") or listen in LOOPBACK_HOSTS else (listen,)
    return LOOPBACK_HOSTS + extra


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
