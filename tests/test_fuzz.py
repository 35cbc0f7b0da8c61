"""Issues 13 and 26: generated hostile inputs give patchlens errors only, in bounded memory and time.

Hypothesis draws arrays, tensors, files and callables; each must either work or
raise a :class:`PatchlensError` with a one-line message. Memory is measured per
example with ``tracemalloc`` (numpy and Pillow buffers are traced); time by a
per-example deadline. The whole file runs in well under a minute.
"""

from __future__ import annotations

import io
import math
import os
import tracemalloc
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, features

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import patchlens  # noqa: E402
from patchlens.errors import PatchlensError  # noqa: E402
from patchlens.images import load_image  # noqa: E402

FUZZ = settings(
    max_examples=60,
    deadline=timedelta(seconds=20),  # a hang fails; a slow shared CI machine does not
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,  # the same examples on every run: CI failures reproduce
)
MEMORY = 96 * 2**20  # traced bytes per example; the inputs themselves are at most a few MB


def only_patchlens_errors(action) -> object:
    """Run ``action``; a non-patchlens exception or a multi-line message fails the test."""
    tracemalloc.start()
    try:
        return action()
    except PatchlensError as exc:
        assert "\n" not in str(exc) and 0 < len(str(exc)) < 500, str(exc)
        return None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MEMORY, f"{peak / 2**20:.0f} MB traced"


DTYPES = st.sampled_from([np.uint8, np.int8, np.uint16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_, np.complex64])
SIDES = st.one_of(st.integers(0, 40), st.sampled_from([1, 2, 3, 4, 4097, 9000, 100_000]))
SPECIAL = st.sampled_from([None, np.nan, np.inf, -np.inf, -1.0, 1e30, 256.0, 70000.0])


@st.composite
def arrays(draw) -> np.ndarray:
    ndim = draw(st.integers(0, 5))
    shape = [draw(SIDES) for _ in range(ndim)]
    if ndim == 3 and draw(st.booleans()):
        shape[draw(st.sampled_from([0, 2]))] = draw(st.sampled_from([1, 3, 4]))
    if math.prod(shape) > 400_000:  # keep each input small; the extreme shapes stay extreme
        shape = [min(s, 4) if i else s for i, s in enumerate(shape)]
    if math.prod(shape) > 400_000:
        shape = [min(s, 20) for s in shape]
    dtype = draw(DTYPES)
    arr = draw(hnp.arrays(dtype, tuple(shape), elements=None, fill=st.just(dtype(0)) if dtype is not np.complex64 else None)) \
        if math.prod(shape) <= 64 else np.zeros(shape, dtype)
    special = draw(SPECIAL)
    if special is not None and arr.size and np.issubdtype(arr.dtype, np.floating):
        arr.flat[draw(st.integers(0, arr.size - 1))] = special
    if arr.ndim >= 2 and draw(st.booleans()):
        arr = arr[::-1, ::-1]  # negatively strided views
    return arr


@FUZZ
@given(arrays())
def test_arrays(arr):
    loaded = only_patchlens_errors(lambda: load_image(arr))
    if loaded is not None:
        px = loaded.pixels
        assert px.dtype == np.uint8 and px.ndim == 3 and px.shape[2] == 3 and max(px.shape[:2]) <= 4096


TENSOR_DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.int64, torch.uint8, torch.bool, torch.complex64])


@FUZZ
@given(arrays(), TENSOR_DTYPES, st.sampled_from(["dense", "sparse", "transposed", "meta", "batched", "nested", "csr", "quantized"]))
def test_tensors(arr, dtype, layout):
    def make() -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(arr.real if np.iscomplexobj(arr) else arr).astype(np.float32)).to(dtype)
        if layout == "nested":  # issue 26: its .shape raised torch's internal error
            return torch.nested.nested_tensor([t, t[..., :1]] if t.ndim else [t, t])
        if layout == "csr" and t.ndim == 2:
            return t.to_sparse_csr()
        if layout == "quantized" and t.is_floating_point():
            return torch.quantize_per_tensor(t.float(), 0.01, 0, torch.quint8)
        if layout == "sparse" and t.ndim >= 1 and dtype not in (torch.float8_e4m3fn,):
            return t.to_sparse()
        if layout == "transposed" and t.ndim >= 2:
            return t.transpose(0, 1)
        if layout == "meta":
            return torch.empty(t.shape, dtype=dtype, device="meta")
        if layout == "batched":
            return t[None]
        return t

    try:
        t = make()
    except (RuntimeError, TypeError):  # torch itself cannot build this tensor: nothing to hand patchlens
        return
    only_patchlens_errors(lambda: load_image(t))


def _file_bytes(kind: str, shape: tuple[int, int], mode: str) -> bytes:
    buf = io.BytesIO()
    img = Image.new(mode, (shape[1], shape[0]))
    img.save(buf, format=kind)
    return buf.getvalue()


#: issue 26: decoders whose plugins raise what Pillow's own do not (AVIF: RuntimeError), and WebP's scaled decode
FORMATS = ["PNG", "JPEG", "TIFF", "GIF", "BMP", "WEBP"] + (["AVIF"] if features.check("avif") else [])
#: issue 26: a file name that is not UTF-8 must not stop anything that names the file
NAMES = st.sampled_from([b"f", b"caf\xe9", b"<!--<script>"])


@settings(FUZZ, max_examples=60)
@given(
    st.sampled_from(FORMATS),
    st.tuples(st.sampled_from([1, 2, 7, 64]), st.sampled_from([1, 3, 64, 5000, 70_000])),
    st.sampled_from(["RGB", "L", "1", "P", "RGBA", "I;16", "I", "F", "LA", "CMYK"]),
    st.sampled_from(["whole", "truncated", "flipped", "garbage", "empty"]),
    st.integers(0, 2**16),
    NAMES,
)
def test_files(tmp_path_factory, kind, shape, mode, damage, where, stem):
    try:
        data = _file_bytes(kind, shape, mode)
    except Exception:  # noqa: BLE001  Pillow cannot write this mode, or this size, in this format
        return
    if damage == "truncated":
        data = data[: max(1, where % len(data))]
    elif damage == "flipped":
        i = where % len(data)
        data = data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1 :]
    elif damage == "garbage":
        data = data[:8] + np.random.default_rng(where).bytes(64)
    elif damage == "empty":
        data = b""
    folder = tmp_path_factory.mktemp("fuzz")
    path = Path(os.fsdecode(os.path.join(os.fsencode(folder), stem + b"." + kind.lower().encode())))
    try:
        path.write_bytes(data)
    except OSError:  # a file system that refuses the name: the name is not what is under test then
        path = folder / f"f.{kind.lower()}"
        path.write_bytes(data)
    loaded = only_patchlens_errors(lambda: load_image(path))
    if loaded is not None:
        loaded.name.encode("utf-8")  # printable, whatever the file system's bytes
    try:
        lazy = Image.open(path)  # the header only: a user's lazily opened image
    except Exception:  # noqa: BLE001  Pillow refuses it outright: nothing to hand patchlens
        return
    only_patchlens_errors(lambda: load_image(lazy))


def _with_grad(p: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode(False):
        return p.clone().requires_grad_()


BEHAVIOURS = st.sampled_from(
    ["probs", "logits", "ints", "nan", "wrong_rows", "three_d", "string", "none", "list", "raise", "grows", "inplace", "grad"]
)


@settings(FUZZ, max_examples=30)
@given(BEHAVIOURS, st.integers(1, 5), st.booleans())
def test_callables(behaviour, classes, as_numpy):
    calls = []

    def fn(batch):
        calls.append(1)
        x = torch.as_tensor(np.asarray(batch)).float()
        n = x.shape[0]
        p = torch.full((n, classes), 1.0 / classes)
        if behaviour == "raise":
            raise KeyError("weights")
        if behaviour == "inplace":
            batch[...] = 0
        answers = {
            "logits": lambda: p * 10 - 3,
            "ints": lambda: np.ones((n, classes), np.int64),
            "nan": lambda: p.clone().fill_(float("nan")),
            "wrong_rows": lambda: p[:-1] if n > 1 else p.repeat(2, 1),
            "three_d": lambda: p[:, :, None],
            "string": lambda: "cat",
            "none": lambda: None,
            "list": lambda: p.tolist(),
            "grows": lambda: torch.full((n, classes + len(calls)), 1.0 / (classes + len(calls))),
            "grad": lambda: _with_grad(p),
        }
        return answers.get(behaviour, lambda: p)()

    model = patchlens.load_model(fn, input_size=16, numpy=as_numpy)
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    exp = only_patchlens_errors(lambda: patchlens.explain(model, image, "occlusion", window=8, stride=8))
    if exp is not None:
        assert np.isfinite(exp.saliency).all()


#: issue 26: NaN, infinities, huge and negative values for every numeric parameter of every method
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70),
                    st.sampled_from([math.nan, math.inf, -math.inf, 0, -1, 2**31, 2**63, 10**9]))


@settings(FUZZ, max_examples=200)
@given(st.data())
def test_method_parameters(data):
    from patchlens.methods import make_method, registry

    name = data.draw(st.sampled_from(sorted(registry())))
    numeric = [p for p in registry()[name].parameters() if p.type in (int, float)]
    if not numeric:
        return
    param = data.draw(st.sampled_from(numeric))
    value = data.draw(NUMBERS)
    method = only_patchlens_errors(lambda: make_method(name, **{param.name: value}))
    if method is not None:  # accepted: then it is a finite number inside the declared range
        got = getattr(method, param.name)
        assert math.isfinite(got) and (param.low is None or got >= param.low) and (param.high is None or got <= param.high)


@settings(FUZZ, max_examples=30)
@given(st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=3), st.booleans(), st.none(),
                 st.sampled_from([2**63 - 1, 2**63, 2**64, -1])))
@pytest.mark.slow
def test_seeds(seed):
    model = patchlens.load_model(lambda x: torch.stack([x.mean((1, 2, 3)), 1 - x.mean((1, 2, 3))], 1), input_size=8)
    image = np.full((8, 8, 3), 100, np.uint8)
    exp = only_patchlens_errors(lambda: patchlens.explain(model, image, "rise", n_masks=4, seed=seed))
    if exp is not None:
        assert np.isfinite(exp.saliency).all()
