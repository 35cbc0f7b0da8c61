"""int8: a statically quantised copy of an ONNX graph, for CPUs that compute in int8 quickly.

CPUs with VNNI (AVX512-VNNI, AVX-VNNI) or AMX multiply 8-bit integers about
twice as fast as 32-bit floats, and EfficientNet-Lite (the default model) was
designed to be quantised. The copy is made once from the cached float32
export: weights per channel in int8, activations in uint8 with ranges measured
on calibration images and RISE-masked copies of them (QDQ format, ONNX
Runtime's static quantisation), the input's normalisation left in float32. It
is cached beside the export under a key of the export, the calibration images
and the settings.

A saliency map is made of small differences between scores, which rounding
can reorder, so a quantised copy is only used when a check says the maps
survive it: on every calibration photo the top class must agree with float32
and RISE's map from the same masks must have a rank correlation of at least
0.99 with float32's. The check's answer is remembered per file, ONNX Runtime
version and CPU (models/onnx_runtime.py, ``remembered_check``'s pattern).

Without VNNI or AMX (plain AVX2), ONNX Runtime's int8 kernels can saturate,
so weights are then quantised to 7 bits (``reduce_range``); the copy is no
faster there (benchmarks/RESULTS.md, "int8"), and ``runtime="auto"`` never
chooses it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelError
from ..ranking import spearman
from .classifier import Classifier
from .export_cache import remembered

log = logging.getLogger("patchlens")

#: bump when the quantisation settings below change; part of the file's key
QUANT_FORMAT = 1
#: CPU flags (Linux names) under which ONNX Runtime's int8 kernels are the fast ones
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: smallest rank correlation of a RISE map with float32's on every check photo
MIN_MAP_AGREEMENT = 0.99
#: masks of the check's RISE maps, per photo (the same masks for both precisions)
CHECK_MASKS = 250
#: masked copies of each calibration photo added to the calibration set (RISE's inputs look like these)
MASKED_COPIES = 8
#: at most this many of a user's calibration images are checked
CHECK_IMAGES = 5


def int8_instructions(cpuinfo: str | None = None) -> list[str]:
    """The fast-int8 instruction sets this CPU has (empty: none, or not known on this system).

    ``cpuinfo``: the text of /proc/cpuinfo (read when not given).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return [f for f in INT8_FLAGS if f in flags]
    found = []  # not Linux: ask torch, which reads CPUID (private helpers: absent in some builds)
    for name, flag in (("_is_vnni_supported", "avx512_vnni"), ("_is_amx_tile_supported", "amx_int8")):
        check = getattr(torch.cpu, name, None)
        try:
            if callable(check) and check():
                found.append(flag)
        except Exception:  # noqa: BLE001, S110  a private torch helper: any failure means "not known to be there"
            pass
    return found


def calibration_inputs(images: Sequence[np.ndarray], input_size: tuple[int, int], seed: int = 0) -> list[torch.Tensor]:
    """Calibration images ``(3, H, W)`` in [0, 1] at the model's size: each photo and :data:`MASKED_COPIES` RISE-masked copies of it."""
    from ..images import resize, to_tensor

    generator = torch.Generator().manual_seed(seed)
    out = []
    for pixels in images:
        x = resize(to_tensor(pixels)[None], input_size)[0]
        out.append(x)
        grids = (torch.rand(MASKED_COPIES, 1, 7, 7, generator=generator) < 0.5).float()
        masks = torch.nn.functional.interpolate(grids, size=input_size, mode="bilinear", align_corners=False)
        out += list(0.5 + masks * (x - 0.5))  # hidden parts grey, as RISE's default baseline
    return out


def images_key(images: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256()
    for pixels in images:
        h.update(repr(pixels.shape).encode())
        h.update(np.ascontiguousarray(pixels).tobytes())
    return h.hexdigest()


def file_key(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def quantized_path(source: Path, source_key: str, calibration_key: str, reduce_range: bool, folder: Path) -> Path:
    """Where the int8 copy of ``source`` lives: in ``folder``, under a key of everything that decides it."""
    import onnxruntime as ort

    settings = (source_key, calibration_key, reduce_range, MASKED_COPIES, QUANT_FORMAT, ort.__version__)
    key = hashlib.sha256(repr(settings).encode()).hexdigest()[:16]
    return folder / f"{source.stem}-int8-{key}.onnx"


def quantize(source: Path, target: Path, input_name: str, batches: Sequence[np.ndarray], *, reduce_range: bool) -> None:
    """Write the QDQ int8 copy of ``source`` to ``target`` (atomically), calibrated on ``batches`` (each ``(1, 3, H, W)``)."""
    try:
        import onnx  # noqa: F401
        from onnxruntime.quantization import CalibrationDataReader
    except ImportError as exc:
        raise ModelError(f"int8 needs onnxruntime's quantisation tools and onnx ({exc}; pip install onnx onnxruntime)") from None

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.left, None)
            return None if batch is None else {input_name: np.ascontiguousarray(batch, np.float32)}

    target.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with tempfile.TemporaryDirectory(dir=target.parent) as work:
            _quantize_in(work, source, target, Reader(), reduce_range)
    finally:  # ONNX Runtime's quantisation tools call logging.basicConfig: undo it, the process's logging is not theirs
        root.handlers[:], root.level = handlers, level


def _quantize_in(work: str, source: Path, target: Path, reader: Any, reduce_range: bool) -> None:
    """Prepare ``source`` (shape inference, folding), quantise it with ``reader``'s calibration batches, move it to ``target``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = Path(work) / "prepared.onnx"
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)  # folds and names what quantisation needs
    graph = onnx.load(str(prepared)).graph
    inputs = {i.name for i in graph.input}
    # the input's normalisation stays in float32: pixels are exact there, and rounding them shifts every score
    keep = [n.name for n in graph.node if set(n.input) & inputs]
    out = Path(work) / "int8.onnx"
    quantize_static(
        str(prepared), str(out), reader,
        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        per_channel=True, reduce_range=reduce_range, calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=keep,
    )
    os.replace(out, target)


def cached_quantized(
    source: Path, source_key: str, calibration: Sequence[np.ndarray], input_name: str,
    make_batches: Callable[[], list[np.ndarray]], folder: Path,
) -> tuple[Path, bool]:
    """The int8 copy of ``source`` calibrated on ``calibration`` (kept in ``folder``), and whether this call made it."""
    reduce_range = not int8_instructions()  # plain AVX2's int8 kernels saturate with 8-bit weights
    path = quantized_path(source, source_key, images_key(calibration), reduce_range, folder)
    if path.is_file():
        return path, False
    log.warning("patchlens: making an int8 copy of %s for this CPU (once; later runs reuse it)", source.name)
    quantize(source, path, input_name, make_batches(), reduce_range=reduce_range)
    return path, True


@dataclass
class Agreement:
    """How an int8 copy's maps compare with float32's on the check photos."""

    photos: list[dict[str, Any]]

    @property
    def passed(self) -> bool:
        return bool(self.photos) and all(p["top1_agrees"] and p["map_rank_correlation"] >= MIN_MAP_AGREEMENT for p in self.photos)

    @property
    def worst(self) -> float:
        return min(p["map_rank_correlation"] for p in self.photos)

    def summary(self) -> str:
        disagree = sum(not p["top1_agrees"] for p in self.photos)
        return (
            f"RISE maps' rank correlation with float32 {self.worst:.3f} at worst (needs {MIN_MAP_AGREEMENT}), "
            f"top class changed on {disagree} of {len(self.photos)} photos"
        )

    def record(self) -> dict[str, Any]:
        return {"passed": self.passed, "min_map_rank_correlation": round(self.worst, 4), "photos": self.photos}


def rise_map(classifier: Classifier, image: torch.Tensor, target: int, n_masks: int, seed: int, batch: int = 25) -> torch.Tensor:
    """A plain RISE map of ``target`` on ``image`` ``(3, H, W)``: masks from ``seed``, so both precisions see the same ones.

    Written here rather than run through the engine and methods/rise.py, which sit above the
    models in the package's layers; what the check compares is how the two graphs rank the
    same masked inputs, and the plain estimator (score-weighted masks) shows exactly that.
    """
    from ..objectives.classes import class_objective  # the one place that turns an answer into a target's scores

    objective = class_objective(classifier, target)
    generator = torch.Generator().manual_seed(seed)
    height, width = image.shape[-2:]
    weighted, coverage, score_sum = torch.zeros(height, width), torch.zeros(height, width), 0.0
    for start in range(0, n_masks, batch):
        cells = (torch.rand(min(batch, n_masks - start), 1, 7, 7, generator=generator) < 0.5).float()
        masks = torch.nn.functional.interpolate(cells, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
        scores = objective(classifier((0.5 + masks[:, None] * (image.cpu()[None] - 0.5)).to(classifier.device)))[:, 0]
        scores = scores.detach().float().cpu()  # hidden parts grey
        weighted += (scores[:, None, None] * masks).sum(0)
        coverage += masks.sum(0)
        score_sum += float(scores.sum())
    # the covariance of score and mask: the plain average is mostly how often each pixel was kept,
    # the same for both graphs, which would make any two graphs' maps look alike
    return weighted / n_masks - (score_sum / n_masks) * (coverage / n_masks)


def map_agreement(reference: Classifier, candidate: Classifier, photos: Sequence[tuple[str, torch.Tensor]], n_masks: int = CHECK_MASKS) -> Agreement:
    """Top class and RISE map (same masks) of ``candidate`` against ``reference`` on each named photo."""
    found = []
    for name, x in photos:
        ref_top = int(reference(x[None])[0].argmax())
        new_top = int(candidate(x[None])[0].argmax())
        rho = spearman(rise_map(reference, x, ref_top, n_masks, 0), rise_map(candidate, x, ref_top, n_masks, 0))
        found.append({"photo": name, "top1_agrees": ref_top == new_top, "map_rank_correlation": round(rho, 4)})
    return Agreement(found)


def remembered_agreement(path: Path, compute: Callable[[], Agreement]) -> tuple[Agreement, bool]:
    """:func:`map_agreement` for the int8 file at ``path``, computed once per ONNX Runtime version and CPU."""
    import onnxruntime as ort

    stamp = {"onnxruntime": ort.__version__, "int8": int8_instructions(), "cpu": torch.backends.cpu.get_cpu_capability(),
             "masks": CHECK_MASKS, "map": "RISE covariance, 7x7 cells"}
    photos, kept = remembered(path.with_name(path.stem + ".check.json"), stamp, lambda: compute().photos)
    return Agreement(photos), kept


def bundled_photos() -> list[tuple[str, np.ndarray]]:
    """The photos that ship with patchlens: the default calibration and check set."""
    from ..examples import EXAMPLES, example_path
    from ..images import load_image

    return [(name, load_image(example_path(name)).pixels) for name in EXAMPLES]
