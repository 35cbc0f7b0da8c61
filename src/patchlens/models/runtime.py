"""Choosing the runtime that scores a torch model: torch eager or ONNX Runtime.

``load_model(..., runtime="auto")`` (the default) runs the forward passes in
ONNX Runtime on a CPU when it is installed and the exported graph's scores
match torch's on a check batch; torch otherwise, and on GPUs (where torch with
bf16 autocast is already fast). What ran is recorded on the classifier
(``runtime``, ``runtime_details``) and on every result made with it, with the
forward passes its checks took (``check_forward_passes``): they run here, at
load time, before any engine exists, and are counted here.

Thread defaults come from benchmarks/runtimes.py on the shared 2-core machine
(benchmarks/RESULTS.md, "Runtimes"): ONNX Runtime with spinning threads lost
up to half its speed while other processes ran, without spinning it held up,
so spinning is off; its thread count is the cores this process may use.
Torch's own thread count is left alone unless ``threads`` is given, because
it is a setting of the whole process.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

from ..capabilities import ModelKind
from ..errors import ModelError
from ..ranking import spearman
from .classifier import Classifier
from .torch_module import TorchClassifier

log = logging.getLogger("patchlens")

RUNTIMES = ("auto", "torch", "onnx")
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
) -> Classifier:
    """``classifier`` scored by the chosen runtime (a new adapter for ONNX Runtime).

    ``own_module``: the module is the caller's own ``nn.Module``. "auto" keeps
    such a module in torch: the caller may train it after loading (the
    exported copy would go stale) and its Python code may do things a traced
    graph cannot (side effects, data-dependent branches) that one check batch
    cannot rule out. ``runtime="onnx"`` exports it anyway.
    """
    if runtime not in RUNTIMES:
        raise ModelError(f"runtime={runtime!r}: use one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ModelError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    threads = resolve_threads(threads)
    if not isinstance(classifier, TorchClassifier):
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
    return _onnx(classifier, explicit=runtime == "onnx", threads=threads or available_cores(), explicit_threads=threads is not None)


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
