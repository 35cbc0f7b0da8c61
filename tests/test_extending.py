"""Extending patchlens: a new method in one file reaches every front-end; capability errors are the same everywhere."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

import patchlens
from patchlens.cli import main
from patchlens.errors import MethodError
from patchlens.methods import base as method_base

PLUGIN = '''
"""A user's method in a file of its own: the map is the image's brightness times a gain."""
from dataclasses import dataclass

from patchlens.methods import Attribution, Method, param, register


@register
@dataclass(frozen=True)
class Brightness(Method):
    name = "brightness_test"
    summary = "test plug-in: brightness times a gain"

    gain: float = param(2.0, "how much to scale the brightness by", low=0.0)

    def attribute(self, job, state):
        maps = job.image.mean(0, keepdim=True) * self.gain
        job.engine.score_one(job.image)  # one counted pass, through the engine like any method
        return Attribution(maps=maps.expand(len(job.objective), -1, -1).clone())
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "my_patchlens_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_patchlens_plugin  # noqa: F401  registering is importing

    yield "brightness_test"
    method_base._REGISTRY.pop("brightness_test", None)
    sys.modules.pop("my_patchlens_plugin", None)


def test_a_method_in_one_file_reaches_the_api_cli_web_and_batch(plugin, tmp_path, capsys):
    # API
    listed = patchlens.list_methods()[plugin]
    assert listed["kind"] == "black-box" and listed["parameters"][0]["name"] == "gain"
    exp = patchlens.explain(patchlens.load_model(lambda x: x.mean((2, 3)), input_size=32), "example:coffee", plugin, gain=3.0)
    assert exp.method == plugin and exp.params == {"gain": 3.0} and exp.forward_passes == 2

    # CLI: the listing and the generated option
    assert main(["methods"]) == 0
    assert plugin in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["explain", "--method", plugin, "--help"])
    assert "--gain" in capsys.readouterr().out

    # web form: generated from /api/info
    from fastapi.testclient import TestClient

    from patchlens.web import WebConfig, create_app

    clf = patchlens.load_model(lambda x: x.mean((2, 3)), input_size=32)
    with TestClient(create_app(clf, config=WebConfig()), base_url="http://127.0.0.1") as client:
        info = client.get("/api/info").json()
        assert info["methods"][plugin]["parameters"][0]["help"] == "how much to scale the brightness by"
        assert info["methods"][plugin]["usable"] is True

    # batch
    pytest.importorskip("pyarrow")
    from patchlens.batch import open_store, run_batch

    src = tmp_path / "photos"
    src.mkdir()
    from PIL import Image

    Image.fromarray(np.full((20, 24, 3), 200, np.uint8)).save(src / "a.png")
    summary = run_batch(str(src), str(tmp_path / "store"), model=clf, method=plugin, gain=0.5, progress=False)
    assert summary.done == 1
    store = open_store(tmp_path / "store")
    np.testing.assert_allclose(store.map(0), np.full((20, 24), 200 / 255 * 0.5), atol=2e-3)  # float16 store


def cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))


EXPECTED = "attention_rollout: needs tokens, but Sequential is not a timm Vision Transformer (no patch tokens); use one of"


def test_the_capability_error_is_one_line_and_the_same_from_every_front_end(tmp_path, capsys, monkeypatch):
    clf = patchlens.load_model(cnn(), input_size=32, model_id="Sequential")
    with pytest.raises(MethodError) as api_error:
        patchlens.explain(clf, "example:coffee", "attention_rollout")
    message = str(api_error.value)
    assert message.startswith(EXPECTED) and "\n" not in message and "rise" in message

    # CLI: patchlens explain, before any forward pass (a spy counts model calls)
    calls = []
    monkeypatch.setattr("patchlens.cli.explain.load_cli_model", lambda args: _spy(clf, calls))
    assert main(["explain", "example:coffee", "example:chelsea", "--method", "attention_rollout", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"patchlens: error: {message}"] and calls == []

    # web: refused when the job is submitted
    from fastapi.testclient import TestClient

    from patchlens.web import WebConfig, create_app

    with TestClient(create_app(clf, config=WebConfig()), base_url="http://127.0.0.1") as client:
        image_id = client.post("/api/images/example/coffee").json()["id"]
        r = client.post("/api/jobs", json={"image_id": image_id, "methods": [{"name": "attention_rollout", "params": {}}]})
        assert r.status_code in (400, 422) and message in r.text

    # batch: refused before the store is created
    pytest.importorskip("pyarrow")
    from patchlens.batch import run_batch

    with pytest.raises(MethodError) as batch_error:
        run_batch(["x.png"], str(tmp_path / "store"), model=clf, method="attention_rollout", progress=False)
    assert str(batch_error.value) == message and not (tmp_path / "store").exists()

    # compare (and so benchmark, which calls it)
    from patchlens.metrics import compare

    with pytest.raises(MethodError) as compare_error:
        compare(clf, ["example:coffee"], ["rise", "attention_rollout"], ["sparseness"])
    assert str(compare_error.value) == message


def _spy(clf, calls):
    original = clf._scores

    def counted(x):
        calls.append(len(x))
        return original(x)

    clf._scores = counted
    return clf


def test_token_masking_on_a_cnn_names_the_parameter_and_its_fix():
    clf = patchlens.load_model(cnn(), input_size=32)
    with pytest.raises(MethodError, match=r"^rise: masking='tokens' needs token drop, .* use masking='pixels'$"):
        patchlens.explain(clf, "example:coffee", "rise", masking="tokens", n_masks=10)


def test_a_missing_extra_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    import importlib.util

    from patchlens.batch import run_batch
    from patchlens.extras import MissingExtra

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    with pytest.raises(MissingExtra, match=r"patchlens batch needs pyarrow: pip install 'patchlens\[batch\]'"):
        run_batch(["x.png"], str(tmp_path / "store"), model=lambda x: x.mean((2, 3)), progress=False)
    assert not (tmp_path / "store").exists()
