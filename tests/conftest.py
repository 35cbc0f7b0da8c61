"""Shared fixtures: tiny models whose right answer is known."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch

import patchlens
from patchlens.engine import Engine
from patchlens.methods import Attribution, Job, Method
from patchlens.models import CallableClassifier
from patchlens.objectives import class_objective

# Exported ONNX models go to a folder of the test machine's temp dir, not the user's ~/.cache.
os.environ.setdefault("PATCHLENS_CACHE", os.path.join(tempfile.gettempdir(), "patchlens-test-cache"))

SIZE = 64
#: (top, left, bottom, right) of the planted evidence, in a 64x64 image; 14 % of the area.
BOX = (8, 32, 32, 56)


def planted_image(size: int = SIZE, box: tuple[int, int, int, int] = BOX, seed: int = 0) -> np.ndarray:
    """Random texture with a white square where the evidence is."""
    rng = np.random.default_rng(seed)
    img = rng.integers(40, 200, size=(size, size, 3), dtype=np.uint8)
    t, l, b, r = box
    img[t:b, l:r] = 255
    return img


def planted_classifier(size: int = SIZE, box: tuple[int, int, int, int] = BOX) -> CallableClassifier:
    """Two classes; P(class 1) is the mean brightness inside ``box`` and nothing else.

    Any pixel outside the box has no effect on the output, so a faithful map
    must put its evidence inside the box.
    """
    t, l, b, r = box

    def model(x: torch.Tensor) -> torch.Tensor:
        inside = x[:, :, t:b, l:r].mean(dim=(1, 2, 3))
        return torch.stack([1 - inside, inside], dim=1)

    return CallableClassifier(model, input_size=size, labels=["background", "evidence"], model_id="planted")


def box_mask(size: int = SIZE, box: tuple[int, int, int, int] = BOX) -> np.ndarray:
    m = np.zeros((size, size), bool)
    t, l, b, r = box
    m[t:b, l:r] = True
    return m


def top_fraction_inside(saliency: np.ndarray, mask: np.ndarray, fraction: float = 0.10) -> float:
    """Share of the top ``fraction`` most salient pixels that fall inside ``mask``.

    Depends only on the ranking of pixels, so a constant offset (RISE) or a
    positive scale does not change it.
    """
    k = max(1, int(round(fraction * saliency.size)))
    top = np.argsort(saliency.ravel(), kind="stable")[::-1][:k]
    return float(mask.ravel()[top].mean())


class TinyCNN(torch.nn.Module):
    """A small CNN with BatchNorm and Dropout, so training flags matter."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1),
            torch.nn.ReLU(),
        )
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.drop = torch.nn.Dropout(0.5)
        self.fc = torch.nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.pool(self.features(x)).flatten(1)))


def make_job(clf: patchlens.Classifier, x: torch.Tensor, targets: list[int], batch_size: int = 8, seed: int = 0) -> Job:
    """What ``prepare_run`` hands a method, for ``targets`` (class indices) on ``x`` (3, H, W)."""
    objective = class_objective(clf, *targets)
    engine = Engine(clf, batch_size=batch_size)
    reference = objective(engine.output_of(x))[0]
    return Job(clf, x, objective, reference, engine, torch.Generator().manual_seed(seed))


def prepared_cost(model: patchlens.Classifier, image: object, method: Method, target: object = "top1") -> int | None:
    """The forward passes ``method`` states, once prepared, for explaining ``image`` on ``model`` (scoring pass included)."""
    from patchlens.api import prepare_run
    from patchlens.request import RunRequest

    run = prepare_run(model, patchlens.load_image(image), RunRequest(method, target=target))
    run.close()
    return run.passes


def attributed(method: Method, job: Job) -> Attribution:
    """The method run on ``job`` as ``explain_one`` runs it: prepared, then attributed."""
    return method.attribute(job, method.prepare(job).state)


@pytest.fixture
def planted() -> CallableClassifier:
    return planted_classifier()


@pytest.fixture
def tiny_cnn() -> TinyCNN:
    torch.manual_seed(0)  # weights only; the code under test never seeds globally
    return TinyCNN()


@pytest.fixture(scope="session")
def default_model() -> patchlens.Classifier:
    return patchlens.load_model("default", device="cpu")


@pytest.fixture
def one_torch_thread():
    """Tiny models run fastest on one thread (the CI machine is shared); the setting is put back."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def model_state(module: torch.nn.Module) -> dict:
    """What explaining must leave as it was on a user's module: flags, weights, hooks, gradients, devices."""
    return {
        "training": [m.training for m in module.modules()],
        "params": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "requires_grad": [p.requires_grad for p in module.parameters()],
        "grads": [p.grad for p in module.parameters()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), len(m._backward_pre_hooks))
            for m in module.modules()
        ],
        "device": [p.device for p in module.parameters()],
        "memory_format": next(module.parameters()).is_contiguous(),
    }


def assert_same_state(a: dict, b: dict) -> None:
    assert a["training"] == b["training"]
    assert a["requires_grad"] == b["requires_grad"]
    assert a["hooks"] == b["hooks"]
    assert a["device"] == b["device"]
    assert all(g is None for g in b["grads"])
    assert a["params"].keys() == b["params"].keys()
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k


#: Small budgets for the tiny models. Most methods then take well under a second for the contract's
#: six runs; the ViT-only ones take longer (attention rollout about 7 s on a busy 2-core machine).
SMALL: dict[str, dict] = {
    "rise": {"n_masks": 64, "grid": 4},
    "occlusion": {"window": 8, "stride": 8},
    "lime": {"n_samples": 40, "features": "grid", "grid": 3},
    "kernelshap": {"n_samples": 40, "features": "grid", "grid": 3},
    "subset": {"grid": 3},
    "sobol": {"n_designs": 4, "grid": 3},
    "smoothgrad": {"n_samples": 5},
    "integrated_gradients": {"steps": 8},
    "scorecam": {"top_channels": 8},
    "drise": {"n_masks": 64, "grid": 4},
}


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    """batch_fixtures' tiny model as a spec string any process can rebuild (as the CLI and Ray workers must)."""
    from batch_fixtures import tiny_model

    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.jit.save(torch.jit.trace(tiny_model(), torch.rand(1, 3, 224, 224)), str(path))
    return f"torchscript:{path}"
