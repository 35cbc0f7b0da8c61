"""The one engine loop: budget, cancellation, progress, counters, the measured batch size, and what runs through it."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import patchlens
from conftest import box_mask, planted_classifier, planted_image, top_fraction_inside
from patchlens.engine import Engine, Hooks
from patchlens.engine.convergence import settle_ties, spearman
from patchlens.errors import BudgetError, Cancelled, MethodError
from patchlens.images import load_image
from patchlens.methods import Prepared, get_method, make_method
from patchlens.models import CallableClassifier
from patchlens.request import RunRequest


def counting(classes: int = 3) -> tuple[CallableClassifier, list[int]]:
    seen: list[int] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return torch.softmax(x.mean((2, 3)) @ torch.ones(3, classes), dim=1)

    return CallableClassifier(fn, input_size=16), seen


def test_a_budget_stops_the_run_before_the_batch_that_would_exceed_it():
    clf, seen = counting()
    engine = Engine(clf, batch_size=10, max_passes=25)
    with pytest.raises(BudgetError, match="30 forward passes would exceed the budget of 25"):
        engine.run_inputs(lambda a, b: torch.rand(b - a, 3, 16, 16), 100)
    assert seen == [10, 10] and engine.forward_passes == 20  # the third batch never ran


def test_explain_refuses_a_method_whose_prepared_cost_is_over_the_budget_before_its_first_pass():
    clf, seen = counting()
    with pytest.raises(MethodError, match="1,001 forward passes is over the budget of 500"):
        patchlens.explain(clf, "example:coffee", "rise", max_passes=500)
    assert seen == [1]  # the scoring pass that resolves the target, then no pass of the method's
    # superpixels: the count is exact once prepare has cut the image
    seen.clear()
    with pytest.raises(MethodError, match="over the budget of 300"):
        patchlens.explain(clf, "example:coffee", "kernelshap", features="slic", n_samples=5000, max_passes=300)
    assert seen == [1]


def test_the_budget_counts_every_target():
    """A method that searches once per target (subset) costs that many times more on topk:3: the budget
    check counts them all, as the web server's limit does."""
    clf, seen = counting(classes=5)
    img = np.zeros((16, 16, 3), np.uint8)
    one = patchlens.api.prepare_run(clf, load_image(img), RunRequest.of("subset", {"grid": 3})).passes
    three = patchlens.api.prepare_run(clf, load_image(img), RunRequest.of("subset", {"grid": 3}, target="topk:3")).passes
    assert one is not None and three == 1 + 3 * (one - 1)
    with pytest.raises(MethodError, match=f"{three} forward passes is over the budget of {three - 1}"):
        patchlens.explain(clf, img, "subset", grid=3, target="topk:3", max_passes=three - 1)
    assert patchlens.explain(clf, img, "subset", grid=3, target="topk:3", max_passes=three)[0].forward_passes == three


def test_cancellation_is_checked_before_every_batch():
    clf, seen = counting()
    stop = threading.Event()

    def make(a: int, b: int) -> torch.Tensor:
        if a >= 20:
            stop.set()
        return torch.rand(b - a, 3, 16, 16)

    engine = Engine(clf, batch_size=10, hooks=Hooks(cancelled=stop.is_set))
    with pytest.raises(Cancelled):
        engine.run_inputs(make, 100)
    assert seen == [10, 10, 10]


def test_progress_reports_every_batch_and_adds_up_to_the_prepared_cost():
    clf, _ = counting()
    reports: list[int] = []
    request = RunRequest.of("occlusion", {"window": 8, "stride": 8}, batch_size=3)
    run = patchlens.api.prepare_run(clf, load_image(np.zeros((16, 16, 3), np.uint8)), request, Hooks(on_passes=reports.append))
    assert run.passes == 5 and reports == [1]  # 2 x 2 windows and the scoring pass, already run
    exps = run.explain()
    assert reports == [1, 3, 1] and sum(reports) == run.passes == exps[0].forward_passes


def test_counters_belong_to_the_engine():
    clf, _ = counting()
    engine = Engine(clf, batch_size=4)
    with pytest.raises(AttributeError):
        engine.forward_passes = 5  # type: ignore[misc]
    engine.run_once(lambda: clf(torch.rand(1, 3, 16, 16)))
    assert engine.forward_passes == 1


def test_the_measured_batch_size_is_kept_by_the_model_for_every_later_engine():
    clf, seen = counting()
    lock = threading.RLock()
    first = Engine(clf, hooks=Hooks(lock=lock))  # measures on its real work (a web job's engine)
    first.run_inputs(lambda a, b: torch.rand(b - a, 3, 16, 16), 2 * sum(clf.batch_policy.candidates))
    chosen = clf.batch_policy.chosen
    assert chosen in clf.batch_policy.candidates
    seen.clear()
    Engine(clf, hooks=Hooks(lock=lock)).run_inputs(lambda a, b: torch.rand(b - a, 3, 16, 16), 2 * chosen)  # the next job
    assert seen == [chosen, chosen]  # no second round of trial batches


def test_the_lock_is_held_around_every_forward_pass_and_nothing_else():
    clf, _ = counting()
    held: list[bool] = []

    class Spy:
        depth = 0

        def __enter__(self) -> None:
            Spy.depth += 1

        def __exit__(self, *exc: object) -> None:
            Spy.depth -= 1

    inner = clf.fn

    def fn(x: torch.Tensor) -> torch.Tensor:
        held.append(Spy.depth == 1)
        return inner(x)

    clf.fn = fn
    patchlens.api.explain_one(clf, load_image(np.zeros((16, 16, 3), np.uint8)), RunRequest.of("occlusion", {"window": 8, "stride": 8},
                              batch_size=2), Hooks(lock=Spy()))
    assert held == [True] * 3 and Spy.depth == 0


def test_gradient_batches_run_through_the_engine_with_a_budget(tiny_cnn):
    clf = patchlens.load_model(tiny_cnn, input_size=32)
    exp = patchlens.explain(clf, "example:coffee", "smoothgrad", n_samples=9, batch_size=4)
    assert exp.forward_passes == 10  # the scoring pass and nine noisy copies
    with pytest.raises(BudgetError):  # announced within budget, but a run that overspends is stopped
        patchlens.api.explain_one(clf, load_image("example:coffee"), RunRequest(OverSpending(n_samples=9), max_passes=6, batch_size=4))


@dataclass(frozen=True)
class OverSpending(patchlens.methods.registry()["smoothgrad"]):  # type: ignore[misc]
    """SmoothGrad that under-announces its cost, as a buggy plug-in might."""

    def prepare(self, job):
        return Prepared(passes=1)


@pytest.mark.parametrize(
    "name, params",
    [
        ("kernelshap", {"n_samples": 3000, "features": "grid", "grid": 8, "round_size": 100}),
        ("sobol", {"n_designs": 128, "grid": 8, "round_size": 8}),
        ("lime", {"n_samples": 3000, "features": "grid", "grid": 8, "round_size": 100}),
        ("rise", {"n_masks": 3000, "grid": 8, "round_size": 250}),
    ],
)
@pytest.mark.slow
def test_every_sampling_method_stops_once_settled_and_shows_its_map_forming(name, params):
    rounds: list[int] = []
    exp = patchlens.explain(
        planted_classifier(), planted_image(), name, converge=0.98, seed=1, on_map=lambda m, used: rounds.append(used), **params
    )
    conv = exp.extras["convergence"]
    assert conv["stopped_early"] and conv["samples_used"] == rounds[-1] < conv["sample_budget"]
    assert rounds == sorted(rounds) and len(rounds) >= 3
    assert top_fraction_inside(exp.saliency, box_mask()) >= 0.9
    full = patchlens.explain(planted_classifier(), planted_image(), name, seed=1, **params)
    assert "convergence" not in full.extras
    # ranked as the monitor ranks (regions of no effect are equal up to rounding noise)
    resolution = get_method(name).tie_resolution
    early, final = (settle_ties(torch.from_numpy(m)[None], resolution)[0] for m in (exp.saliency, full.saliency))
    assert spearman(early, final) >= 0.9


def test_kernelshap_rounds_keep_efficiency_exact_at_every_stop():
    exp = patchlens.explain(
        planted_classifier(), planted_image(), "kernelshap", features="grid", grid=8, n_samples=3000, converge=0.98, seed=2
    )
    e = exp.extras
    assert e["convergence"]["stopped_early"] and not e["exact"]
    assert sum(e["shapley_values"]) == pytest.approx(e["full_value"] - e["base_value"], abs=1e-6)


def test_the_command_line_and_web_default_to_adaptive_and_say_so(capsys):
    import argparse

    from patchlens.cli import main
    from patchlens.cli._options import method_params
    from patchlens.methods._sampling import INTERACTIVE_CONVERGE, stopping_rule

    rise = patchlens.methods.registry()["rise"]
    ns = argparse.Namespace
    assert method_params(ns(method__n_masks=500), rise, "explain") == {"n_masks": 500, "converge": INTERACTIVE_CONVERGE}
    assert method_params(ns(method__converge=0.0), rise, "explain") == {"converge": 0.0}  # a fixed count on request
    assert method_params(ns(), rise, "compare") == {}
    assert method_params(ns(), patchlens.methods.registry()["occlusion"], "explain") == {}  # not a sampling method
    assert "stops once" in stopping_rule(make_method("rise", converge=0.99))
    assert stopping_rule(make_method("rise")) == "fixed count: every sample is scored"
    assert stopping_rule(make_method("occlusion")) is None
    with pytest.raises(SystemExit):
        main(["explain", "--method", "lime", "--help"])
    assert f"[default: {INTERACTIVE_CONVERGE}]" in capsys.readouterr().out


def test_a_budget_spent_after_some_rounds_gives_a_map_marked_partial():
    """A sampling method keeps the rounds it finished when a budget runs out, and says so; before one round: an error."""
    clf, _ = counting()
    method = OverSpendingRise(n_masks=400, round_size=100, converge=0.0)
    request = RunRequest(method, max_passes=250, batch_size=50)
    exps = patchlens.api.explain_one(clf, load_image(np.zeros((16, 16, 3), np.uint8)), request, Hooks(on_map=lambda m, u: None))
    partial = exps[0].partial
    # shown four times per round of 100 (on_map is set), so the map keeps every step of 25 done
    assert partial is not None and partial["samples_used"] == 225 and partial["sample_budget"] == 400
    assert "exceed the budget of 250" in partial["reason"] and "[partial]" in exps[0].title
    assert exps[0].forward_passes == 226 and np.isfinite(exps[0].saliency).all()
    with pytest.raises(BudgetError):  # the first round itself would overspend: no map at all
        patchlens.api.explain_one(clf, load_image(np.zeros((16, 16, 3), np.uint8)), RunRequest(method, max_passes=50, batch_size=50))


@dataclass(frozen=True)
class OverSpendingRise(patchlens.methods.registry()["rise"]):  # type: ignore[misc]
    """RISE that under-announces its cost, so the engine's budget, not the up-front check, stops it."""

    def prepare(self, job):
        return Prepared(super().prepare(job).state, passes=1)
