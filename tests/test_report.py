"""The dataset audit (``patchlens report``): a planted shortcut is found, regions come from CSV/Parquet, odd stores work."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import patchlens
from patchlens.audit import ReportError, report
from patchlens.audit.clusters import kmeans
from patchlens.audit.maps import align, object_mask, peak, top_evidence
from patchlens.batch import Item, SourceError, open_store, read_source, run_batch
from patchlens.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_fixtures import OCCLUSION, SIZE, planted_dataset, tag_classifier, write_csv

NETWORK = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """The planted-shortcut dataset explained into a store, from a CSV list with boxes."""
    root = tmp_path_factory.mktemp("planted")
    rows = planted_dataset(root)
    run_batch(str(write_csv(root / "list.csv", rows)), str(root / "store"), model=tag_classifier(), progress=False, **OCCLUSION)
    return root, rows


def flagged(findings, label: str) -> set[str]:
    return {s.kind for c in findings.classes if c.label == label for s in c.flagged}


def test_planted_shortcut_is_flagged_and_the_honest_class_is_not(planted, tmp_path: Path) -> None:
    root, _ = planted
    page = tmp_path / "audit.html"
    findings = patchlens.report(root / "store", page)
    assert {"outside_object", "fixed_position"} <= flagged(findings, "cat")
    assert flagged(findings, "coffee") == set()
    cat = next(c for c in findings.classes if c.label == "cat")
    fixed = next(s for s in cat.signals if s.kind == "fixed_position")
    assert fixed.where is not None and max(fixed.where) < 0.2  # the tag sits at 4..14 px of 96
    assert findings.truth["cat"]["accuracy"] == 1.0 and findings.confusion["coffee"] == {"coffee": 8}
    # every signal says in words what was measured, with its own number in it
    for c in findings.classes:
        for s in c.signals:
            assert f"{s.value:.0%}" in s.sentence and c.label in s.sentence
    html = page.read_text()
    assert not NETWORK.search(html), "the page must not load anything from the network"
    assert "same place in many images" in html and html.count('class="ex"') >= 4
    data = json.loads((tmp_path / "findings.json").read_text())
    assert {(f["label"], f["kind"]) for f in data["flagged"]} >= {("cat", "outside_object"), ("cat", "fixed_position")}
    assert all(f["label"] == "cat" for f in data["flagged"])
    assert len(data["images"]) == 16 and all(i["outside"] is not None for i in data["images"])


def test_findings_without_files_and_the_same_from_an_open_store(planted) -> None:
    root, _ = planted
    with open_store(root / "store") as store:
        a = report(store)
    b = report(str(root / "store"))
    assert [(s.label, s.kind, s.value) for s in a.flagged] == [(s.label, s.kind, s.value) for s in b.flagged]
    assert not list(root.glob("*.html"))


def test_mask_column_in_parquet_agrees_with_boxes_and_rows_without_regions_are_reported(planted, tmp_path: Path) -> None:
    """Masks drawn as the boxes give the same outside shares; rows with no region are kept, just not measured."""
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    root, rows = planted
    table = []
    for i, r in enumerate(rows):
        entry = {"path": str(root / r["path"]), "label": r["label"], "mask": None}
        if i % 4 != 3:  # every fourth image has no mask
            mask = np.zeros((SIZE, SIZE), np.uint8)
            mask[r["y0"]:r["y1"], r["x0"]:r["x1"]] = 255
            Image.fromarray(mask).save(tmp_path / f"mask{i}.png")
            entry["mask"] = f"mask{i}.png"  # relative to the list's folder
        table.append(entry)
    pq.write_table(pa.Table.from_pylist(table), tmp_path / "list.parquet")
    items = read_source(str(tmp_path / "list.parquet"))
    assert items[0].mask == str(tmp_path / "mask0.png") and items[3].mask is None and items[0].box is None
    run_batch(str(tmp_path / "list.parquet"), str(tmp_path / "store"), model=tag_classifier(), progress=False, **OCCLUSION)
    by_mask = {m.path: m.outside for m in report(tmp_path / "store").images}
    by_box = {m.path: m.outside for m in report(root / "store").images}
    assert sum(v is None for v in by_mask.values()) == 4
    for path, outside in by_mask.items():
        if outside is not None:
            assert outside == pytest.approx(by_box[path])
    cat = next(c for c in report(tmp_path / "store").classes if c.label == "cat")
    outside = next(s for s in cat.signals if s.kind == "outside_object")
    assert outside.flagged and outside.images == 6 and "6 of 8" in outside.sentence


def test_box_columns_from_csv(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "list.csv").write_text("path,label,x0,y0,x1,y1\na.png,cat,1,2,30.5,40\nb.png,dog,,,,\n")
    a, b = read_source(str(tmp_path / "list.csv"))
    assert a.box == (1.0, 2.0, 30.5, 40.0) and b.box is None and b.label == "dog"


@pytest.mark.parametrize(
    "text, words",
    [
        ("path,x0,y0,x1\na.png,1,2,3\n", "missing y1"),
        ("path,x0,y0,x1,y1\na.png,1,2,three,4\n", "row 2: box x0,y0,x1,y1 = 1,2,three,4 is not four numbers"),
        ("path,x0,y0,x1,y1\na.png,1,2,3,4\nb.png,5,5,2,9\n", "row 3: box x0,y0,x1,y1 = 5,5,2,9 is empty"),
        ("path,mask\na.png,nothere.png\n", "row 2: mask"),
    ],
)
def test_bad_region_columns_are_one_line_errors(tmp_path: Path, text: str, words: str) -> None:
    (tmp_path / "list.csv").write_text(text)
    with pytest.raises(SourceError, match=re.escape(words)) as err:
        read_source(str(tmp_path / "list.csv"))
    assert "\n" not in str(err.value) and "list.csv" in str(err.value)


def test_store_with_failures_reports_them_with_reasons(planted, tmp_path: Path) -> None:
    root, rows = planted
    (tmp_path / "broken.png").write_bytes(b"not a png")
    paths = [str(root / r["path"]) for r in rows[:5]] + [str(tmp_path / "broken.png"), str(tmp_path / "gone.png")]
    run_batch(paths, str(tmp_path / "store"), model=tag_classifier(), progress=False, **OCCLUSION)
    findings = report(tmp_path / "store", tmp_path / "r.html")
    assert (findings.run.done, findings.run.failed, findings.run.images) == (5, 2, 7)
    assert sum(f["count"] for f in findings.run.failures) == 2
    html = (tmp_path / "r.html").read_text()
    assert "Failures" in html and "broken.png" in html
    assert {m.path for m in findings.images} == set(paths[:5])


def test_store_with_one_image(planted, tmp_path: Path) -> None:
    root, rows = planted
    run_batch([str(root / rows[0]["path"])], str(tmp_path / "store"), model=tag_classifier(), progress=False, **OCCLUSION)
    findings = report(tmp_path / "store", tmp_path / "one.html")
    (cls,) = findings.classes
    assert cls.images == 1 and not cls.groups
    assert all(s.kind != "fixed_position" for s in cls.signals)
    assert any("too few" in n for n in cls.notes)
    assert json.loads((tmp_path / "findings.json").read_text())["run"]["done"] == 1


def test_store_where_everything_failed(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"junk")
    run_batch([str(tmp_path / "bad.png")], str(tmp_path / "store"), model=tag_classifier(), progress=False, **OCCLUSION)
    findings = report(tmp_path / "store", tmp_path / "r.html")
    assert findings.classes == [] and findings.run.failed == 1
    assert "No image was explained successfully" in (tmp_path / "r.html").read_text()


def test_several_runs_in_a_store_must_be_chosen(planted, tmp_path: Path) -> None:
    root, rows = planted
    paths = [Item(str(root / r["path"]), str(r["label"])) for r in rows[:3]]
    store = tmp_path / "store"
    run_batch(paths, str(store), model=tag_classifier(), progress=False, **OCCLUSION)
    run_batch(paths, str(store), model=tag_classifier(), progress=False, resume=True, method="occlusion",
              window=16, stride=8, target="label")
    with pytest.raises(ReportError, match="choose one: --method occlusion --request label, --method occlusion --request top1"):
        report(store)
    assert report(store, request="label").run.request == "label"
    with pytest.raises(ReportError, match="holds no results for --method rise; it holds: --method occlusion"):
        report(store, method="rise")
    assert report(store, request="top1").run.other_runs == ["occlusion / label"]


def test_cli_report_and_its_errors(planted, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = planted
    assert main(["report", str(root / "store"), "--out", str(tmp_path / "a.html"), "--pictures", "folder"]) == 0
    out = capsys.readouterr().out
    assert "2 class(es), 16 image(s)" in out and "cat: In 8 of 8 images" in out
    pictures = list((tmp_path / "a_files").glob("*"))
    html = (tmp_path / "a.html").read_text()
    assert pictures and all(f'src="a_files/{p.name}"' in html for p in pictures)
    assert not NETWORK.search(html)
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "b.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such store folder" in err
    # a page in folders that do not exist yet gets them, as every --out does; a file in the way is one line
    assert main(["report", str(root / "store"), "--out", str(tmp_path / "a" / "b" / "report.html")]) == 0
    assert (tmp_path / "a" / "b" / "report.html").is_file() and (tmp_path / "a" / "b" / "findings.json").is_file()
    capsys.readouterr()
    (tmp_path / "file").write_text("x")
    assert main(["report", str(root / "store"), "--out", str(tmp_path / "file" / "b.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot make the report's folder" in err


def test_batch_with_report_flag(planted, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``patchlens batch --report`` writes the page into the store; the model is rebuilt from a spec string."""
    root, rows = planted
    model = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(12, 3))
    torch.jit.save(torch.jit.trace(net.eval(), torch.rand(1, 3, 224, 224)), str(model))
    source = write_csv(tmp_path / "list.csv", [{**r, "path": str(root / r["path"])} for r in rows[:4]])
    code = main(["batch", str(source), "--out", str(tmp_path / "store"), "--model", f"torchscript:{model}",
                 "--method", "occlusion", "--window", "112", "--stride", "112", "--quiet", "--report"])
    assert code == 0, capsys.readouterr()
    assert (tmp_path / "store" / "report.html").exists() and (tmp_path / "store" / "findings.json").exists()
    assert "report.html: " in capsys.readouterr().out


def test_top_evidence_ignores_offset_and_scale_and_finds_a_blob() -> None:
    rng = np.random.default_rng(0)
    m = rng.random((64, 64)).astype(np.float32)
    assert top_evidence(m).sum() == round(0.1 * 64 * 64)
    assert np.array_equal(top_evidence(m), top_evidence(3 * m + 7))
    blob = np.zeros((100, 200), np.float32)
    blob[10:30, 150:190] = 1  # right, near the top
    x, y = peak(align(blob))
    assert abs(x - 170 / 200) < 0.06 and abs(y - 20 / 100) < 0.06


def test_object_mask_from_box_covers_its_share_of_the_grid() -> None:
    obj = object_mask(200, 100, (50, 25, 150, 75), None)
    assert obj.mean() == pytest.approx(0.25, abs=0.02)
    assert obj[32, 32] and not obj[2, 2]


def test_kmeans_separates_two_layouts_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    left, right = np.zeros(16), np.zeros(16)
    left[:8], right[8:] = 1, 1
    x = np.vstack([left + 0.05 * rng.standard_normal((7, 16)), right + 0.05 * rng.standard_normal((5, 16))])
    labels, _ = kmeans(x, 2, seed=3)
    assert labels.tolist() == [0] * 7 + [1] * 5  # group 0 is the larger
    again, _ = kmeans(x, 2, seed=3)
    assert np.array_equal(labels, again)


def test_faithfulness_metrics_are_summarised_per_class(planted, tmp_path: Path) -> None:
    root, rows = planted
    paths = [str(root / r["path"]) for r in rows[:2] + rows[8:10]]
    run_batch(paths, str(tmp_path / "store"), model=tag_classifier(), progress=False, metrics=["deletion"], **OCCLUSION)
    findings = report(tmp_path / "store", tmp_path / "m.html")
    manifest = open_store(tmp_path / "store").manifest
    columns = [c for c in manifest.columns if c.startswith("metric_")]
    assert columns and findings.run.metrics == sorted(c[len("metric_"):] for c in columns)
    for c in findings.classes:
        for name, summary in c.metrics.items():
            values = manifest.loc[manifest["label"] == c.label, f"metric_{name}"].astype(float).dropna().to_numpy()
            assert summary["n"] == len(values) == 2
            assert summary["median"] == pytest.approx(np.median(values))
            assert summary["min"] <= summary["q1"] <= summary["median"] <= summary["q3"] <= summary["max"]
    html = (tmp_path / "m.html").read_text()
    assert "<h4>Faithfulness</h4>" in html and html.count('<svg class="box"') == 2 * len(columns)


def test_a_mask_of_the_wrong_size_is_a_one_line_note_not_a_crash(tmp_path: Path) -> None:
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(patchlens.ImageError, match=r"m\.png: mask is 12x10 pixels, its photo 40x30$"):
        object_mask(40, 30, None, str(tmp_path / "m.png"))
    assert object_mask(12, 10, None, str(tmp_path / "m.png")).all()


def _as_an_older_patchlens_wrote_them(store: Path, parts: list[Path]) -> None:
    """Checksum files for rewritten parts, and store.json, in the form the version before issue 26 wrote."""
    import hashlib
    import json

    sums = json.loads((store / "checksums" / "part-000000.json").read_text())
    for part in parts:
        written = {k: v for k, v in sums.items() if k not in ("store", "part")}
        written["manifest"] = hashlib.sha256(part.read_bytes()).hexdigest()
        (store / "checksums" / f"{part.stem}.json").write_text(json.dumps(written))
    info = json.loads((store / "store.json").read_text())
    (store / "store.json").write_text(json.dumps({k: v for k, v in info.items() if k not in ("id", "checksums_from")}))


def test_a_store_written_before_the_region_columns_resumes_compacts_and_reports(planted, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    root, rows = planted
    items = [Item(str(root / r["path"]), str(r["label"]), (r["x0"], r["y0"], r["x1"], r["y1"])) for r in rows[:2] + rows[8:10]]
    store = tmp_path / "store"
    run_batch(items[:2], str(store), model=tag_classifier(), progress=False, **OCCLUSION)
    (part,) = (store / "manifest").glob("part-*.parquet")
    old = pq.read_table(part)
    older = old.drop_columns(["box_x0", "box_y0", "box_x1", "box_y1", "mask_path"])  # as an older patchlens wrote it
    pq.write_table(older, part)
    pq.write_table(older, part.with_name("part-000099.parquet"))  # two old parts: an interrupted old run
    _as_an_older_patchlens_wrote_them(store, [part, part.with_name("part-000099.parquet")])
    run_batch(items[:2], str(store), model=tag_classifier(), progress=False, resume=True, **OCCLUSION)  # only compacts
    run_batch(items, str(store), model=tag_classifier(), progress=False, resume=True, **OCCLUSION)
    assert len(list((store / "manifest").glob("part-*.parquet"))) == 1  # compacted
    manifest = open_store(store).manifest
    assert manifest["box_x0"].isna().sum() == 2 and manifest["box_x1"].notna().sum() == 2
    measured = {m.path: m.outside for m in report(store).images}
    assert sum(v is not None for v in measured.values()) == 2 and len(measured) == 4


def test_a_common_peak_at_the_centre_says_it_may_be_the_object() -> None:
    from patchlens.audit.signals import fixed_position

    centred = fixed_position("dog", ["a", "b", "c"], np.array([[0.5, 0.5], [0.52, 0.5], [0.5, 0.47]]), np.ones(3))
    corner = fixed_position("dog", ["a", "b", "c"], np.array([[0.1, 0.1], [0.12, 0.1], [0.1, 0.07]]), np.ones(3))
    assert centred.flagged and corner.flagged
    assert "may be the object" in centred.sentence and "may be the object" not in corner.sentence
    spread = fixed_position("dog", ["a", "b", "c"], np.array([[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]]), np.ones(3))
    assert not spread.flagged and spread.value == pytest.approx(1 / 3)


def test_signal_sentences_count_maps_in_words_that_read_right():
    import numpy as np

    from patchlens.audit.signals import region_share

    one = region_share("corners", "cat", ["a.png"], np.array([0.6]), 0.17).sentence
    two = region_share("corners", "cat", ["a.png", "b.png"], np.array([0.6, 0.2]), 0.17).sentence
    assert "of the one map explained as 'cat'" in one and "1 maps" not in one
    assert "of the 2 maps explained as 'cat'" in two


def test_two_detections_in_one_image_keep_their_own_flags():
    """A detector's image holds one record per detection, all under one path: flags and worst examples go by record."""
    from patchlens.audit.analysis import _signals
    from patchlens.audit.findings import ImageFinding

    def finding(i: int, path: str, corners: float, peak: tuple[float, float]) -> ImageFinding:
        return ImageFinding(id=i, path=path, label="cup", target=0, score=1.0 - i / 10, true_label=None, correct=None,
                            corners=corners, border=corners, centre=0.0, peak=peak, typicality=0.0)

    # records 0 and 1: two cups in one photo, their evidence in the corners; records 2 and 3: two photos, centred
    members = [finding(0, "two-cups.png", 1.0, (0.05, 0.05)), finding(1, "two-cups.png", 0.9, (0.95, 0.95)),
               finding(2, "a.png", 0.2, (0.5, 0.5)), finding(3, "b.png", 0.1, (0.3, 0.7))]
    extras = {m.id: {"object": None, "area_outside": 0.0} for m in members}
    found, _ = _signals("cup", members, extras)
    corners = next(s for s in found if s.kind == "corners")
    assert corners.flagged and corners.worst_ids[:2] == [0, 1] and corners.worst[:2] == ["two-cups.png"] * 2
    assert members[0].flags == members[1].flags and "corners" in members[0].flags  # each record flagged once, both flagged
    assert members[1].flags.count("corners") == 1
