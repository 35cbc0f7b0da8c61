"""The command line with a remote model: secrets stay secret, a spent budget stops the run cleanly."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import planted_image
from patchlens.cli import main
from patchlens.errors import ModelError
from patchlens.models import load_model
from patchlens.models.remote import HEADERS_ENV
from patchlens.models.remote.server import ModelServer
from remote_fakes import TOKEN, DiesAfter, FakeServer, exact_classifier, logits_responder, oip_responder, send


def photos(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"planted{i}.png"
        Image.fromarray(planted_image(seed=i)).save(path)
        paths.append(str(path))
    return paths


def files_holding(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_a_token_never_appears_in_files_output_logs_or_errors(tmp_path, capsys, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    model = ModelServer(exact_classifier(), port=0, max_batch=8)
    ok = oip_responder(model)

    def echo_on_purpose(handler, method, path, body):
        if "/broken" in path and method == "POST":  # a careless server that quotes the credentials back in its error
            return send(handler, 401, {"error": f"token {handler.headers.get('Authorization')} is not valid"})
        ok(handler, method, path.replace("/broken", "/default"), body)

    images = photos(tmp_path / "in", 2)
    out = tmp_path / "out"
    with FakeServer(echo_on_purpose) as server:
        url = server.base + "/v2/models/default"
        header = ["--header", f"Authorization: Bearer {TOKEN}", "--header", f"X-Api-Key: {TOKEN}-2"]
        common = ["--method", "rise", "--n-masks", "20", "--device", "cpu"]
        assert main(["explain", *images, "--model", url, *header, *common, "--out", str(out / "explain")]) == 0
        assert main(["compare", images[0], "--model", url, *header, "--methods", "rise,occlusion", "--n-masks", "20",
                     "--window", "32", "--stride", "32", "--device", "cpu", "--out", str(out / "compare")]) == 0
        monkeypatch.setenv(HEADERS_ENV, f"Authorization: Bearer {TOKEN}")  # the way that keeps it out of `ps`
        assert main(["batch", str(tmp_path / "in"), "--model", url, *common, "--out", str(out / "store")]) == 0
        monkeypatch.delenv(HEADERS_ENV)
        broken = server.base + "/v2/models/broken"
        assert main(["explain", images[0], "--model", broken, *header, *common, "--out", str(out / "x")]) == 1
        with pytest.raises(ModelError) as info:
            load_model(broken, headers={"Authorization": f"Bearer {TOKEN}"})(torch.rand(1, 3, 64, 64))
        remote = load_model(url, headers=[f"Authorization: Bearer {TOKEN}"])
        shown = [str(info.value), repr(remote), repr(remote.client), str(vars(remote.protocol))]
        assert main(["explain", images[0], "--model", url, "--header", f"Authorization Bearer {TOKEN}", *common]) == 2
    captured = capsys.readouterr()
    sent = [h.get("Authorization") for h in server.seen_headers]
    assert f"Bearer {TOKEN}" in sent and any(h.get("X-Api-Key") == f"{TOKEN}-2" for h in server.seen_headers)  # it was used
    assert "token <redacted> is not valid" in captured.err  # the server's echo, scrubbed
    assert len(list(out.rglob("*.json"))) >= 3 and files_holding(out, TOKEN) == []
    everything = captured.out + captured.err + caplog.text + "\n".join(shown)
    assert TOKEN not in everything and TOKEN[4:16] not in everything


def test_a_spent_budget_stops_the_run_and_says_what_is_missing(tmp_path, capsys):
    images = photos(tmp_path / "in", 3)
    with ModelServer(exact_classifier(), port=0, max_batch=8) as server:
        code = main(["explain", *images, "--model", server.url, "--method", "rise", "--n-masks", "40",
                     "--max-queries", "60", "--device", "cpu", "--quiet", "--out", str(tmp_path / "out")])
        sent = server.images
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 2, err
    # not "spent" while 18 are left: what the next requests need against what remains
    assert err[0].startswith(f"patchlens: error: {server.url}: query budget too small: the next requests need 32 images, "
                             "only 18 of max_queries=60 are left (42 used)")
    assert err[0].endswith("the explanation stopped unfinished (partial)")
    assert err[1] == f"patchlens: partial run: 1 of 3 image(s) explained; {images[1]} and those after it were not"
    written = sorted(p.name for p in (tmp_path / "out").glob("*.npy"))
    # 41 for the first photo, 1 for the second's unmasked score; its first batch of 32 masks would pass the budget
    assert len(written) == 1 and written[0].startswith("planted0_rise_1_") and sent == 42  # name: photo, method, class, model
    assert json.loads(next((tmp_path / "out").glob("*.json")).read_text())["forward_passes"] == 41


@pytest.mark.slow
def test_a_server_that_dies_mid_run_leaves_a_partial_map_and_names_the_images_left(tmp_path, capsys):
    """RISE scores in rounds of 250 masks; the server dies in the second round of the first photo."""
    images = photos(tmp_path / "in", 3)
    dies_after_270 = DiesAfter(ModelServer(exact_classifier(), port=0, max_batch=8), 270)
    with FakeServer(dies_after_270, max_requests=400) as server:
        code = main(["explain", *images, "--model", server.base + "/v2/models/default", "--method", "rise", "--n-masks", "2000",
                     "--no-binary", "--retries", "1", "--device", "cpu", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 3, captured.err
    notes = [line[line.index("patchlens: note:"):] for line in err if "patchlens: note:" in line]  # after the bar's clearing
    assert len(notes) == 1, captured.err
    assert f"{images[0]}: partial map from 250 of 2000 samples" in notes[0] and "(gave up after 2 tries)" in notes[0], captured.err
    assert err[-1] == f"patchlens: partial run: 1 of 3 image(s) explained; {images[1]} and those after it were not"
    assert "(gave up after 1 try)" in err[-2]  # the second image: asked once, not after another round of back-off
    record = json.dumps(json.loads(next((tmp_path / "out").glob("*.json")).read_text()))
    assert '"samples_used": 250' in record and '"runtime": "remote"' in record and '"protocol": "oip-v2"' in record
    assert len(list((tmp_path / "out").glob("*.npy"))) == 1
    assert "remote: oip-v2" in captured.out  # the run's header names the protocol, not (cpu, torch)


@pytest.mark.slow
def test_a_scores_warning_is_one_line_in_cli_spelling(tmp_path):
    """The command line prints patchlens's own warnings as one line, not Python's two with a source line."""
    import subprocess
    import sys

    Image.new("RGB", (8, 8), "gray").save(tmp_path / "a.png")
    with FakeServer(logits_responder) as server:
        run = subprocess.run(
            [sys.executable, "-m", "patchlens", "explain", str(tmp_path / "a.png"), "--model", server.base + "/v2/models/m",
             "--method", "occlusion", "--window", "4", "--stride", "4", "--no-binary", "--quiet", "--out", str(tmp_path / "out")],
            capture_output=True, text=True, timeout=120,
        )
    warnings = [line for line in run.stderr.splitlines() if "warning" in line.lower()]
    assert run.returncode == 0, run.stderr
    assert len(warnings) == 1 and warnings[0].startswith("patchlens: warning: http://127.0.0.1:"), run.stderr
    assert "pass softmax=True (--softmax, --activation softmax)" in warnings[0] and "warnings.warn" not in run.stderr


def test_a_server_that_dies_mid_batch_stops_the_run_and_resume_finishes_it(tmp_path, capsys):
    """Not one failed row per image left (each after its retries): the run stops, keeps what is done, exit 3."""
    photos(tmp_path / "in", 4)
    dies_after_12 = DiesAfter(ModelServer(exact_classifier(), port=0, max_batch=8), 12)  # 5 passes per photo: two photos, then two passes of the third

    store = tmp_path / "store"
    common = ["--method", "occlusion", "--window", "32", "--stride", "32", "--batch-size", "1", "--workers", "1",
              "--images-in-flight", "1", "--no-binary", "--retries", "1", "--device", "cpu", "--quiet", "--out", str(store)]
    from patchlens.batch import open_store

    with FakeServer(dies_after_12, max_requests=200) as server:
        url = server.base + "/v2/models/default"
        code = main(["batch", str(tmp_path / "in"), "--model", url, *common])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 3, err
        assert err[-1] == "patchlens: partial run: 2 image(s) not explained; the same command with --resume continues"
        assert err[-2].startswith("patchlens: error: ") and "gave up after 2 tries" in err[-2]
        rows = open_store(store).manifest
        assert sorted(rows["status"]) == ["ok", "ok"]  # nothing recorded as failed: the images were not at fault
        dies_after_12.back = True  # the server is up again at the same address
        assert main(["batch", str(tmp_path / "in"), "--model", url, "--resume", *common]) == 0
    rows = open_store(store).manifest
    assert sorted(rows["status"]) == ["ok"] * 4
    assert len(set(rows["path"])) == 4
