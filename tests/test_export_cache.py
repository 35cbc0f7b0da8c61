"""The export cache: keyed by weights, bounded in size (least recently used out first), shown and emptied by the CLI."""

from __future__ import annotations

import os
import time

import pytest
import torch

import patchlens
from patchlens.cli import main
from patchlens.models import export_cache


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PATCHLENS_CACHE_MAX", raising=False)
    return tmp_path / "cache" / "onnx"


def fake_entry(folder, name, size, used):
    folder.mkdir(parents=True, exist_ok=True)
    key = f"{name}-{'0' * 23}{len(name) % 10}"
    files = [folder / f"{key}.onnx", folder / f"{key}.check.json"]
    files[0].write_bytes(b"x" * size)
    files[1].write_text("{}")
    for f in files:
        os.utime(f, (used, used))
    return files


def test_prune_removes_the_least_recently_used_exports_until_the_folder_fits(cache, monkeypatch):
    now = time.time()
    old = fake_entry(cache, "old", 4000, now - 300)
    mid = fake_entry(cache, "mid", 4000, now - 200)
    new = fake_entry(cache, "new", 4000, now - 100)
    monkeypatch.setenv("PATCHLENS_CACHE_MAX", "9000")
    removed = export_cache.prune(keep=old[0])  # the file just written is never removed, however old it looks
    assert [e.name.split("-")[0] for e in removed] == ["mid"]
    assert all(f.exists() for f in old + new) and not any(f.exists() for f in mid)
    monkeypatch.setenv("PATCHLENS_CACHE_MAX", "6K")
    assert export_cache.limit() == 6144
    assert [e.name.split("-")[0] for e in export_cache.prune()] == ["old"]


def test_a_bad_bound_is_one_line(cache, monkeypatch, capsys):
    monkeypatch.setenv("PATCHLENS_CACHE_MAX", "lots")
    assert main(["cache", "info"]) == 2
    assert "PATCHLENS_CACHE_MAX='lots': expected a size such as 500M or 4G" in capsys.readouterr().err


def test_exports_are_keyed_by_weights_marked_when_used_and_bounded(cache, monkeypatch):
    pytest.importorskip("onnxruntime")

    def tiny(seed):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                   torch.nn.Linear(4, 5))

    patchlens.load_model(tiny(0), runtime="onnx", input_size=32)
    (first,) = cache.glob("*.onnx")
    os.utime(first, (time.time() - 100, time.time() - 100))
    patchlens.load_model(tiny(0), runtime="onnx", input_size=32)  # same weights: the same file, now marked used
    assert list(cache.glob("*.onnx")) == [first] and time.time() - first.stat().st_mtime < 50
    monkeypatch.setenv("PATCHLENS_CACHE_MAX", str(first.stat().st_size + 100))
    patchlens.load_model(tiny(1), runtime="onnx", input_size=32)  # other weights: a new export pushes the old one out
    (second,) = cache.glob("*.onnx")
    assert second != first and not first.with_name(first.stem + ".check.json").exists()


def test_cache_info_and_clear(cache, capsys):
    fake_entry(cache, "timm_resnet18", 3 * 1024**2, time.time() - 7200)
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert "1 export(s), 3.0 MB of at most 2,048.0 MB" in out and "used 2 hours ago" in out
    assert main(["cache", "clear"]) == 0
    assert "removed 2 file(s), 3.0 MB" in capsys.readouterr().out
    assert not any(cache.iterdir())
