"""Maps read back from a batch store find their photo, wherever the store is read from, or say it is missing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pyarrow")
from conftest import planted_classifier, planted_image
from patchlens.batch import open_store, run_batch


def test_a_store_made_from_a_relative_folder_finds_its_photos_from_another_folder(tmp_path, monkeypatch):
    folder = tmp_path / "work" / "photos"
    folder.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(planted_image(seed=i)).save(folder / f"p{i}.png")
    monkeypatch.chdir(tmp_path / "work")
    run_batch("photos", "run.store", model=planted_classifier(), method="occlusion", window=16, stride=16, progress=False)
    monkeypatch.chdir(tmp_path)  # somewhere else: a path stored relative to the first folder would be lost
    store = open_store(tmp_path / "work" / "run.store")
    assert all(p.startswith(str(tmp_path)) for p in store.manifest.path)
    exp = store.explanation(0)
    assert exp.image is not None and np.array_equal(exp.image, np.asarray(Image.open(exp.image_name).convert("RGB")))
    assert exp.overlay() == exp.overlay(title=exp.title)  # the plain title: nothing is missing
    # the photo changes under the same name: the store will not draw its map over another picture
    Image.fromarray(planted_image(seed=9)).save(exp.image_name)
    changed = store.explanation(0)
    assert changed.image is None
    assert changed.overlay() != changed.overlay(title=changed.title)  # the title adds "[photo missing]"
    (folder / "p1.png").unlink()
    assert store.explanation(1).image is None
