"""The batch store vouches only for what it can read.

Each test is one of the audit's reproductions: a deleted checksum file, a part
copied in from another store, a same-size bit flip in a map shard, a truncated
compacted part, a junk file in manifest/, a read-only store.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
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

SETTINGS = {"method": "occlusion", "window": 8, "stride": 8, "progress": False, "chunk_size": 2}


class Mean(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean((2, 3))
        return torch.cat([m, 1 - m], 1)


@pytest.fixture(scope="module")
def model():
    return patchlens.load_model(Mean().eval(), input_size=32)


def images(folder: Path, n: int, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(folder / f"im{i:02d}.png")
    return folder


def run(src: Path, out: Path, model, **kw):
    return run_batch(str(src), str(out), model=model, **{**SETTINGS, **kw})


def interrupted_run(tmp_path: Path, model, images_done: int = 4) -> tuple[Path, Path]:
    """Six photos, the run interrupted (Ctrl-C) after ``images_done``: its parts written, the store not compacted."""
    src, out = images(tmp_path / "src", 6), tmp_path / "s"
    seen = []

    def stop(summary) -> None:
        seen.append(1)
        if len(seen) == images_done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(src, out, model, on_image=stop)
    return src, out


def two_stores(tmp_path: Path, model) -> tuple[Path, Path, Path]:
    """This store (4 photos) and another one (6 other photos in one part): the source folder and both stores."""
    src, out, other = images(tmp_path / "src", 4), tmp_path / "s", tmp_path / "o"
    run(src, out, model)
    run(images(tmp_path / "other", 6, seed=1), other, model, chunk_size=6)
    return src, out, other


def healthy(out: Path, n: int) -> None:
    damage, manifest = verify_store(out)
    assert not damage, damage
    assert len(manifest) == n and (manifest.status == "ok").all()
    with open_store(out) as s:
        for _, m in s.maps():
            assert np.isfinite(m).all()


def test_a_deleted_checksum_file_is_not_trusted(tmp_path, model):
    """The audit: checksum gone, shard corrupted; verify said healthy, --resume '0 done', report failed on Bad CRC-32."""
    src = images(tmp_path / "src", 6)
    out = tmp_path / "s"
    run(src, out, model)
    (out / "checksums" / "part-000000.json").unlink()
    shard = out / "maps" / "part-000000.npz"
    data = bytearray(shard.read_bytes())
    data[200] ^= 0x10  # inside the first map's bytes: same size
    shard.write_bytes(bytes(data))
    damage, _ = verify_store(out)
    assert "maps/part-000000.npz" in damage.shards and "no checksum file" in damage.shards["maps/part-000000.npz"]
    assert main(["store", "verify", str(out)]) == 1
    summary = run(src, out, model, resume=True)
    assert (summary.done, summary.skipped) == (2, 4)  # the two images whose maps were in that shard
    healthy(out, 6)
    patchlens.report(out)  # reads every map: no Bad CRC-32


def test_a_deleted_checksum_of_a_manifest_part_drops_its_rows_until_resume(tmp_path, model):
    src, out = interrupted_run(tmp_path, model)  # two parts, not compacted
    (out / "checksums" / "part-000001.json").unlink()
    with pytest.warns(StoreWarning, match="part-000001.parquet \\(no checksum file"):
        assert len(open_store(out)) == 2
    assert run(src, out, model, resume=True).done == 4
    healthy(out, 6)


def test_a_part_copied_from_another_store_is_named_and_ignored(tmp_path, model):
    src, out, other = two_stores(tmp_path, model)
    (number, part), = Store(other).parts()
    stray = f"part-{number + 7:06d}"  # a number this store has not used, so it would be the newest
    shutil.copy(part, out / "manifest" / f"{stray}.parquet")
    shutil.copy(other / "checksums" / f"part-{number:06d}.json", out / "checksums" / f"{stray}.json")
    with pytest.warns(StoreWarning, match=f"not its own: manifest/{stray}.parquet \\(written by another store"):
        s = open_store(out)
    assert sorted(s.manifest.path) == sorted(str(p) for p in src.iterdir())  # this store's rows only
    assert main(["store", "verify", str(out)]) == 1
    assert run(src, out, model, resume=True).skipped == 4
    healthy(out, 4)  # moved aside by the run ...
    assert (out / "manifest" / f".{stray}.parquet.stray").exists()
    assert len(pd.read_parquet(out / "manifest")) == 4  # ... so plain readers see this store's rows only


def test_a_part_copied_without_its_checksum_is_not_trusted(tmp_path, model):
    src, out, other = two_stores(tmp_path, model)
    (_, part), = Store(other).parts()
    shutil.copy(part, out / "manifest" / "part-000050.parquet")
    with pytest.warns(StoreWarning, match="part-000050.parquet \\(no checksum file"):
        s = open_store(out)
    assert len(s) == 4 and not s.manifest.path.str.contains("other").any()
    run(src, out, model, resume=True)
    healthy(out, 4)


def test_open_store_warns_on_a_same_size_bit_flip_in_a_map_shard(tmp_path, model):
    """The README's promise: open_store names a damaged file (it checked only size and presence)."""
    src = images(tmp_path / "src", 4)
    out = tmp_path / "s"
    run(src, out, model)
    shard = out / "maps" / "part-000001.npz"
    data = bytearray(shard.read_bytes())
    data[-300] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.warns(StoreWarning, match="maps/part-000001.npz \\(checksum mismatch"):
        s = open_store(out)
    lost = s.manifest[s.manifest.map_file == "maps/part-000001.npz"].index
    assert len(lost) == 2
    with pytest.raises(StoreError, match="map is lost"):
        s.map(int(lost[0]))


@pytest.mark.parametrize("harm", ["truncate", "zero"])
def test_resume_repairs_a_damaged_single_compacted_part(tmp_path, model, harm):
    """Compaction returned early with one part, so the damaged part stayed DAMAGED after every --resume."""
    src = images(tmp_path / "src", 6)
    out = tmp_path / "s"
    run(src, out, model)
    (_, part), = Store(out).parts()
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2] if harm == "truncate" else bytes(len(data)))
    assert main(["store", "verify", str(out)]) == 1
    assert run(src, out, model, resume=True).skipped == 6  # the rows came from the parts it replaced
    healthy(out, 6)
    assert main(["store", "verify", str(out)]) == 0


def test_a_junk_file_in_manifest_is_named_and_moved_aside(tmp_path, model):
    src = images(tmp_path / "src", 4)
    out = tmp_path / "s"
    run(src, out, model)
    (out / "manifest" / "notes.txt").write_text("my notes on this run\n")
    with pytest.raises(Exception):  # noqa: B017 - pyarrow's own error: what the README's reader met
        pd.read_parquet(out / "manifest")
    with pytest.warns(StoreWarning, match="manifest/notes.txt \\(not a part of this store"):
        assert len(open_store(out)) == 4  # every row still read
    assert run(src, out, model, resume=True).skipped == 4
    assert len(pd.read_parquet(out / "manifest")) == 4
    assert (out / "manifest" / ".notes.txt.stray").read_text() == "my notes on this run\n"  # kept, out of the way
    healthy(out, 4)


def test_stores_written_before_checksums_were_required_stay_readable(tmp_path, model):
    """An older store: no id or checksums_from in store.json, and its first parts have no checksum files."""
    src, out = interrupted_run(tmp_path, model)
    info = json.loads((out / "store.json").read_text())
    for key in ("id", "checksums_from"):
        info.pop(key)
    (out / "store.json").write_text(json.dumps(info))
    for sums in (out / "checksums").glob("*.json"):
        kept = json.loads(sums.read_text())
        kept.pop("store"), kept.pop("part")  # checksum files as the first versions wrote them
        sums.write_text(json.dumps(kept))
    (out / "checksums" / "part-000000.json").unlink()  # part 0 from before checksums existed
    assert len(open_store(out)) == 4 and not verify_store(out)[0]
    assert run(src, out, model, resume=True).done == 2
    assert json.loads((out / "store.json").read_text())["checksums_from"] == 1  # adopted by the run that wrote to it
    healthy(out, 6)


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` made read-only for real: by permissions, or (as root, whom they do not stop) a read-only bind mount."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            yield folder
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    view = folder.with_name(folder.name + "-ro")
    view.mkdir()
    if subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(view)], capture_output=True).returncode != 0:
        pytest.skip("running as root without permission to mount: cannot make a folder read-only")
    try:
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)


def test_a_read_only_store_is_one_line_on_resume_and_still_readable(tmp_path, model, capsys):
    src = images(tmp_path / "src", 3)
    out = tmp_path / "s"
    run(src, out, model)
    spec = tmp_path / "mean.pt"
    torch.jit.save(torch.jit.script(Mean().eval()), str(spec))
    images(src, 4)  # one image more to explain
    with read_only(out) as ro:
        code = main(["batch", str(src), "--out", str(ro), "--resume", "--model", f"torchscript:{spec}", "--input-size", "32",
                     "--method", "occlusion", "--window", "8", "--stride", "8", "--quiet", "--device", "cpu"])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err
        assert f"{ro}: cannot write to this store (" in err and err.count("\n") == 1
        assert len(open_store(ro)) == 3 and not verify_store(ro)[0]  # reading needs no writing
