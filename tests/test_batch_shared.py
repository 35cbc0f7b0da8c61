"""Several images sharing one stream of batches: same maps as one at a time, fuller batches, failures kept apart."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from batch_fixtures import same_store, tiny_model
from patchlens.api import explain_one
from patchlens.batch import open_store, run_batch
from patchlens.cli import main
from patchlens.engine import Hooks, shared_batches
from patchlens.engine.shared_batches import SharedBatches
from patchlens.errors import Cancelled
from patchlens.images import load_image
from patchlens.methods import make_method
from patchlens.models import CallableClassifier, Classifier
from patchlens.request import RunRequest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RISE = {"n_masks": 20, "grid": 3}
BATCH = 32  # more than one image's 20 masks: alone, each image sends short batches
ALONE = RunRequest(make_method("rise", **RISE), seed=0, batch_size=BATCH)


def recording_model(seen: list[int], *, dark_fails: bool = False) -> Classifier:
    """The tiny CNN, noting each batch's size. ``dark_fails``: rows with a near-black pixel score NaN,
    which only the rows of a dark photo have (the others' pixels are >= 100/255, the baseline is gray).

    It computes in float64: torch's float32 kernels block the batch differently by its size, which moves
    a score's last bit (measured: up to 3e-8), so maps would depend on which rows shared a batch. In
    float64 those differences (~1e-17) vanish in the cast to float32, so each row's score is the same in
    any batch, as it is for the default model on ONNX Runtime, and maps must be bit-identical."""
    net = tiny_model().double()

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.append(int(x.shape[0]))
        out = net(x.double()).softmax(1).float()
        if dark_fails:
            out[x.amin(dim=(1, 2, 3)) < 0.1] = float("nan")
        return out

    # probabilities=True: otherwise the NaN rows would turn the model's kind of score to "score" from then on
    return CallableClassifier(fn, input_size=64, labels=[f"c{i}" for i in range(5)], model_id="tiny", probabilities=True)


def bright_photos(folder: Path, n: int, dark: int | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        pixels = rng.integers(100, 256, (40, 48, 3), dtype=np.uint8)
        if i == dark:
            pixels[:] = 0
        paths.append(folder / f"img{i:02d}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def explain_together(model: Classifier, photos: list[Path], options: dict[int, dict[str, Any]] | None = None
                     ) -> tuple[list[Any], SharedBatches]:
    """Explain ``photos`` at once, one thread each (``options[i]``: more arguments for photo i), through
    one stream that waits for every caller (a long ``max_wait``), so its batches do not depend on thread timing."""
    stream = SharedBatches(model, BATCH, max_wait=30.0)
    results: list[Any] = [None] * len(photos)
    ready = threading.Barrier(len(photos))

    def work(i: int) -> None:
        with stream.caller() as forward:
            ready.wait()  # every caller is counted before the first request
            more = (options or {}).get(i, {})
            request = RunRequest(make_method("rise", **RISE), seed=0, batch_size=BATCH, max_passes=more.get("max_passes"))
            try:
                results[i] = explain_one(model, load_image(str(photos[i])), request,
                                         Hooks(forward=forward, cancelled=more.get("cancelled")))[0]
            except Exception as exc:  # noqa: BLE001 (the test looks at which images failed, and why)
                results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(photos))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    stream.close()
    return results, stream


def test_shared_batches_give_the_maps_of_one_image_at_a_time(tmp_path: Path) -> None:
    photos = bright_photos(tmp_path, 3)
    seen: list[int] = []
    model = recording_model(seen)
    alone = [explain_one(model, load_image(str(p)), ALONE)[0] for p in photos]
    assert seen == [1, 20] * 3  # the short batches that sharing is for
    seen.clear()
    together, stream = explain_together(model, photos)
    # Three first passes in one batch, then 60 masks as 32 + 28, where each image alone sent 20:
    # the 32 holds rows of two images.
    assert seen == stream.batch_sizes == [3, 32, 28]
    for a, b in zip(alone, together):
        # the model scores each row the same whatever else is in its batch (float64 inside), so: bit-identical
        np.testing.assert_array_equal(a.saliency, b.saliency)
        assert a.forward_passes == b.forward_passes == RISE["n_masks"] + 1


def test_a_failing_image_fails_alone(tmp_path: Path) -> None:
    photos = bright_photos(tmp_path, 3, dark=1)
    seen: list[int] = []
    together, stream = explain_together(recording_model(seen, dark_fails=True), photos)
    assert seen[0] == 3  # the three first passes ran as one batch, which failed; each image's rows were run again alone
    assert isinstance(together[1], Exception) and "NaN" in str(together[1])
    alone = recording_model([])
    for i in (0, 2):
        ref = explain_one(alone, load_image(str(photos[i])), ALONE)[0]
        np.testing.assert_array_equal(together[i].saliency, ref.saliency)


def test_out_of_memory_halves_the_shared_batch_and_loses_nothing(tmp_path: Path) -> None:
    photos = bright_photos(tmp_path, 3)
    seen: list[int] = []
    inner = recording_model(seen)

    def fn(x: torch.Tensor) -> torch.Tensor:
        if len(x) > 12:  # a device that holds 12 rows at most
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return inner(x)

    model = CallableClassifier(fn, input_size=64, labels=inner.labels, probabilities=True)
    together, stream = explain_together(model, photos)
    # the images' engines backed off (32 -> 16 at least) and recorded what fits; the stream keeps to it, and a
    # shared batch over the limit was run again caller by caller, so every batch that ran held 12 rows or fewer
    fits = model.batch_policy.fits
    assert fits is not None and fits <= 16 and stream.rows_per_batch == fits and max(stream.batch_sizes) <= 12
    assert sum(stream.batch_sizes) == 3 * (RISE["n_masks"] + 1)  # every row scored once
    for photo, exp in zip(photos, together):
        ref = explain_one(inner, load_image(str(photo)), ALONE)[0]
        np.testing.assert_array_equal(exp.saliency, ref.saliency)


def test_cancelling_one_image_leaves_the_others(tmp_path: Path) -> None:
    photos = bright_photos(tmp_path, 3)
    seen: list[int] = []
    # image 0 may run its first pass only; image 2's budget is too small for its masks (checked per image, once prepared)
    cancel = {"cancelled": lambda: len(seen) > 0}
    together, stream = explain_together(recording_model(seen), photos, {0: cancel, 2: {"max_passes": 10}})
    assert isinstance(together[0], Cancelled)
    assert "budget" in str(together[2])
    assert together[1].forward_passes == RISE["n_masks"] + 1
    ref = explain_one(recording_model([]), load_image(str(photos[1])), ALONE)[0]
    np.testing.assert_array_equal(together[1].saliency, ref.saliency)
    # the three scoring passes (2's prepared cost is then over its budget: none of its masks run), then 1's masks
    assert sum(seen) == 3 + RISE["n_masks"]


def test_run_batch_shares_batches_and_stores_what_one_at_a_time_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bright_photos(tmp_path / "src", 5, dark=3)
    seen: list[int] = []
    model = recording_model(seen, dark_fails=True)
    common = dict(model=model, method="rise", batch_size=BATCH, progress=False, **RISE)
    one = run_batch(str(tmp_path / "src"), str(tmp_path / "one"), images_in_flight=1, **common)
    assert max(seen) <= RISE["n_masks"]
    seen.clear()
    # Callers that wait long for one another make sharing certain however slowly the threads start
    monkeypatch.setattr(shared_batches, "MAX_WAIT", 5.0)
    shared = run_batch(str(tmp_path / "src"), str(tmp_path / "shared"), images_in_flight=3, **common)
    assert max(seen) > RISE["n_masks"]  # one image's requests (1 row, then 20) are never in one batch: this held two images' rows
    assert (shared.done, shared.failed, shared.forward_passes) == (one.done, one.failed, one.forward_passes) == (4, 1, 4 * 21)
    m = open_store(tmp_path / "shared").manifest
    assert list(m.status) == ["ok", "ok", "ok", "failed", "ok"] and (m.forward_passes.dropna() == 21).all()
    same_store(tmp_path / "one", tmp_path / "shared")


def test_an_interrupted_shared_run_resumes_to_the_same_store(tmp_path: Path) -> None:
    bright_photos(tmp_path / "src", 6)
    model = recording_model([])
    common = dict(model=model, method="rise", batch_size=BATCH, progress=False, chunk_size=1, **RISE)
    run_batch(str(tmp_path / "src"), str(tmp_path / "whole"), images_in_flight=1, **common)

    def stop_after_two(summary: Any) -> None:
        if summary.done == 2:
            raise KeyboardInterrupt  # as Ctrl-C would, with images still in flight

    with pytest.raises(KeyboardInterrupt):
        run_batch(str(tmp_path / "src"), str(tmp_path / "cut"), images_in_flight=3, on_image=stop_after_two, **common)
    assert len(open_store(tmp_path / "cut").manifest) == 2  # what was finished is kept; nothing in flight leaks in
    summary = run_batch(str(tmp_path / "src"), str(tmp_path / "cut"), images_in_flight=3, resume=True, **common)
    assert (summary.done, summary.skipped) == (4, 2)
    same_store(tmp_path / "whole", tmp_path / "cut")


def test_the_cli_takes_images_in_flight(tmp_path: Path, tiny_spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    bright_photos(tmp_path / "src", 3)
    cmd = ["batch", str(tmp_path / "src"), "--model", tiny_spec, "--device", "cpu", "--n-masks", "8", "--quiet"]
    assert main([*cmd, "--out", str(tmp_path / "one"), "--images-in-flight", "1"]) == 0
    assert main([*cmd, "--out", str(tmp_path / "three"), "--images-in-flight", "3"]) == 0
    # runtime auto runs this model in ONNX Runtime, which scores its rows the same in any batch (measured: 0 difference)
    same_store(tmp_path / "one", tmp_path / "three")
    capsys.readouterr()
    assert main([*cmd, "--out", str(tmp_path / "none"), "--images-in-flight", "0"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--images-in-flight 0: must be at least 1" in err
