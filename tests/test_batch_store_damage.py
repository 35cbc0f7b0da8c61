"""The batch store under damage: detected, named, read and repaired; sources are one name per file; a full disk."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import patchlens
from patchlens.batch import StoreError, StoreWarning, open_store, run_batch, verify_store
from patchlens.batch.store import Store
from patchlens.cli import main

SETTINGS = {"n_masks": 8, "grid": 2, "progress": False}


class Pool(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.AvgPool2d(16), torch.nn.Flatten(), torch.nn.LazyLinear(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def pool() -> Pool:
    torch.manual_seed(0)
    net = Pool().eval()
    net(torch.zeros(1, 3, 224, 224))  # materialise the lazy layer
    return net


@pytest.fixture(scope="module")
def model():
    return patchlens.load_model(pool())


def images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(folder / f"im{i:02d}.png")
    return folder


def run(src: Path, out: Path, model, **kw):
    return run_batch(str(src), str(out), model=model, chunk_size=2, **SETTINGS, **kw)


def split_store(tmp_path: Path, model, n: int = 6) -> tuple[Path, Path]:
    """A store with several parts: a run cut short by an error after n - 2 images, not yet compacted."""
    src = images(tmp_path / "src", n)
    out = tmp_path / "s"
    seen = []

    def stop_early(summary) -> None:
        seen.append(1)
        if len(seen) == n - 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(src, out, model, on_image=stop_early)
    assert len(Store(out).parts()) == (n - 2) // 2  # no compaction on the way out of an interrupted run
    return src, out


def complete(out: Path, n: int) -> None:
    with open_store(out) as s:
        assert sorted(s.manifest.path) == sorted(set(s.manifest.path)) and len(s) == n
        for i in range(len(s)):
            assert np.isfinite(s.map(i)).all()


# -- damaged parts and shards ----------------------------------------------------------


def test_random_bytes_in_a_manifest_part_lose_only_that_part_and_resume_repairs_it(tmp_path, model, capsys):
    src, out = split_store(tmp_path, model)
    parts = Store(out).parts()
    damaged = parts[0][1]
    damaged.write_bytes(os.urandom(damaged.stat().st_size))
    with pytest.warns(StoreWarning, match=f"manifest/{damaged.name}") as record:
        s = open_store(out)
    assert len(s) == 2 and "\n" not in str(record[0].message)  # the other part's rows are all there
    summary = run(src, out, model, resume=True)
    assert summary.done == 4 and summary.skipped == 2  # the two lost and the two never done
    assert "damaged" in capsys.readouterr().err
    complete(out, 6)
    damage, _ = verify_store(out)
    assert not damage


def test_a_damaged_compacted_part_loses_no_row(tmp_path, model):
    src = images(tmp_path / "src", 4)
    out = tmp_path / "s"
    run(src, out, model)
    (part,) = [p for _, p in Store(out).parts()]  # compaction left one part ...
    before = open_store(out).manifest
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF  # ... and one flipped byte inside it
    part.write_bytes(bytes(data))
    with pytest.warns(StoreWarning, match="checksum mismatch; its rows were read from the parts it replaced"):
        after = open_store(out).manifest
    pd.testing.assert_frame_equal(after, before)  # ... which the compaction kept, hidden, until the next one
    with pytest.raises(StoreError, match="--resume"):
        run(src, out, model)
    part.rename(part.with_name("elsewhere"))  # the compacted part gone altogether: the same
    with pytest.warns(StoreWarning, match="elsewhere"):  # ... and the file left in manifest/ is named
        assert len(open_store(out)) == 4
    part.with_name("elsewhere").rename(part)
    assert run(src, out, model, resume=True).skipped == 4
    # issue 26: the resume repaired it (before, the one damaged part stayed DAMAGED for good)
    assert not verify_store(out)[0] and (part.parent / f".{part.name}.damaged").exists()


def test_a_store_with_every_manifest_part_damaged_is_redone_on_resume(tmp_path, model):
    src, out = split_store(tmp_path, model)
    for _, p in Store(out).parts():
        p.write_bytes(b"PAR1 not really")
    with pytest.warns(StoreWarning, match="about 4 rows unreadable"):
        assert len(open_store(out)) == 0
    assert run(src, out, model, resume=True).done == 6
    complete(out, 6)


@pytest.mark.parametrize("harm", ["delete", "truncate", "flip"])
def test_a_lost_map_shard_is_named_and_its_images_are_explained_again(tmp_path, model, harm):
    src = images(tmp_path / "src", 4)
    out = tmp_path / "s"
    run(src, out, model)
    shard = sorted((out / "maps").glob("part-*.npz"))[0]
    data = shard.read_bytes()
    if harm == "delete":
        shard.unlink()
    elif harm == "truncate":
        shard.write_bytes(data[: len(data) // 2])
    else:
        shard.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    damage, manifest = verify_store(out)
    assert f"maps/{shard.name}" in damage.shards and len(manifest) == 4  # rows kept, maps named lost
    assert main(["store", "verify", str(out)]) == 1
    if harm != "flip":  # presence and size are checked on every open; content only by verify and --resume
        with pytest.warns(StoreWarning, match=shard.name):
            s = open_store(out)
        lost = s.manifest[s.manifest.map_file == f"maps/{shard.name}"].index[0]
        with pytest.raises(StoreError, match="map is lost"):
            s.map(int(lost))
    summary = run(src, out, model, resume=True)
    assert summary.done == 2 and summary.skipped == 2  # exit 0 with the maps silently gone, before
    complete(out, 4)
    assert main(["store", "verify", str(out)]) == 0


def test_store_verify_reports_a_healthy_store(tmp_path, model, capsys):
    src = images(tmp_path / "src", 2)
    run(src, tmp_path / "s", model)
    assert main(["store", "verify", str(tmp_path / "s")]) == 0
    assert "healthy: 2 readable rows" in capsys.readouterr().out
    assert main(["store", "verify", str(tmp_path / "nowhere")]) == 2


# -- one image, one name --------------------------------------------------------------


def test_resume_with_the_source_spelled_differently_does_not_duplicate(tmp_path, model, monkeypatch):
    images(tmp_path / "src", 3)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "s"
    run(Path("src"), out, model)
    assert run(Path("./src/../src"), out, model, resume=True).skipped == 3
    assert run(tmp_path / "src", out, model, resume=True).skipped == 3
    (tmp_path / "list.txt").write_text("src/im00.png\n./src/im01.png\n" + str(tmp_path / "src" / "im02.png") + "\n")
    assert run(Path("list.txt"), out, model, resume=True).skipped == 3
    assert len(open_store(out)) == 3


# -- a full disk ------------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_leaves_the_store_intact(tmp_path, model, monkeypatch, capsys):
    src = images(tmp_path / "src", 6)
    out = tmp_path / "s"
    import patchlens.batch.store as store_module

    real = store_module._atomic_write
    calls = []

    def fill_up(path, write):
        calls.append(path)
        if len(calls) > 7:  # store.json and two parts (shard, checksums, manifest) fit; then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, write)

    spec = tmp_path / "pool.pt"
    torch.jit.save(torch.jit.trace(pool(), torch.rand(1, 3, 224, 224)), str(spec))
    monkeypatch.setattr(store_module, "_atomic_write", fill_up)
    code = main(["batch", str(src), "--out", str(out), "--model", f"torchscript:{spec}", "--quiet", "--chunk-size", "2",
                 "--n-masks", "4", "--grid", "2", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err and "Traceback" not in err
    monkeypatch.setattr(store_module, "_atomic_write", real)
    assert len(open_store(out)) == 4  # the parts written before the disk filled
    assert not verify_store(out)[0]
