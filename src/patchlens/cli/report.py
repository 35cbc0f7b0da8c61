"""``patchlens report``: a dataset audit of a batch store, as an HTML page and findings.json."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..audit import PICTURES, Findings, report

#: the commands this module adds and their one-line help (read without importing this module: cli/_help.py)
COMMANDS = {
    "report": "audit a batch store: where the model looks per class, and shortcut signals (HTML + JSON)",
}


EXAMPLES = """examples:
  patchlens batch photos/ --out maps.store && patchlens report maps.store --out audit.html
  patchlens report val.store --out audit.html --pictures folder     pictures in audit_files/ beside the page
  patchlens report both.store --method rise --request top1 --out rise.html

The page opens offline in any browser; findings.json beside it holds the same
findings for scripts and CI. The exit status is 0 either way; read
findings.json's "flagged" list to fail a CI job on a shortcut signal.

To measure evidence outside the object, give boxes or masks in the batch
source list: columns x0,y0,x1,y1 (pixels of the original image) or mask (a
path to a binary mask image).
"""


def register(sub: Any, _argv: list[str]) -> None:
    p = sub.add_parser(
        "report",
        help=COMMANDS["report"],
        description="Write a self-contained HTML audit of a store made by 'patchlens batch', and findings.json beside it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", metavar="STORE", help="a store folder written by 'patchlens batch'")
    p.add_argument("--out", default=None, metavar="HTML", help="the page to write [default: STORE/report.html]")
    p.add_argument("--method", default=None, help="the method to report, when the store holds several")
    p.add_argument("--request", default=None, help="the target request to report (top1, label...), when the store holds several")
    p.add_argument("--pictures", default="auto", choices=PICTURES,
                   help="embed pictures in the page, or write them to a folder beside it [default: auto]")
    p.add_argument("--json", default=None, metavar="PATH", help="where to write the findings [default: findings.json beside the page]")
    p.set_defaults(run=run)


def summary(findings: Findings, page: Path) -> str:
    """What the command prints: where the page is and what it flags, one line per flag."""
    lines = [(f"{page}: {len(findings.classes)} class(es), {findings.run.done} image(s), "
              f"{findings.run.failed} failed; {len(findings.flagged)} shortcut signal(s) flagged")]
    lines += [f"  {s.label}: {s.sentence}" for s in findings.flagged]
    lines += [f"  detections: {sentence}" for sentence in (findings.detections or {}).get("flagged", [])]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    page = Path(args.out) if args.out else Path(args.store) / "report.html"
    findings = report(args.store, page, method=args.method, request=args.request, pictures=args.pictures, json_path=args.json)
    print(summary(findings, page))
    return 0
