"""ONNX Runtime's spinning threads: chosen on the real work, left when a load appears (models/spinning.py).

The choice is driven here with made-up batch times, so each test states a
machine (quiet, busy, getting busy) and checks what a classifier would do on it.
"""

from __future__ import annotations

import pytest

from patchlens.errors import ModelError
from patchlens.models import spinning as sp


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def machine(per_image: dict[bool, float], setting: str = "auto"):
    """A choice whose sessions are their names, and a function running n batches at the given speeds."""
    opened: list[bool] = []
    clock = Clock()

    def make(spinning: bool):
        return lambda: opened.append(spinning) or ("spinning" if spinning else "blocking")

    choice = sp.SpinningChoice(make(False), make(True), setting, clock=clock)

    def run(batches: int, size: int = 8) -> list[bool]:
        used = []
        for _ in range(batches):
            spinning, kind = choice.next_batch(size)
            choice.session(spinning)
            choice.timed(spinning, size, per_image[spinning] * size, kind)
            clock.now += per_image[spinning] * size
            used.append(spinning)
        return used

    return choice, run, opened, clock


def test_a_quiet_machine_spins_after_a_short_trial_on_real_batches():
    choice, run, opened, _ = machine({True: 0.005, False: 0.010})
    used = run(20)
    trial = 1 + 2 * sp.PROBES  # one warm-up batch of the spinning session, then both in turn
    assert used[: sp.STEADY - 1] == [False] * (sp.STEADY - 1)  # the engine is still choosing its batch size
    assert used[sp.STEADY - 1 : sp.STEADY - 1 + trial] == [True, True, False, True, False]
    assert all(used[sp.STEADY - 1 + trial :]) and choice.spinning
    assert choice.record["images_per_s"] == {"spinning": 200.0, "blocking": 100.0} and choice.record["batch"] == 8
    assert "faster" in choice.record["why"] and sorted(set(opened)) == [False, True]


def test_a_busy_machine_keeps_blocking_and_tries_again_later():
    choice, run, _, clock = machine({True: 0.020, False: 0.010})
    used = run(20)
    assert not choice.spinning and not any(used[sp.STEADY - 1 + 1 + 2 * sp.PROBES :])
    assert "busy" in choice.record["why"] and choice.record["decisions"] == 1
    clock.now += sp.RECHECK_S  # half a minute later the same job runs on: measured again
    again = run(10)
    assert any(again) and choice.record["decisions"] == 2 and not choice.spinning


def test_spinning_is_left_as_soon_as_it_gets_slower_than_blocking():
    speeds = {True: 0.005, False: 0.010}
    choice, run, _, _ = machine(speeds)
    run(20)
    assert choice.spinning
    speeds[True] = 0.030  # another job starts on the cores: spinning threads now fight it
    used = run(10)
    assert not choice.spinning and used.count(True) == sp.WINDOW
    assert "load appeared" in choice.record["why"]


def test_other_batch_sizes_are_neither_timed_nor_a_reason_to_start():
    choice, run, _, _ = machine({True: 0.005, False: 0.010})
    for size in (1, 1, 4, 4, 16, 16, 32, 32):  # the engine's batch-size trials
        run(1, size)
    assert choice.record.get("decisions") is None
    run(sp.STEADY + 1 + 2 * sp.PROBES, 32)
    assert choice.spinning and choice.record["batch"] == 32
    run(3, 7)  # a round's last, shorter batch: same session, no timing
    assert choice.spinning and choice.record["decisions"] == 1


@pytest.mark.parametrize("setting, spins", [("on", True), ("off", False)])
def test_a_fixed_setting_never_measures_or_opens_the_other_session(setting, spins):
    choice, run, opened, _ = machine({True: 0.005, False: 0.010}, setting)
    assert run(30) == [spins] * 30
    assert opened == [spins] and "decisions" not in choice.record


def test_the_environment_fixes_the_choice_and_a_typo_is_one_line(monkeypatch):
    monkeypatch.setenv(sp.SPINNING_ENV, "OFF")
    assert sp.spinning_setting() == "off"
    monkeypatch.setenv(sp.SPINNING_ENV, "sometimes")
    with pytest.raises(ModelError, match="PATCHLENS_SPINNING='sometimes': use on, off or auto"):
        sp.spinning_setting()


def test_an_onnx_runtime_model_records_its_choice(monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    import torch

    import patchlens

    monkeypatch.setenv("PATCHLENS_CACHE", str(tmp_path))
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    monkeypatch.setenv(sp.SPINNING_ENV, "off")
    clf = patchlens.load_model(net.eval(), runtime="onnx", input_size=32)
    exp = patchlens.explain(clf, "example:coffee", "rise", n_masks=64, batch_size=8)
    assert exp.extras["runtime"]["spinning"] == {"spinning": False, "setting": "off"}
    monkeypatch.setenv(sp.SPINNING_ENV, "auto")
    clf = patchlens.load_model(net.eval(), runtime="onnx", input_size=32)
    exp = patchlens.explain(clf, "example:coffee", "rise", n_masks=64, batch_size=8)
    record = exp.extras["runtime"]["spinning"]
    assert record["setting"] == "auto" and record["batch"] == 8 and set(record["images_per_s"]) == {"spinning", "blocking"}
