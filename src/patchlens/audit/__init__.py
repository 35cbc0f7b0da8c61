"""``patchlens report``: a dataset audit of a batch store — where the model looks, class by class, and what looks like a shortcut.

``report(store)`` returns the findings as data (:class:`Findings`); with
``out=`` it also writes a self-contained HTML page and ``findings.json`` beside it.
(The package is called ``audit``, not ``report``, so that the function
``patchlens.report`` does not hide a subpackage of the same name.)
"""

from __future__ import annotations

import os
from pathlib import Path

from ..batch.results import BatchStore, open_store
from .analysis import ReportError, analyse
from .detections import measure_detections
from .findings import ClassFindings, Findings, Group, ImageFinding
from .groups import GroupRule
from .page import pictured_ids, render_page
from .pictures import PictureSink, example_overlay
from .signals import KINDS, Signal

#: above this many pictures the page keeps them in a folder beside it instead of inside it
EMBED_LIMIT = 400
PICTURES = ("auto", "embed", "folder")

__all__ = ["KINDS", "ClassFindings", "Findings", "Group", "GroupRule", "ImageFinding", "ReportError", "Signal", "report"]


def report(
    store: str | os.PathLike[str] | BatchStore,
    out: str | os.PathLike[str] | None = None,
    *,
    method: str | None = None,
    request: str | None = None,
    pictures: str = "auto",
    json_path: str | os.PathLike[str] | None = None,
) -> Findings:
    """Audit a batch store: per-class maps, how the evidence is spread, and shortcut signals.

    Args:
        store: a store folder written by ``patchlens batch``, or an opened store.
        out: write the HTML page here (and ``findings.json`` beside it); None: only return the findings.
        method: which method's run of the store to report (needed only when it holds several).
        request: which target request's run to report, such as ``"top1"`` or ``"label"`` (needed only
            when the store holds several).
        pictures: ``"embed"`` puts the pictures inside the page (one file to share), ``"folder"``
            writes them to ``<page name>_files/`` beside it, ``"auto"`` embeds up to EMBED_LIMIT of them.
        json_path: where to write the findings as JSON (default: ``findings.json`` beside ``out``).

    Returns:
        The findings; ``findings.flagged`` lists the signals that crossed their thresholds.
    """
    if pictures not in PICTURES:
        raise ReportError(f"pictures={pictures!r}: use one of {', '.join(PICTURES)}")
    opened = store if isinstance(store, BatchStore) else open_store(store)
    try:
        findings = analyse(opened, method=method, request=request)
        # a detector's maps are also measured against their own boxes (its own module: audit/detections.py)
        evidence = measure_detections(opened, findings.run.method, findings.run.request)
        findings.detections = evidence.to_dict() if evidence is not None else None
        if out is None:
            return findings
        page = Path(out)
        if page.is_dir():
            raise ReportError(f"{page}: is a folder; name the HTML file to write, e.g. {page / 'report.html'}")
        try:  # a page in a folder that does not exist yet gets its folder, as every --out does
            page.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReportError(f"{page.parent}: cannot make the report's folder: {exc.strerror or exc}") from None
        ids = pictured_ids(findings)
        in_folder = pictures == "folder" or (pictures == "auto" and len(ids) > EMBED_LIMIT)
        sink = PictureSink(page.parent / f"{page.stem}_files" if in_folder else None, page.parent)
        srcs = {}
        for i in ids:
            m = findings.images[i]
            data, note = example_overlay(m, opened.map(opened.manifest.loc[m.row]))
            if note and not m.note:
                m.note = note
            srcs[i] = sink.add(data, "jpg")
        html = render_page(findings, srcs, sink)
        if evidence is not None:  # the detections' section goes before the run's description (or at the end)
            marker = '<section id="run">' if '<section id="run">' in html else "</body>"
            html = html.replace(marker, evidence.section_html() + marker, 1)
        page.write_text(html, encoding="utf-8")
        findings.write_json(json_path if json_path is not None else page.parent / "findings.json")
        return findings
    finally:
        if opened is not store:
            opened.close()
