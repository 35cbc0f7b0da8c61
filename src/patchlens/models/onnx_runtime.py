"""Run a torch model's forward passes in ONNX Runtime, keeping torch for gradients.

On a CPU, ONNX Runtime scores the same EfficientNet-Lite0 weights about four
times faster than torch eager (benchmarks/RESULTS.md, "Runtimes"). The module
is exported once, with normalisation and the activation inside the graph, and the file
is cached on disk under a key made of everything that changes the graph: the
weights, the architecture, the input size, the adapter's settings and the
export settings. A second load with the same key does not export again.

Gradient methods and everything else that needs the module (``module``,
``logits``, ``normalise``) still go to the torch classifier this one was made
from, so white-box methods work unchanged on an ONNX Runtime model.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import itertools
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._paths import cache_dir
from ..capabilities import Capability
from ..errors import ModelError
from .classifier import Classifier
from .export_cache import mark_used, prune, remembered
from .spinning import SpinningChoice, spinning_setting
from .torch_module import TorchClassifier
from .vit import TokenView

#: opset of the exported graphs; part of the cache key.
OPSET = 17
#: bump when the exported graph's contract changes (inputs, outputs, what is inside).
EXPORT_FORMAT = 1


def activation_key(classifier: TorchClassifier) -> object:
    """The activation as the cache key holds it: the ``softmax`` flag it held before ``activation`` existed
    (True, False), so the files exported then stay valid; any other activation by its name.
    """
    return {"softmax": True, "none": False}.get(classifier.activation, classifier.activation)


def export_key(classifier: TorchClassifier) -> str:
    """A hash of everything that decides the exported graph (weights, architecture, sizes, settings)."""
    h = hashlib.sha256()
    module = classifier.module
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    settings = (
        type(module).__module__,
        type(module).__qualname__,
        repr(module),  # the architecture, as far as torch can print it
        classifier.input_size,
        classifier._mean.flatten().tolist(),
        classifier._std.flatten().tolist(),
        activation_key(classifier),
        OPSET,
        EXPORT_FORMAT,
        "torchscript-exporter",
        torch.__version__,
    )
    h.update(repr(settings).encode())
    return h.hexdigest()


def remembered_export_key(classifier: TorchClassifier) -> str:
    """:func:`export_key`, read from a record when the weights come from a file that is unchanged since.

    Hashing the weights needs the module; for a model whose module is built on
    first use (the default model, models/default.py) building it is most of a
    cached load. Such a classifier names its source (``weights_source()``: the
    weights file's path, size and modification time, the architecture's
    package version); with the adapter's settings and the export settings that
    names the key, which is computed once and kept under ``onnx/keys/``. A
    changed file, package, torch or setting makes another record.
    """
    source = getattr(classifier, "weights_source", None)
    if not callable(source):
        return export_key(classifier)
    stamp = {
        **source(),
        "input_size": list(classifier.input_size),
        "mean": classifier._mean.flatten().tolist(),
        "std": classifier._std.flatten().tolist(),
        "softmax": activation_key(classifier),
        "class": f"{type(classifier).__module__}.{type(classifier).__qualname__}",
        "export": [OPSET, EXPORT_FORMAT, "torchscript-exporter", torch.__version__],
    }
    text = json.dumps(stamp, sort_keys=True)
    record = cache_dir() / "onnx" / "keys" / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.json"
    try:
        saved = json.loads(record.read_text())
        if saved["stamp"] == json.loads(text):
            return str(saved["key"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    key = export_key(classifier)
    _write_atomically(record, json.dumps({"stamp": stamp, "key": key}))
    return key


class _ScoringGraph(torch.nn.Module):
    """What gets exported: [0, 1] pixels in, the classifier's scores out (normalisation and activation inside).

    The activation is the classifier's own :meth:`~patchlens.models.Classifier.activate`, traced into
    the graph: ONNX Runtime's softmax differs from torch's in the last bits, and maps made with the
    graph's must stay what they were.
    """

    def __init__(self, classifier: TorchClassifier) -> None:
        super().__init__()
        self.module = classifier.module  # registered, so its weights become the graph's initializers
        self.plain = copy.copy(classifier)
        self.plain.autocast_dtype = None  # export the float32 graph whatever the torch side runs in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.plain.activate(self.plain._forward(x))  # type: ignore[return-value]


def export_onnx(classifier: TorchClassifier, path: Path) -> None:
    """Export ``classifier`` (module + normalisation + activation) to ``path``, atomically.

    The TorchScript-based exporter (``dynamo=False``) is used because it needs
    only the ``onnx`` package; the newer exporter also needs onnxscript. The file
    is written under a temporary name and renamed, so processes that load the
    same model at once never read a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    graph = _ScoringGraph(classifier)
    dummy = torch.rand(2, 3, *classifier.input_size, device=classifier.device)
    try:
        with classifier.evaluating(), torch.no_grad(), warnings.catch_warnings(), _stdout_silenced():
            warnings.simplefilter("ignore")  # the exporter warns about its own deprecation and constant folding
            torch.onnx.export(
                graph,
                (dummy,),
                str(tmp),
                dynamo=False,
                input_names=["pixels"],
                output_names=["scores"],
                dynamic_axes={"pixels": {0: "batch"}, "scores": {0: "batch"}},
                opset_version=OPSET,
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    """Silence stdout at the file-descriptor level while exporting.

    On failure the TorchScript exporter prints its whole IR graph from C++
    (torch 2.13/2.14 switch its ONNX log on and never off again), which would
    bury the one line that says why we fell back to torch.
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no real stdout (embedded interpreters): nothing to silence
        with contextlib.redirect_stdout(io.StringIO()):
            yield
        return
    try:
        os.dup2(devnull, 1)
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
        with contextlib.suppress(AttributeError):
            torch._C._jit_set_onnx_log_enabled(False)


class RememberedExportFailure(Exception):
    """The export of this very graph (same cache key, same exporter) failed before; it is not tried again."""


def cached_export(classifier: TorchClassifier) -> tuple[Path, bool]:
    """The exported file for ``classifier`` and whether this call had to export it.

    A failed export is remembered beside where the file would be (``.failed.json``),
    so that every later load falls back to torch at once instead of paying for
    the export again (the TorchScript exporter traces the whole model first). The
    record holds the exporter's versions: installing another onnx or torch
    retries, as does a change of anything in the cache key, or deleting the record.
    """
    key = remembered_export_key(classifier)
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in classifier.model_id)[:40]
    path = cache_dir() / "onnx" / f"{stem}-{key[:24]}.onnx"
    if path.is_file():
        mark_used(path)  # the size bound removes the least recently used exports first
        return path, False
    failed = path.with_name(path.stem + ".failed.json")
    stamp = _exporter_stamp()
    try:
        saved = json.loads(failed.read_text())
        if saved["stamp"] == stamp:
            raise RememberedExportFailure(f"{saved['error']}; remembered from an earlier load, delete {failed} to retry")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        export_onnx(classifier, path)
    except OSError:
        raise  # the disk, not the graph (a full or read-only cache): worth trying again next time
    except Exception as exc:
        text = str(exc).strip()
        error = f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else 'no message'}"
        _write_atomically(failed, json.dumps({"stamp": stamp, "error": error}))
        raise
    prune(keep=path)  # the folder is bounded ($PATCHLENS_CACHE_MAX): each new export may push out old ones
    return path, True


def _exporter_stamp() -> dict[str, str | None]:
    """The versions a failed export depends on besides the cache key (which holds torch's)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        onnx_version: str | None = version("onnx")
    except PackageNotFoundError:
        onnx_version = None
    return {"torch": torch.__version__, "onnx": onnx_version}


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` under a temporary name and rename; a read-only cache just stays unwritten."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def remembered_check(path: Path, provider: str, compute: Callable[[], float]) -> tuple[float, bool]:
    """The check's result for the exported file at ``path``, computed once per ONNX Runtime version, provider and CPU.

    Scoring the check batch with torch is the slowest part of a cached load on
    a busy CPU (5 s at load average 16 on 2 cores), and its answer only changes
    with the graph (the file), ONNX Runtime's kernels or the CPU's instruction set.
    Returns the largest score difference and whether it came from the record.
    """
    import onnxruntime as ort

    stamp = {"onnxruntime": ort.__version__, "provider": provider, "cpu": torch.backends.cpu.get_cpu_capability()}
    diff, kept = remembered(path.with_name(path.stem + ".check.json"), stamp, lambda: float(compute()))
    return float(diff), kept


def session_options(threads: int, spinning: bool) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads keep a core busy between batches; when other processes want
    # the cores they steal time from them and from each other.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3  # errors only; ORT's warnings are about its own graph rewrites
    return options


class OnnxRuntimeClassifier(Classifier):
    """A :class:`TorchClassifier` whose forward passes run in ONNX Runtime.

    Args:
        torch_classifier: the classifier the graph was exported from; gradients,
            ``module``, ``logits`` and ``normalise`` are its.
        path: the exported graph.
        threads: ONNX Runtime's intra-op threads.
        spinning: let idle ORT threads spin (True), never (False), or None: measured on
            the real work, batch by batch (models/spinning.py; ``$PATCHLENS_SPINNING``).
    """

    runtime = "onnxruntime"
    #: torch threads while a black-box method runs on this model (models/runtime.py, ``scoring_threads``):
    #: torch then only composes masks, and with 2 threads it collapsed under contention.
    torch_threads: int | None = 1
    #: what the graph computes in (an int8 graph says so: models/int8.py)
    precision = "fp32"

    def __init__(self, torch_classifier: TorchClassifier, path: Path, *, threads: int, spinning: bool | None = None) -> None:
        import onnxruntime as ort

        self.torch_classifier = torch_classifier
        self.input_size = torch_classifier.input_size
        self.labels = torch_classifier.labels
        self.device = torch_classifier.device
        self.model_id = torch_classifier.model_id
        self.autocast_dtype = torch_classifier.autocast_dtype
        self.outputs_probabilities = torch_classifier.outputs_probabilities
        self.activation = torch_classifier.activation
        self.path, self.threads = path, threads
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ModelError("this onnxruntime build has no CUDA provider (pip install onnxruntime-gpu)")
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            providers: list[Any] = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
            setting = "off"  # CPU threads only feed the GPU: nothing to measure
        else:
            providers = ["CPUExecutionProvider"]
            setting = spinning_setting() if spinning is None else ("on" if spinning else "off")
        make = lambda spin: ort.InferenceSession(str(path), session_options(threads, spin), providers=providers)  # noqa: E731
        self.threading = SpinningChoice(lambda: make(False), lambda: make(True), setting)
        self.session = self.threading.session(setting == "on")  # opened now: a file ORT cannot run fails here
        self.provider = self.session.get_providers()[0]
        #: filled by the runtime choice: the check's max abs difference to torch, a note.
        self.details: dict[str, Any] = {}
        # the weights the graph holds; for a module built on first use (models/default.py), taken when it is built
        self._stamp = weights_stamp(torch_classifier.module) if getattr(torch_classifier, "module_built", True) else None
        self.stale = False

    def _weights_changed(self) -> bool:
        if self._stamp is None:
            if not getattr(self.torch_classifier, "module_built", True):
                return False  # not built yet: its weights are still the file's, which the graph holds
            self._stamp = self.torch_classifier.built_weights_stamp  # type: ignore[attr-defined]
        return weights_stamp(self.module) != self._stamp

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        if self.stale or self._weights_changed():
            # The module was changed after export (say, trained on): the graph holds
            # the old weights, so torch answers from now on rather than a stale copy.
            if not self.stale:
                self.stale = True
                self.details["stale"] = "weights changed after export; scored with torch since"
                logging.getLogger("patchlens").warning(
                    "patchlens: %s: the model's weights changed after export; scoring with torch from now on", self.model_id
                )
            return self.torch_classifier.activate(self.torch_classifier._scores(x))  # type: ignore[return-value]
        batch = x.detach().to("cpu", torch.float32).contiguous().numpy()
        spinning, kind = self.threading.next_batch(len(batch))
        tick = time.perf_counter()
        try:
            out = self.threading.session(spinning).run(None, {"pixels": batch})[0]
        except Exception as exc:  # noqa: BLE001  third-party code (a loader, an exporter, a runtime) may raise anything: one ModelError or a fallback
            kind = None
            raise ModelError(f"{self.model_id}: onnxruntime failed: {str(exc).splitlines()[0]}") from None
        finally:
            self.threading.timed(spinning, len(batch), time.perf_counter() - tick, kind)
        return torch.from_numpy(np.asarray(out, np.float32)).to(self.device)

    def activate(self, out: object) -> object:
        """The graph's output as it is: the graph ends in the torch classifier's own :meth:`activate`
        (see :class:`_ScoringGraph`), so its scores are activated already, by the same function.
        """
        return out

    # -- white-box access: the torch side ---------------------------------------
    @property
    def module(self) -> torch.nn.Module:
        return self.torch_classifier.module

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.torch_classifier.logits(x)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return self.torch_classifier.normalise(x)

    def evaluating(self) -> contextlib.AbstractContextManager[None]:
        return self.torch_classifier.evaluating()

    @property
    def capabilities(self) -> Capability:
        return self.torch_classifier.capabilities  # scores here; gradients, layers and tokens from torch

    def lacks(self, flag: Capability) -> str | None:
        return self.torch_classifier.lacks(flag)

    def input_mean(self) -> tuple[float, float, float]:
        return self.torch_classifier.input_mean()  # the same normalisation runs inside the exported graph

    def token_view(self, image: torch.Tensor) -> TokenView:
        return self.torch_classifier.token_view(image)

    def score_tokens(self, view: TokenView, keep: torch.Tensor) -> torch.Tensor:
        return self.torch_classifier.score_tokens(view, keep)

    @property
    def runtime_details(self) -> dict[str, Any]:
        runtime = "torch" if self.stale else self.runtime
        return {
            "runtime": runtime, "provider": self.provider, "threads": self.threads, "precision": self.precision,
            "spinning": dict(self.threading.record), **self.details,
        }

    def __repr__(self) -> str:
        return f"OnnxRuntimeClassifier({self.model_id!r}, input_size={self.input_size}, {self.provider}, threads={self.threads})"


def weights_stamp(module: torch.nn.Module) -> tuple[tuple[int, int], ...]:
    """Identity and version counter of every weight: any in-place change or rebinding changes it."""
    return tuple((id(t), t._version) for t in itertools.chain(module.parameters(), module.buffers()))
