"""``patchlens store verify STORE``: check a batch store against the checksums written with it."""

from __future__ import annotations

import argparse
from typing import Any

#: the commands this module adds and their one-line help (read without importing this module: cli/_help.py)
COMMANDS = {
    "store": "check a batch store's health (store verify STORE)",
}


EXAMPLES = """examples:
  patchlens store verify maps.store        exit 0: healthy; 1: damaged parts named, one per line

A damaged store keeps every readable row: patchlens.open_store(STORE) reads
them (with a warning naming the damage), and 'patchlens batch ... --resume'
explains the lost images again.
"""


def register(sub: Any, _argv: list[str]) -> None:
    p = sub.add_parser(
        "store",
        help=COMMANDS["store"],
        description="Work with a store written by 'patchlens batch'.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="check every manifest part and map shard against its checksum")
    verify.add_argument("store", metavar="STORE", help="the store folder")
    verify.set_defaults(run=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from ..batch import verify_store

    damage, manifest = verify_store(args.store)
    from ..batch.store import lost_maps

    for name, why in damage.items().items():
        print(f"{args.store}: {name}: {why}")
    ok = int(((manifest["status"] == "ok") & ~lost_maps(manifest, damage)).sum()) if len(manifest) else 0
    state = "DAMAGED (resume the run to explain the lost images again)" if damage else "healthy"
    print(f"{args.store}: {state}: {len(manifest)} readable rows, {ok} with maps")
    return 1 if damage else 0
