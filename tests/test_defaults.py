"""Honest defaults: no black-box method costs much more than RISE's default on the default model."""

from __future__ import annotations

import pytest

import patchlens
from conftest import planted_classifier, prepared_cost
from patchlens.methods import registry
from patchlens.methods._params import INTERACTIVE_CONVERGE
from patchlens.models.default import INPUT_SIZE


def test_every_black_box_default_costs_about_rise_default_or_less():
    """Each method's default, prepared on a photo at the default model's input size (superpixels cut on it)."""
    size = INPUT_SIZE if isinstance(INPUT_SIZE, int) else tuple(INPUT_SIZE)
    model = patchlens.load_model(lambda x: x.mean((2, 3)).softmax(1), input_size=size)  # the size is what matters
    methods = {name: cls() for name, cls in registry().items() if cls.kind() == "black-box"}
    rise = prepared_cost(model, "example:coffee", methods["rise"])
    assert rise == 1001
    for name, method in methods.items():
        passes = prepared_cost(model, "example:coffee", method)
        assert passes is not None and passes <= 1.1 * rise, (name, passes, rise)


# -- one default per front-end, shown where it is used (issue 27, point 4) -------------------------


def _shown_default(help_text: str, flag: str) -> str:
    import re

    block = help_text[help_text.index(f"\n  {flag} FLOAT"):]
    return re.search(r"\[default: ([^\]]+)\]", " ".join(block.split())).group(1)


def test_the_front_ends_stop_at_an_estimated_rank_correlation_of_095():
    assert INTERACTIVE_CONVERGE == 0.95


@pytest.mark.parametrize("command", ["explain", "batch", "compare"])
def test_each_command_shows_the_converge_default_it_uses(command, capsys):
    import argparse

    from patchlens.cli import build_parser
    from patchlens.cli._options import method_params
    from patchlens.methods import get_method

    argv = [command, "x.jpg", "--method", "rise"] if command != "compare" else [command, "x.jpg", "--methods", "rise"]
    parser = build_parser(argv)
    with pytest.raises(SystemExit):
        parser.parse_args([*argv[:1], "--help", *argv[2:]])
    shown = _shown_default(capsys.readouterr().out, "--converge")
    used = method_params(argparse.Namespace(), get_method("rise"), command).get("converge", get_method("rise")().converge)
    assert float(shown) == used
    assert used == (0.0 if command == "compare" else INTERACTIVE_CONVERGE)


def test_the_methods_listing_gives_each_front_ends_converge_default(capsys):
    from patchlens.cli import main

    assert main(["methods"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("--converge"))
    assert f"0.0 (python, compare), {INTERACTIVE_CONVERGE} (explain, batch, web)" in line


def test_the_web_form_gets_the_web_default_and_an_untouched_form_stops_adaptively():
    """The page pre-filled RISE's converge with the Python default, 0, and sent it: adaptive stopping was off."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from patchlens.web import create_app

    clf = planted_classifier()
    with TestClient(create_app(clf), base_url="http://127.0.0.1") as client:
        info = client.get("/api/info").json()
    rise = {p["name"]: p for p in info["methods"]["rise"]["parameters"]}
    assert rise["converge"]["default"] == INTERACTIVE_CONVERGE and rise["converge"]["defaults"]["python"] == 0.0
    import threading

    from patchlens.web import WebConfig
    from patchlens.web.state import build_requests

    form = {p["name"]: p["default"] for p in rise.values()}  # what the page sends when nothing is changed
    for sent in (form, {}):
        (request,) = build_requests([("rise", sent)], clf, WebConfig(), "top1", 0, threading.RLock())
        assert request.method.converge == INTERACTIVE_CONVERGE
