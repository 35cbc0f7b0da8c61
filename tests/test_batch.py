"""Batch mode: the store survives kill -9, resumes without duplicates, records bad files, stays flat in memory."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import patchlens
from batch_fixtures import make_images, same_store, tiny_model
from patchlens.batch import StoreError, Summary, open_store, run_batch
from patchlens.batch.store import Store
from patchlens.cli import main
from patchlens.examples import example_path

RISE = {"n_masks": 12, "grid": 3}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_store_holds_what_explain_returns(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    paths = make_images(folder / "nested", 3)
    photo = folder / "chelsea.png"
    photo.write_bytes(example_path("chelsea").read_bytes())
    model = patchlens.load_model(tiny_model(), input_size=64)
    summary = run_batch(str(folder), str(tmp_path / "store"), model=model, method="rise", target="topk:2",
                        progress=False, chunk_size=2, **RISE)
    assert (summary.done, summary.failed, summary.skipped) == (4, 0, 0)
    assert summary.forward_passes == 4 * (RISE["n_masks"] + 1)
    store = open_store(tmp_path / "store")
    m = store.manifest
    assert len(m) == 8 and (m.groupby("path").size() == 2).all()  # one row per (image, target, method)
    for path in [*paths, photo]:
        rows = m[m.path == str(path)]
        ref = patchlens.explain(model, str(path), "rise", target="topk:2", **RISE)
        assert list(rows.target) == sorted(e.target for e in ref)
        assert rows.sha256.iloc[0] == hashlib.sha256(path.read_bytes()).hexdigest()
        for (_, row), exp in zip(rows.iterrows(), sorted(ref, key=lambda e: e.target)):
            assert store.map(row).shape == exp.saliency.shape == (int(row.height), int(row.width))
            np.testing.assert_array_equal(store.map(row), exp.saliency.astype(np.float16).astype(np.float32))
            assert row.score == pytest.approx(exp.score) and row.forward_passes == RISE["n_masks"] + 1
    # plain Parquet: pandas reads the folder directly, and the finished run left one deduplicated part
    assert len(pd.read_parquet(tmp_path / "store" / "manifest")) == 8
    assert store.explanation(0).params == patchlens.methods.make_method("rise", **RISE).param_values()


def test_metrics_are_those_of_evaluate(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "src", 2)
    model = patchlens.load_model(tiny_model(), input_size=32)
    run_batch(str(tmp_path / "src"), str(tmp_path / "s"), model=model, metrics=["deletion", "sparseness"], progress=False, **RISE)
    m = open_store(tmp_path / "s").manifest
    for path, (_, row) in zip(paths, m.iterrows()):
        exp = patchlens.explain(model, str(path), "rise", **RISE)
        ref = patchlens.evaluate(model, None, [exp], ["deletion", "sparseness"])[0]
        assert row.metric_deletion == pytest.approx(ref["deletion"], abs=1e-9)
        assert row.metric_sparseness == pytest.approx(ref["sparseness"], abs=1e-9)
    with pytest.raises(patchlens.PatchlensError, match="ground-truth region"):
        run_batch(str(tmp_path / "src"), str(tmp_path / "s2"), model=model, metrics=["pointing_game"], progress=False)


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_uninterrupted_result(tmp_path: Path, tiny_spec: str) -> None:
    make_images(tmp_path / "src", 20)
    cmd = ["batch", str(tmp_path / "src"), "--model", tiny_spec, "--device", "cpu", "--n-masks", "8", "--grid", "2",
           "--chunk-size", "1", "--quiet"]
    store = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "patchlens", *cmd, "--out", str(store)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 45
        while len(list((store / "manifest").glob("part-*.parquet"))) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    partial = open_store(store).manifest
    assert 3 <= len(partial) < 20  # killed part-way, and what was written is readable
    assert main([*cmd, "--out", str(store), "--resume"]) == 0
    assert main([*cmd, "--out", str(tmp_path / "whole")]) == 0
    final = open_store(store).manifest
    assert len(final) == 20 and final.path.is_unique
    same_store(store, tmp_path / "whole")
    # resuming a finished store does nothing and adds no rows
    assert main([*cmd, "--out", str(store), "--resume"]) == 0
    assert len(pd.read_parquet(store / "manifest")) == 20


def test_bad_files_are_recorded_and_retried(tmp_path: Path, tiny_spec: str) -> None:
    folder = tmp_path / "src"
    good = make_images(folder, 3)
    good[0].rename(folder / "broken.png")
    good_bytes = (folder / "broken.png").read_bytes()
    (folder / "broken.png").write_bytes(good_bytes[: len(good_bytes) // 2])  # truncated PNG
    (folder / "notes.jpg").write_text("not a picture")
    (folder / "empty.png").write_bytes(b"")
    (folder / "readme.md").write_text("ignored: not an image extension")
    cmd = ["batch", str(folder), "--model", tiny_spec, "--device", "cpu", "--n-masks", "8", "--quiet", "--out", str(tmp_path / "s")]
    assert main(cmd) == 1
    m = open_store(tmp_path / "s").manifest.set_index("path")
    assert len(m) == 5 and set(m.status) == {"ok", "failed"}
    reasons = m.error.dropna().to_dict()
    assert "truncated" in reasons[str(folder / "broken.png")]
    assert "not an image" in reasons[str(folder / "notes.jpg")]
    assert "empty" in reasons[str(folder / "empty.png")]
    assert m.loc[str(folder / "notes.jpg"), "sha256"] == hashlib.sha256(b"not a picture").hexdigest()
    assert main([*cmd, "--resume"]) == 0  # failed images are skipped on a plain resume
    (folder / "broken.png").write_bytes(good_bytes)  # the user fixes one file
    assert main([*cmd, "--retry-failed"]) == 1  # two are still bad
    m = open_store(tmp_path / "s").manifest
    assert len(m) == 5 and m.path.is_unique
    assert m.set_index("path").status.to_dict()[str(folder / "broken.png")] == "ok"
    assert sorted(open_store(tmp_path / "s").failed.path) == [str(folder / "empty.png"), str(folder / "notes.jpg")]


def test_target_label_from_folders_and_lists(tmp_path: Path) -> None:
    for cls in ("1", "3"):
        make_images(tmp_path / "tree" / cls, 2, seed=int(cls))
    model = patchlens.load_model(tiny_model(), input_size=32, labels=["ant", "bee", "cat", "dog", "eel"])
    run_batch(str(tmp_path / "tree"), str(tmp_path / "s1"), model=model, target="label", progress=False, **RISE)
    m = open_store(tmp_path / "s1").manifest
    assert list(m.target) == [1, 1, 3, 3] and list(m.true_label) == ["1", "1", "3", "3"]
    images = make_images(tmp_path / "flat", 3)
    pd.DataFrame({"path": [p.name for p in images], "label": ["dog", "ant", "nope"]}).to_csv(tmp_path / "flat" / "list.csv", index=False)
    s = run_batch(str(tmp_path / "flat" / "list.csv"), str(tmp_path / "s2"), model=model, target="label", progress=False, **RISE)
    m = open_store(tmp_path / "s2").manifest
    assert (s.done, s.failed) == (2, 1)
    assert list(m.label[:2]) == ["dog", "ant"] and list(m.target[:2]) == [3, 0]
    assert m.status[2] == "failed" and pd.isna(m.target[2]) and "'nope': not a class" in m.error[2]
    with pytest.raises(patchlens.TargetError, match="needs labels"):
        run_batch(str(tmp_path / "flat"), str(tmp_path / "s3"), model=model, target="label", progress=False)


def test_a_store_is_never_mixed_or_clobbered(tmp_path: Path) -> None:
    make_images(tmp_path / "src", 2)
    model = patchlens.load_model(tiny_model(), input_size=32)
    run = lambda **kw: run_batch(str(tmp_path / "src"), str(tmp_path / "s"), model=model, progress=False, **kw)
    run(**RISE)
    with pytest.raises(StoreError, match="--resume"):
        run(**RISE)
    with pytest.raises(StoreError, match="other parameters"):
        run(resume=True, n_masks=13)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="not a patchlens batch store"):
        run_batch(str(tmp_path / "src"), str(tmp_path / "other"), model=model, progress=False)
    with pytest.raises(patchlens.ModelError, match="spec string"):
        run(backend="ray", resume=True, **RISE)


def test_reads_ignore_debris_of_a_killed_writer(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "s")
    row = lambda p: {"path": p, "request": "top1", "method": "rise", "status": "ok", "target": 1, "height": 2, "width": 2}
    store.write_part([row("a"), row("b")], [np.ones((2, 2)), np.zeros((2, 2))])
    store.write_part([{**row("c"), "status": "failed", "error": "bad"}], [None])
    # a kill between the map shard and its manifest part, and a kill mid-write
    (store.maps_dir / "part-000002.npz").write_bytes(b"orphan")
    (store.manifest_dir / ".part-000002.parquet.tmp-999").write_bytes(b"half a file")
    assert list(store.read().path) == ["a", "b", "c"]
    # a kill during compaction: the compacted part and the old parts side by side
    before = {p: p.read_bytes() for _, p in store.parts()}
    store.compact()
    for p, data in before.items():
        p.write_bytes(data)
    assert list(store.read().path) == ["a", "b", "c"]
    assert len(pd.read_parquet(store.manifest_dir)) == 6  # raw readers do see the duplicates until compaction ...
    store.compact()
    assert len(pd.read_parquet(store.manifest_dir)) == 3  # ... which every finished run does
    with open_store(tmp_path / "s") as s:
        np.testing.assert_array_equal(s.map(0), np.ones((2, 2), np.float32))


def rss() -> int:
    """Resident memory of this process in bytes (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads RSS from /proc")
def test_memory_stays_flat(tmp_path: Path) -> None:
    make_images(tmp_path / "src", 300, size=24)
    model = patchlens.load_model(tiny_model(), input_size=16)
    seen: dict[int, int] = {}

    def record(summary: Summary) -> None:
        n = summary.done + summary.failed
        if n in (100, 300):
            seen[n] = rss()

    summary = run_batch(str(tmp_path / "src"), str(tmp_path / "s"), model=model, progress=False, chunk_size=16,
                        on_image=record, n_masks=2, grid=2)
    assert summary.done == 300
    growth = (seen[300] - seen[100]) / 200
    print(f"RSS {seen[100] / 1e6:.1f} MB after 100 images, {seen[300] / 1e6:.1f} MB after 300")
    assert growth < 20_000, f"RSS grew by {growth / 1000:.1f} kB per image"  # a kept 24 px photo + map is ~4 kB


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_the_local_backend_runs_the_runtime_asked_for(tmp_path: Path, runtime: str) -> None:
    # run_batch once ignored runtime= on the local backend (only the CLI, which loads the model itself, honoured it)
    pytest.importorskip("onnxruntime")
    make_images(tmp_path / "src", 1)
    run_batch(str(tmp_path / "src"), str(tmp_path / "s"), model=tiny_model(), runtime=runtime, progress=False, **RISE)
    extras = json.loads(open_store(tmp_path / "s").manifest.extras[0])
    assert extras["runtime"]["runtime"] == ("onnxruntime" if runtime == "onnx" else "torch")


def test_a_store_from_before_a_parameter_existed_resumes_as_what_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # RISE gained `estimator` (default control_variates); older stores were made with the plain estimator
    from patchlens.methods.rise import Rise

    make_images(tmp_path / "src", 3)
    model = patchlens.load_model(tiny_model(), input_size=32)
    today = Rise.param_values
    with monkeypatch.context() as m:  # write the store as a version without the parameter did
        m.setattr(Rise, "param_values", lambda self: {k: v for k, v in today(self).items() if k != "estimator"})
        run_batch([str(tmp_path / "src" / "img000.png")], str(tmp_path / "s"),
                  model=model, progress=False, **RISE)
    assert "estimator" not in json.loads(open_store(tmp_path / "s").manifest.params[0])
    assert open_store(tmp_path / "s").explanation(0).params["estimator"] == "conditional_mean"
    with pytest.raises(StoreError, match="conditional_mean"):  # asking for today's default would mix two estimators
        run_batch(str(tmp_path / "src"), str(tmp_path / "s"), model=model, resume=True, progress=False,
                  estimator="control_variates", **RISE)
    # left out, the estimator is the one the run started with (its request), not today's default
    summary = run_batch(str(tmp_path / "src"), str(tmp_path / "s"), model=model, resume=True, progress=False, **RISE)
    assert (summary.done, summary.skipped) == (2, 1)
    assert {json.loads(p).get("estimator") for p in open_store(tmp_path / "s").manifest.params} == {None, "conditional_mean"}


def test_resume_after_a_kill_before_the_first_part_repeats_the_runs_parameters(tmp_path: Path, tiny_spec: str, capsys) -> None:
    """Killed before any part was written, the store held no rows, and --resume took today's defaults."""
    make_images(tmp_path / "src", 2)
    store = tmp_path / "s"
    # a run that started and wrote nothing yet: only its request, as after a kill -9 before the first part
    run_batch([], str(store), model=tiny_spec, method="rise", seed=3, n_masks=40, grid=3, converge=0.0, progress=False)
    cmd = ["batch", str(tmp_path / "src"), "--out", str(store), "--model", tiny_spec, "--quiet", "--resume"]
    assert main([*cmd, "--n-masks", "50"]) == 2  # a real conflict is refused, in one line
    assert "started with n_masks=40; other parameters (n_masks=50)" in capsys.readouterr().err
    assert main([*cmd, "--n-masks", "40"]) == 0  # the same value again is no conflict; --method and --seed come from the store
    m = open_store(store).manifest
    params = json.loads(m.params[0])
    assert m.method[0] == "rise" and (params["n_masks"], params["grid"], params["converge"]) == (40, 3, 0.0)
    assert list(m.seed) == [3, 3]


def test_folders_that_are_no_class_are_named_before_the_run(tmp_path: Path, capsys) -> None:
    for name in ("1", "dog", "dgo", "misc"):
        make_images(tmp_path / "tree" / name, 2 if name != "misc" else 3, seed=len(name))
    model = patchlens.load_model(tiny_model(), input_size=32, labels=["ant", "bee", "cat", "dog", "eel"])
    s = run_batch(str(tmp_path / "tree"), str(tmp_path / "s"), model=model, target="label", progress=False, **RISE)
    err = capsys.readouterr().err
    assert "2 of 4 labels (ImageFolder folders) are not classes of" in err
    assert "'misc' (3 images), 'dgo' (2 images)" in err and (s.done, s.failed) == (4, 5)


def test_the_failure_summary_groups_the_first_reasons(tmp_path: Path, tiny_spec: str, capsys) -> None:
    folder = tmp_path / "src"
    make_images(folder, 2)
    for i in range(3):
        (folder / f"notes{i}.jpg").write_text("not a picture")
    (folder / "empty.png").write_bytes(b"")
    cmd = ["batch", str(folder), "--out", str(tmp_path / "s"), "--model", tiny_spec, "--quiet", "--method", "occlusion",
           "--window", "16", "--stride", "16"]
    assert main(cmd) == 1
    err = capsys.readouterr().err
    lines = [line.strip() for line in err.splitlines()]
    assert "patchlens: 4 image(s) failed this run; the store's failures by reason:" in lines
    first = next(i for i, line in enumerate(lines) if line.startswith("3 x "))
    assert "notes0.jpg" in lines[first] and lines[first + 1].startswith("1 x ") and "empty.png" in lines[first + 1]
