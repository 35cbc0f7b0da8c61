"""Choosing the runtime that scores a torch model: torch eager or ONNX Runtime.

``load_model(..., runtime="auto")`` (the default) runs the forward passes in
ONNX Runtime on a CPU when it is installed and the exported graph's scores
match torch's on a check batch; torch otherwise, and on GPUs (where torch with
bf16 autocast is already fast). What ran is recorded on the classifier
(``runtime``, ``runtime_details``) and on every result made with it, with the
forward passes its checks took (``check_forward_passes``): they run here, at
load time, before any engine exists, and are counted here.

Thread defaults come from benchmarks/runtimes.py on the shared 2-core machine
(benchmarks/RESULTS.md, "Runtimes"): ONNX Runtime's thread count is the cores
this process may use. Its spinning threads are faster on a quiet machine and
lost up to half their speed while other processes ran, so whether they spin is
measured on the real batches and measured again when the load changes
(models/spinning.py).
Torch's own thread count is left alone unless ``threads`` is given, because
it is a setting of the whole process.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..capabilities import ModelKind
from ..errors import ModelError
from ..ranking import spearman
from .classifier import Classifier
from .int8 import int8_instructions
from .torch_module import TorchClassifier

if TYPE_CHECKING:
    from .onnx_runtime import OnnxRuntimeClassifier

log = logging.getLogger("patchlens")

RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")
PRECISIONS = ("fp32", "bf16")
#: environment variable overriding the thread count of the runtime.
THREADS_ENV = "PATCHLENS_THREADS"
#: largest difference of scores (probabilities) between ONNX Runtime and torch that "auto" accepts.
CHECK_TOLERANCE = 1e-4
#: smallest rank correlation between a reduced-precision map and the float32 map that is accepted.
PRECISION_MIN_RANK_CORRELATION = 0.99


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_threads(threads: int | None) -> int | None:
    """``threads``, else ``$PATCHLENS_THREADS``, else None (the runtime's measured default)."""
    if threads is None and os.environ.get(THREADS_ENV):
        text = os.environ[THREADS_ENV]
        try:
            threads = int(text)
        except ValueError:
            raise ModelError(f"{THREADS_ENV}={text!r}: not a whole number of threads") from None
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ModelError(f"threads={threads!r}: must be a whole number of at least 1")
    return threads


@contextlib.contextmanager
def scoring_threads(classifier: Classifier, scores_only: bool) -> Iterator[None]:
    """Torch's thread count while ``classifier`` explains with a method that needs ``scores_only`` (or more).

    When ONNX Runtime scores a black-box method's passes, torch only builds
    masks and combines scores: small operations where a second thread buys
    little on a quiet machine and, under contention, cost 2.5-6x (RISE on the
    default model at load average 16 on 2 cores: 12-36 passes/s with one torch
    thread, 5 with two). Gradient methods keep torch's own setting.

    The setting is the whole process's: a front-end enters this once for a run
    it owns (a CLI command, a batch run, ``explain()``), never per image or per
    request while other threads explain (the web server leaves torch's threads alone).
    """
    wanted = classifier.torch_threads
    before = torch.get_num_threads()
    if wanted is None or not scores_only or wanted == before:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def runtime_record(classifier: Classifier, *, white_box: bool = False) -> dict[str, object]:
    """What ran ``classifier``'s forward passes, for a result's record (its declared ``runtime_details``).

    ``white_box``: the method also used gradients, the module's insides or
    its tokens, which always come from torch; the record says so when scores did not.
    """
    record = dict(classifier.runtime_details)
    if white_box and record.get("runtime") != "torch":
        record["gradients"] = "torch"
    return record


def runs_on(classifier: Classifier) -> str:
    """Where and by what a classifier's forward passes run, for a run's header: "cpu, torch", "remote: oip-v2, MLServer 1.7.1"."""
    record = runtime_record(classifier)
    if record.get("runtime") == "remote":
        tensors = f", {record['tensors']} tensors" if record.get("tensors") else ""
        return f"remote: {record.get('protocol')}, {record.get('server')}{tensors}"
    return f"{classifier.device}, {record.get('runtime', 'torch')}"


#: images in the check batch; 3, so that a graph whose batch was baked in at 2 fails
CHECK_IMAGES = 3


def check_batch(classifier: Classifier, n: int = CHECK_IMAGES) -> torch.Tensor:
    """Random pixels, the same every time; 3 images so that a graph whose batch was baked in at 2 fails."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, *classifier.input_size, generator=generator).to(classifier.device)


def score_difference(a: Classifier, b: Classifier) -> float:
    """Largest absolute difference between the two classifiers' scores on the check batch
    (``2 * CHECK_IMAGES`` forward passes).
    """
    x = check_batch(a)
    return float((a(x) - b(x)).abs().max())


def use_runtime(
    classifier: Classifier,
    runtime: str = "auto",
    *,
    threads: int | None = None,
    precision: str = "fp32",
    own_module: bool = False,
    calibration: Sequence[Any] | None = None,
) -> Classifier:
    """``classifier`` scored by the chosen runtime (a new adapter for ONNX Runtime).

    ``own_module``: the module is the caller's own ``nn.Module``. "auto" keeps
    such a module in torch: the caller may train it after loading (the
    exported copy would go stale) and its Python code may do things a traced
    graph cannot (side effects, data-dependent branches) that one check batch
    cannot rule out. ``runtime="onnx"`` exports it anyway.

    ``runtime="onnx-int8"``: a statically quantised copy of the export (or of
    an ONNX file), calibrated on ``calibration`` (images, as ``explain`` takes
    them; default: the bundled photos, which an ONNX file of your own cannot
    use, as its inputs may be anything). "auto" chooses int8 by itself only for
    models that declare it safe (the default model) on CPUs with VNNI or AMX,
    and only when its maps pass the check of models/int8.py.
    """
    _check_choice(classifier, runtime, precision, calibration)
    threads = resolve_threads(threads)
    if not isinstance(classifier, TorchClassifier):
        if runtime == "onnx-int8":
            return _int8_file(classifier, calibration, threads or available_cores())
        return _black_box(classifier, runtime, precision)
    if threads is not None:
        torch.set_num_threads(threads)  # whole process: only when asked for
    if classifier.kind == "auto" and runtime == "auto" and on_cpu_torch(classifier) and not own_module:
        classifier.settle_kind()  # a file that answers with boxes is not exported: ask it once which it is
    if classifier.kind == "auto" and classifier.autocast_dtype is not None:
        classifier.settle_kind()  # bf16 on a GPU is for classifiers: know the kind before the first real answer
    if classifier.model_kind == ModelKind.DETECTOR:  # boxes of a variable count: the ONNX export and its check are for class scores
        return _detector(classifier, runtime, precision)
    if precision == "bf16":
        return _bf16(classifier)
    on_cpu = classifier.device.type == "cpu"
    # torch's ONNX exporter traces Python modules; on a TorchScript file it fails every time (a line
    # and two seconds on each load), so "auto" does not try; runtime="onnx" still does, and says why it failed
    # read the instance's own attribute: ``.module`` would build a lazily loaded model (models/default.py)
    scripted = isinstance(vars(classifier).get("_module"), torch.jit.ScriptModule)
    if runtime == "torch" or (runtime == "auto" and (not on_cpu or own_module or scripted)):
        why = ("asked for" if runtime == "torch" else "a GPU" if not on_cpu
               else "a TorchScript module (the ONNX exporter traces Python modules)" if scripted
               else "your own module (runtime='onnx' exports it)")
        classifier.details = {"chosen_because": why}
        return classifier
    int8 = runtime == "onnx-int8" or (runtime == "auto" and classifier.int8_in_auto and bool(int8_instructions()))
    fast = _onnx(classifier, explicit=runtime != "auto", threads=threads or available_cores(), explicit_threads=threads is not None)
    if not int8 or fast is classifier:  # no int8 asked for, or no ONNX Runtime at all (the fallback says why)
        return fast
    return _int8(classifier, fast, explicit=runtime == "onnx-int8", calibration=calibration)  # type: ignore[arg-type]


def _check_choice(classifier: Classifier, runtime: str, precision: str, calibration: Sequence[Any] | None) -> None:
    """The runtime, precision and calibration asked for, each one line if it cannot be had."""
    if runtime not in RUNTIMES:
        raise ModelError(f"runtime={runtime!r}: use one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ModelError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    if runtime == "onnx-int8" and classifier.device.type != "cpu":
        raise ModelError(f"{classifier.model_id}: runtime='onnx-int8' is for CPUs (VNNI or AMX); on a GPU, torch runs bf16")
    if calibration is not None and runtime != "onnx-int8":
        raise ModelError(f"{classifier.model_id}: calibration images are only used with runtime='onnx-int8'")


def _black_box(classifier: Classifier, runtime: str, precision: str) -> Classifier:
    """A model that is not a torch module runs as it is: only what needs a module is refused."""
    if runtime == "onnx" and classifier.runtime != "onnxruntime":
        raise ModelError(f"{classifier.model_id}: runtime='onnx' needs a PyTorch model to export; this one is a black box")
    if precision != "fp32":
        raise ModelError(f"{classifier.model_id}: precision={precision!r} needs a PyTorch model")
    return classifier


def _detector(classifier: TorchClassifier, runtime: str, precision: str) -> TorchClassifier:
    """An object detector runs in torch at fp32: its boxes come in variable counts, and bf16 moves them."""
    if runtime == "onnx" or precision != "fp32":
        raise ModelError(f"{classifier.model_id}: an object detector runs in torch at fp32 (runtime='onnx' and bf16 are for classifiers)")
    if classifier.autocast_dtype is not None:
        classifier.autocast_dtype = None  # under bf16 autocast torchvision's boxes snap to multiples of 16 and NMS keeps others
    classifier.details = {**classifier.details, "chosen_because": "an object detector"}
    return classifier


def on_cpu_torch(classifier: Classifier) -> bool:
    return classifier.device.type == "cpu"


def _fallback(classifier: TorchClassifier, reason: str, *, say: bool = True) -> TorchClassifier:
    if say:
        log.warning("patchlens: %s: %s; running with torch", classifier.model_id, reason)
    classifier.details = {"fallback": reason}
    return classifier


def _onnx(classifier: TorchClassifier, *, explicit: bool, threads: int, explicit_threads: bool = False) -> Classifier:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        # "auto" without onnxruntime is a supported set-up, not a failure worth a line
        return _fallback(classifier, "onnxruntime is not installed (pip install onnxruntime onnx)", say=explicit)
    from .onnx_runtime import OnnxRuntimeClassifier, RememberedExportFailure, cached_export, remembered_check

    try:
        path, exported = cached_export(classifier)
    except RememberedExportFailure as exc:
        return _fallback(classifier, f"ONNX export failed ({exc})")
    except Exception as exc:  # noqa: BLE001  third-party code (a loader, an exporter, a runtime) may raise anything: one ModelError or a fallback
        return _fallback(classifier, f"ONNX export failed ({type(exc).__name__}: {_first_line(exc)})")
    try:
        fast = OnnxRuntimeClassifier(classifier, path, threads=threads)
        diff, remembered = remembered_check(path, fast.provider, lambda: score_difference(classifier, fast))
    except Exception as exc:  # noqa: BLE001  third-party code (a loader, an exporter, a runtime) may raise anything: one ModelError or a fallback
        return _fallback(classifier, f"ONNX Runtime could not run the exported model ({type(exc).__name__}: {_first_line(exc)})")
    if diff > CHECK_TOLERANCE:
        if not explicit:
            return _fallback(classifier, f"ONNX Runtime's scores differ from torch's by {diff:.2g} (> {CHECK_TOLERANCE:g})")
        log.warning("patchlens: %s: ONNX Runtime's scores differ from torch's by %.2g on a check batch", classifier.model_id, diff)
    fast.details = {"check_max_abs_diff": diff, "check_remembered": remembered, "exported_now": exported, "file": str(path),
                    "check_forward_passes": 0 if remembered else 2 * CHECK_IMAGES}
    if explicit_threads:
        fast.torch_threads = None  # the caller set torch's threads; leave them
    return fast


def _int8(classifier: TorchClassifier, fast: OnnxRuntimeClassifier, *, explicit: bool, calibration: Sequence[Any] | None) -> Classifier:
    """The int8 copy of ``fast``'s export when its maps pass the check; else ``fast``, saying why."""
    from .int8 import bundled_photos, cached_quantized, calibration_inputs, int8_instructions, map_agreement, remembered_agreement
    from .onnx_runtime import OnnxRuntimeClassifier

    photos = _calibration_photos(calibration) if calibration is not None else bundled_photos()
    pixels = [p for _, p in photos]
    try:
        path, made = cached_quantized(
            fast.path, fast.path.stem, pixels, "pixels",
            lambda: [x[None].numpy() for x in calibration_inputs(pixels, classifier.input_size)], fast.path.parent,
        )
        quantised = OnnxRuntimeClassifier(classifier, path, threads=fast.threads)
        quantised.precision = "int8"
        checked = _check_inputs(photos, classifier.input_size)
        agreement, remembered = remembered_agreement(path, lambda: map_agreement(fast, quantised, checked))
    except Exception as exc:  # noqa: BLE001  quantising and checking run third-party code: any failure means no int8, said
        reason = f"no int8 copy ({type(exc).__name__}: {_first_line(exc)})"
        if explicit:
            log.warning("patchlens: %s: %s; running the float32 export", classifier.model_id, reason)
        fast.details["int8"] = {"used": False, "why": reason}
        return fast
    record = {**agreement.record(), "check_remembered": remembered, "made_now": made, "file": str(path), "cpu_int8": int8_instructions()}
    if not agreement.passed:
        if not explicit:
            fast.details["int8"] = {"used": False, "why": agreement.summary(), **record}
            return fast
        log.warning("patchlens: %s: int8 changes the maps (%s); running int8 as asked", classifier.model_id, agreement.summary())
    quantised.details = {**fast.details, "int8": {"used": True, **record}}
    if fast.torch_threads is None:
        quantised.torch_threads = None
    return quantised


def _int8_file(classifier: Any, calibration: Sequence[Any] | None, threads: int) -> Classifier:
    """An ONNX file of the user's, quantised on the user's calibration images."""
    from .int8 import cached_quantized, calibration_inputs, file_key, map_agreement, remembered_agreement

    # an ONNX file's adapter (models/files.py, which imports this module) is known by the graph it can swap
    if not callable(getattr(classifier, "with_graph", None)):
        raise ModelError(f"{classifier.model_id}: runtime='onnx-int8' needs a PyTorch model or an ONNX file; this one is a black box")
    if not calibration:
        raise ModelError(
            f"{classifier.model_id}: runtime='onnx-int8' on an ONNX file needs calibration images "
            "(calibration=[...] or --calibration FILE...): a few typical inputs of this model"
        )
    from .._paths import cache_dir

    photos = _calibration_photos(calibration)
    pixels = [p for _, p in photos]

    def batches() -> list[np.ndarray]:
        return [classifier.normalise_numpy(x[None].numpy()) for x in calibration_inputs(pixels, classifier.input_size)]

    source = classifier.path
    path, made = cached_quantized(source, file_key(source), pixels, classifier.input_name, batches, cache_dir() / "onnx" / "int8")
    quantised = classifier.with_graph(path, precision="int8", threads=threads)
    # the check photos are the calibration images, part of the file's key: one remembered check per file
    agreement, remembered = remembered_agreement(path, lambda: map_agreement(classifier, quantised, _check_inputs(photos, classifier.input_size)))
    if not agreement.passed:
        log.warning("patchlens: %s: int8 changes the maps on your calibration images (%s)", classifier.model_id, agreement.summary())
    quantised.details = {"int8": {"used": True, **agreement.record(), "check_remembered": remembered, "made_now": made, "file": str(path)}}
    return quantised


def _calibration_photos(calibration: Sequence[Any]) -> list[tuple[str, np.ndarray]]:
    from ..images import load_image

    if isinstance(calibration, (str, bytes)) or not len(calibration):
        raise ModelError("calibration: a list of images (paths or arrays), at least one")
    found = []
    for item in calibration:
        image = load_image(item)
        found.append((image.name, image.pixels))
    return found


def _check_inputs(photos: Sequence[tuple[str, np.ndarray]], input_size: tuple[int, int]) -> list[tuple[str, torch.Tensor]]:
    from ..images import resize, to_tensor
    from .int8 import CHECK_IMAGES

    return [(name, resize(to_tensor(p)[None], input_size)[0]) for name, p in photos[:CHECK_IMAGES]]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no message"


def bf16_supported() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); emulated bf16 is slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001  a private torch op: missing or failing means no native bf16
        return False


def _bf16(classifier: TorchClassifier) -> TorchClassifier:
    """Torch with bf16 autocast, only where it is native and leaves the map's ranking alone."""
    if classifier.device.type == "cpu" and not bf16_supported():
        return _fallback(classifier, "precision='bf16': this CPU has no native bf16 (AVX512-BF16 or AMX), fp32 is faster")
    if classifier.autocast_dtype == torch.bfloat16:
        classifier.details = {"precision": "bf16"}
        return classifier  # the GPU default already
    reduced = _with_autocast(classifier, torch.bfloat16)
    rho = occlusion_rank_correlation(classifier, reduced)
    checked = 2 * (CHECK_GRID * CHECK_GRID + 1)  # both models on the photo and each occluded copy
    if rho < PRECISION_MIN_RANK_CORRELATION:
        out = _fallback(classifier, f"precision='bf16' changes the map (rank correlation {rho:.3f} < {PRECISION_MIN_RANK_CORRELATION})")
        out.details["check_forward_passes"] = checked
        return out
    reduced.details = {"precision": "bf16", "check_rank_correlation": rho, "check_forward_passes": checked}
    return reduced


def _with_autocast(classifier: TorchClassifier, dtype: torch.dtype) -> TorchClassifier:
    import copy

    out = copy.copy(classifier)
    out.autocast_dtype = dtype
    return out


#: the occlusion check's grid: grid x grid squares, so 2 * (grid² + 1) forward passes
CHECK_GRID = 8


def occlusion_rank_correlation(reference: Classifier, other: Classifier, grid: int = CHECK_GRID) -> float:
    """Spearman correlation of two classifiers' occlusion maps (``grid`` x ``grid`` grey squares) on a bundled photo.

    The check is a map, not a score: reduced precision matters when it
    reorders the small score changes a saliency map is made of.
    """
    from ..examples import example_path
    from ..images import load_image, resize, to_tensor

    photo = resize(to_tensor(load_image(example_path("coffee")).pixels)[None], reference.input_size)[0]
    h, w = reference.input_size
    inputs = [photo]
    for i in range(grid):
        for j in range(grid):
            x = photo.clone()
            x[:, i * h // grid : (i + 1) * h // grid, j * w // grid : (j + 1) * w // grid] = 0.5
            inputs.append(x)
    batch = torch.stack(inputs).to(reference.device)
    ref_scores = torch.cat([reference(batch[k : k + 16]) for k in range(0, len(batch), 16)])
    new_scores = torch.cat([other(batch[k : k + 16]) for k in range(0, len(batch), 16)])
    target = int(ref_scores[0].argmax())  # the reference's top class, for both maps
    ref_map = ref_scores[0, target] - ref_scores[1:, target]
    new_map = new_scores[0, target] - new_scores[1:, target]
    return spearman(ref_map.cpu(), new_map.cpu())
