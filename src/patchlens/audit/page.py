"""The report as one HTML page: findings in words and pictures, with plain-JavaScript filters and sorting."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from html import escape
from pathlib import Path

from .._version import __version__
from .assets import CSS, JS
from .findings import ClassFindings, Findings, Group, ImageFinding
from .maps import TOP_FRACTION
from .pictures import PictureSink, map_png
from .signals import KINDS, place_in_words


def describe(m: ImageFinding, findings: Findings) -> str:
    """An image's findings in words, shown under its overlay."""
    parts = [f"{m.path}: explained as '{m.label}' (score {m.score:.3f})."]
    if m.true_label is not None:
        verdict = {True: "correct", False: "misclassified", None: "not compared"}[m.correct]
        parts.append(f"True class '{m.true_label}' ({verdict}).")
    parts.append(f"Of the top {TOP_FRACTION:.0%} evidence, {m.centre:.0%} is in the centre, {m.border:.0%} on the border "
                 f"and {m.corners:.0%} in the corners; the strongest area is at x={m.peak[0]:.0%}, y={m.peak[1]:.0%} "
                 f"({place_in_words(*m.peak)}).")
    if m.outside is not None:
        parts.append(f"{m.outside:.0%} of it lies outside the object (outlined in white).")
    if m.group is not None:
        flagged = any(c.label == m.label and g.index == m.group and g.flagged for c in findings.classes for g in c.groups)
        parts.append(f"Its map belongs to group {m.group + 1} of its class{' (a flagged group)' if flagged else ''}.")
    parts.append(f"Similarity of its map's layout to the class mean: {m.typicality:.2f} (1 = the same).")
    for kind in m.flags:
        parts.append(f"One of the worst examples for the flag '{KINDS[kind]}'.")
    if m.note:
        parts.append(f"Note: {m.note}.")
    return " ".join(parts)


def _example(m: ImageFinding, src: str, findings: Findings, caption: str) -> str:
    return (f'<button class="ex" type="button" data-id="{m.id}" data-desc="{escape(describe(m, findings))}">'
            f'<img loading="lazy" alt="overlay of {escape(m.path)}" src="{escape(src)}"><span>{escape(caption)}</span></button>')


def _box_plot(summary: dict[str, float], lo: float, hi: float) -> str:
    w, h = 220, 18
    x = lambda v: 4 + (w - 8) * ((v - lo) / (hi - lo) if hi > lo else 0.5)
    return (f'<svg class="box" width="{w}" height="{h}" role="img" aria-label="min {summary["min"]:.3g}, median '
            f'{summary["median"]:.3g}, max {summary["max"]:.3g}">'
            f'<line x1="{x(summary["min"]):.1f}" x2="{x(summary["max"]):.1f}" y1="9" y2="9" stroke="#555"/>'
            f'<rect x="{x(summary["q1"]):.1f}" y="3" width="{max(1.0, x(summary["q3"]) - x(summary["q1"])):.1f}" height="12" '
            f'fill="#9ecae1" stroke="#555"/><line x1="{x(summary["median"]):.1f}" x2="{x(summary["median"]):.1f}" y1="3" '
            f'y2="15" stroke="#111" stroke-width="2"/></svg>')


def _card(i: int, c: ClassFindings, findings: Findings, pic: Callable[[int], str], sink: PictureSink,
          ranges: dict[str, tuple[float, float]]) -> str:
    kinds = " ".join(s.kind for s in c.flagged)
    badges = "".join(f'<span class="badge">{escape(KINDS[s.kind])}</span>' for s in c.flagged)
    truth = findings.truth.get(c.label)
    acc = f"; accuracy on true '{escape(c.label)}': {truth['accuracy']:.0%} of {truth['images']}" if truth else ""
    out = [(f'<section class="card{" flagged" if c.flagged else ""}" id="class-{i}" data-class="{escape(c.label)}" '
            f'data-flags="{kinds}" data-images="{c.images}" data-score="{c.mean_score:.6f}" data-nflags="{len(c.flagged)}">'),
           f'<h3>{escape(c.label)}{badges}</h3>',
           f'<p class="muted">{c.images} image(s) explained as this class; mean score {c.mean_score:.3f}{acc}</p>',
           '<div class="row">',
           (f'<figure><img alt="mean map" src="{sink.add(map_png(c.mean_map), "png")}"><figcaption>Mean map, every map '
            "scaled 0 to 1 and aligned on the model's square input</figcaption></figure>"),
           (f'<figure><img alt="top evidence frequency" src="{sink.add(map_png(c.top_frequency, fixed_range=True), "png")}">'
            f"<figcaption>How often each place is in a map's top {TOP_FRACTION:.0%} (dark: never, red: in every map)"
            "</figcaption></figure>"),
           '<table><tr><th>region</th><th class="n">share of evidence</th><th class="n">share of image</th></tr>']
    for name, v in c.spread.items():
        out.append(f'<tr><td>{name}</td><td class="n">{v["share"]:.0%}</td><td class="n">{v["chance"]:.0%}</td></tr>')
    out.append("</table></div><ul class=\"signals\">")
    for s in c.signals:
        mark = '<span class="flag">FLAGGED</span> ' if s.flagged else ""
        out.append(f'<li class="{"flagged" if s.flagged else "ok"}" data-kind="{s.kind}">{mark}<b>{escape(KINDS[s.kind])}</b>: '
                   f"{escape(s.sentence)}</li>")
    out.append("</ul>")
    out += [f'<p class="muted">{escape(n)}</p>' for n in c.notes]
    worst = list(dict.fromkeys(i for s in c.flagged for i in s.worst_ids))  # one set for all flags
    sections = ([("worst examples of the flags", worst)] if worst else []) + [(w, ids) for w, ids in c.examples.items() if ids]
    out.append('<h4>Examples</h4><div class="example-sets">')
    for why, ids in sections:
        out.append(f'<div class="examples"><h5>{escape(why)}</h5>')
        out += [_example(findings.images[j], pic(j), findings, f"{findings.images[j].score:.3f} {Path(findings.images[j].path).name}")
                for j in ids]
        out.append("</div>")
    out.append("</div>")
    if c.groups:
        out.append(_groups(i, c, findings, pic, sink))
    if c.metrics:
        out.append('<h4>Faithfulness</h4><table><tr><th>metric</th><th class="n">n</th><th class="n">median</th>'
                   "<th>distribution (same scale across classes)</th></tr>")
        for name, dist in c.metrics.items():
            out.append(f'<tr><td>{escape(name)}</td><td class="n">{dist["n"]}</td><td class="n">{dist["median"]:.3f}</td>'
                       f"<td>{_box_plot(dist, *ranges[name])}</td></tr>")
        out.append("</table>")
    out.append("</section>")
    return "\n".join(out)


def _groups(i: int, c: ClassFindings, findings: Findings, pic: Callable[[int], str], sink: PictureSink) -> str:
    """The class's SpRAy groups: share, mean map, sentence, examples, and a link that shows the group's rows in the table."""
    out = [f"<h4>Groups of maps that look alike ({len(c.groups)})</h4>",
           '<p class="muted">Spectral clustering of this class\'s maps (SpRAy); the eigengap chose the number of groups. '
           "A group is flagged when its evidence sits where the rest of the class's does not.</p>", '<div class="groups">']
    for g in c.groups:
        shown = g.members[:group_examples(g)]
        out += [f'<div class="group{" flagged" if g.flagged else ""}" id="class-{i}-group-{g.index}">',
                (f'<figure><img alt="mean map of group {g.index + 1}" src="{sink.add(map_png(g.mean_map, 96), "png")}">'
                 f"<figcaption>group {g.index + 1}: {g.size} map(s), {g.share:.0%} of the class; its mean map</figcaption></figure>"),
                "<div>" + ('<span class="flag">FLAGGED</span> ' if g.flagged else "") + f"<p>{escape(g.sentence)}</p>",
                (f'<p><a href="#images" class="group-link" data-option="{i}-{g.index}">show its {g.size} image(s) in the '
                 "table of all images</a></p>"),
                '<div class="examples">']
        out += [_example(findings.images[j], pic(j), findings, Path(findings.images[j].path).name) for j in shown]
        out.append("</div></div></div>")
    out.append("</div>")
    return "\n".join(out)


def group_examples(g: Group) -> int:
    """How many of a group's members the page shows as overlays: more for a flagged group."""
    return 3 if g.flagged else 2


def _run(f: Findings) -> str:
    r = f.run
    rows = [("store", r.store), ("model", r.model), ("method", r.method),
            ("parameters", json.dumps(r.params, sort_keys=True)), ("target requested", r.request),
            ("seed", "none (the method is deterministic)" if r.seed is None else str(r.seed)),
            ("images", f"{r.images}: {r.done} explained, {r.failed} failed"),
            ("forward passes", f"{r.forward_passes:,}"), ("time per image, added up", f"{r.seconds:.1f} s (images explained at once overlap, so this exceeds the run's wall time)"),
            ("metrics in the store", ", ".join(r.metrics) or "none"), ("made with", f"patchlens {r.patchlens_version}")]
    if r.other_runs:
        rows.append(("other runs in the store (not in this report)", "; ".join(r.other_runs)))
    out = ["<table>"] + [f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows] + ["</table>"]
    if r.failures:
        out.append('<h3>Failures</h3><table><tr><th class="n">images</th><th>reason</th><th>first of them</th></tr>')
        out += [f'<tr><td class="n">{x["count"]}</td><td>{escape(x["reason"])}</td><td>{escape(", ".join(x["paths"][:3]))}</td></tr>'
                for x in r.failures]
        out.append("</table>")
    return "\n".join(out)


def _truth(f: Findings) -> str:
    if not f.truth:
        return "<p class=\"muted\">The source gives no true labels (or the maps do not explain the top-1 class).</p>"
    predicted = sorted({p for row in f.confusion.values() for p in row})
    out = ['<table><tr><th>true \\ explained</th><th class="n">images</th><th class="n">accuracy</th>']
    out += [f'<th class="n">{escape(p)}</th>' for p in predicted] + ["</tr>"]
    for t, v in f.truth.items():
        cells = "".join(f'<td class="n">{f.confusion.get(t, {}).get(p, "") or ""}</td>' for p in predicted)
        out.append(f'<tr><th>{escape(t)}</th><td class="n">{v["images"]}</td><td class="n">{v["accuracy"]:.0%}</td>{cells}</tr>')
    return "\n".join(out + ["</table>"])


#: columns of the table of all images: (heading, key in each row of the embedded data, numeric)
IMAGE_COLUMNS = [("image", "name", False), ("class", "label", False), ("true class", "true", False), ("score", "score", True),
                 ("outside object", "outside", True), ("corners", "corners", True), ("border", "border", True),
                 ("centre", "centre", True), ("typicality", "typicality", True), ("group", "group", True),
                 ("worst example of", "worst", False)]


def _images(f: Findings, pictured: set[int]) -> str:
    """The table of all images: its rows travel as JSON and the script draws a page of them at a time.

    10,000 rows as HTML would make the browser lay out 10,000 rows before it
    shows anything, and again on every filter; as data they cost one parse.
    """
    flags = {c.label: " ".join(s.kind for s in c.flagged) for c in f.classes}
    rows = [{"id": m.id, "path": m.path, "name": Path(m.path).name, "label": m.label, "true": m.true_label or "",
             "score": round(m.score, 4), "outside": None if m.outside is None else round(m.outside, 4),
             "corners": round(m.corners, 4), "border": round(m.border, 4), "centre": round(m.centre, 4),
             "typicality": round(m.typicality, 3), "group": None if m.group is None else m.group + 1,
             "worst": ", ".join(KINDS[k] for k in m.flags), "flags": flags[m.label], "pic": m.id in pictured}
            for m in f.images]
    data = json.dumps({"columns": [[k, n] for _, k, n in IMAGE_COLUMNS], "rows": rows}, separators=(",", ":"))
    # every "<" as \u003c: "</script>" in a path would end the element, and "<!--<script" would make the
    # parser swallow the rest of the page, the page's own script with it (issue 26)
    data = data.replace("<", "\\u003c")
    head = "".join(f'<th class="{"n" if n else ""}" data-key="{k}">{escape(h)}</th>' for h, k, n in IMAGE_COLUMNS)
    return (f'<table id="image-table"><thead><tr>{head}</tr></thead><tbody></tbody></table>'
            '<p><button type="button" id="more" hidden>show more</button> <span class="muted" id="shown"></span></p>'
            "<noscript><p>The table of all images needs JavaScript; findings.json holds the same rows.</p></noscript>"
            f'<script id="image-data" type="application/json">{data}</script>')


def pictured_ids(findings: Findings) -> list[int]:
    """The images the page shows as overlays: each class's examples, its groups' first members, its worst cases."""
    ids: dict[int, None] = {}
    for c in findings.classes:
        for s in c.flagged:
            ids.update((i, None) for i in s.worst_ids)
        for chosen in c.examples.values():
            ids.update((j, None) for j in chosen)
        for g in c.groups:
            ids.update((j, None) for j in g.members[:group_examples(g)])
    return list(ids)


def render_page(findings: Findings, pictures: dict[int, str], sink: PictureSink) -> str:
    """The whole page; ``pictures[id]`` is the ``src`` of an image's overlay (see :func:`pictured_ids`)."""
    f, r = findings, findings.run
    pic, pictured = pictures.__getitem__, set(pictures)
    flagged = f.flagged
    index = {c.label: i for i, c in enumerate(f.classes)}
    anchor = lambda s: f"class-{index[s.label]}" + ("" if s.group is None else f"-group-{s.group}")  # noqa: E731
    first = ["<ul>"] + [f'<li><a href="#{anchor(s)}"><b>{escape(s.label)}</b></a> — '
                        f'<span class="flag">{escape(KINDS[s.kind])}</span>: {escape(s.sentence)}</li>' for s in flagged] + ["</ul>"]
    if not flagged:
        first = ["<p>No shortcut signal crossed its threshold. The measurements per class are below.</p>"]
    metric_values = [(n, s) for c in f.classes for n, s in c.metrics.items()]
    ranges = {n: (min(s["min"] for m, s in metric_values if m == n), max(s["max"] for m, s in metric_values if m == n))
              for n, _ in metric_values}
    cards = [_card(i, c, f, pic, sink, ranges) for i, c in enumerate(f.classes)]
    class_options = "".join(f'<option value="{escape(c.label)}">{escape(c.label)} ({c.images})</option>' for c in f.classes)
    flag_options = "".join(f'<option value="{k}">{escape(v)}</option>' for k, v in KINDS.items())
    group_options = "".join(
        f'<option value="{i}-{g.index}" data-class="{escape(c.label)}" data-group="{g.index + 1}">{escape(c.label)}: group '
        f'{g.index + 1} ({g.size}){" flagged" if g.flagged else ""}</option>' for i, c in enumerate(f.classes) for g in c.groups)
    notes = "".join(f'<p class="muted">{escape(n)}</p>' for n in f.notes)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>patchlens report: {escape(Path(r.store).name)}</title><style>{CSS}</style></head>
<body>
<header><h1>Dataset audit: where {escape(r.model)} looks</h1>
<p class="lead">{r.done} image(s) of <code>{escape(r.store)}</code> explained with {escape(r.method)} ({escape(r.request)});
{len(f.classes)} class(es); {len(flagged)} shortcut signal(s) flagged. Made {stamp} by patchlens {escape(__version__)}.</p></header>
<section id="first"><h2>Look at these first</h2>{"".join(first)}{notes}
<p class="muted">A flag asks a person to look; it does not prove a shortcut. Every measurement uses each map's top
{TOP_FRACTION:.0%} cells after aligning the map on the model's square input.</p></section>
<section id="run"><h2>The run</h2>{_run(f)}</section>
<nav id="controls"><label>Class <select id="f-class"><option value="">all</option>{class_options}</select></label>
<label>Flag <select id="f-flag"><option value="">show all</option><option value="any">any flag</option>{flag_options}</select></label>
<label>Group <select id="f-group"><option value="">all</option>{group_options}</select></label>
<label>Sort classes by <select id="sort"><option value="class">name</option><option value="nflags">flags</option>
<option value="images">images</option><option value="score">mean score</option></select></label>
<label>Image path <input id="f-text" type="search" placeholder="filter the image table"></label>
<span class="muted"><span id="class-count">{len(f.classes)}</span> class(es), <span id="image-count">{len(f.images)}</span> image(s) shown</span></nav>
<section id="classes"><h2>Classes</h2>{"".join(cards) or '<p>No image was explained successfully.</p>'}</section>
<section id="truth"><h2>True classes</h2>{_truth(f)}</section>
<section id="images"><h2>All images</h2><p class="muted">Click a column to sort; rows with an example open its overlay.</p>
{_images(f, pictured)}</section>
<div id="viewer" hidden><figure><img alt="overlay, large"><figcaption></figcaption>
<button type="button">close (Esc)</button></figure></div>
<script>{JS}</script>
</body></html>
"""
