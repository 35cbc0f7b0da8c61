"""``compare`` through Python on a tiny model, and the commands end to end with small budgets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import patchlens
from conftest import BOX, planted_classifier, planted_image
from patchlens.cli import main
from patchlens.errors import MethodError
from patchlens.metrics.compare import Comparison, budgeted, compare
from patchlens.metrics.evaluate import EvaluationTable

TOP, LEFT, BOTTOM, RIGHT = BOX


def test_compare_ranks_methods_and_writes_the_report(tmp_path):
    images = [planted_image(seed=0), planted_image(seed=1)]
    result = compare(
        planted_classifier(), images, "occlusion,rise", "deletion,insertion,pointing_game,energy_in_region,cost",
        target="evidence", method_params={"occlusion": {"window": 8, "stride": 8}, "rise": {"n_masks": 60}},
        regions=[(LEFT, TOP, RIGHT, BOTTOM)] * 2, steps=8,
    )
    # 2 images x (2 methods + the 2 sanity baselines, random and edges)
    assert [m.name for m in result.methods] == ["occlusion", "rise"] and len(result.table) == 8
    assert all(row["target"] == 1 for row in result.table)
    assert [r["baseline"] for r in result.ranking()] == [False, False, True, True]
    ranking = [r for r in result.ranking() if not r["baseline"]]
    # mean ranks are averages of per-column ranks, so they sum to (1 + 2) per ranked column / columns
    assert sum(r["mean_rank"] for r in ranking) == pytest.approx(3.0)
    assert ranking[0]["mean_rank"] <= ranking[1]["mean_rank"]
    by = {r["method"]: r for r in ranking}
    assert by["occlusion"]["forward_passes"] == 65 and by["rise"]["forward_passes"] == 61
    paths = result.save(tmp_path / "report")
    for key in ("markdown", "csv", "rows", "json", "overlays", "curves"):
        assert paths[key].exists() and paths[key].stat().st_size > 0, key
    md = paths["markdown"].read_text()
    assert "deletion ↓" in md and "insertion ↑" in md and "lower deletion, higher insertion" in md
    assert "occlusion map for evidence" in md  # the descriptions are in the report
    data = json.loads(paths["json"].read_text())
    assert len(data["rows"]) == 8 and len(data["curves"][0]["deletion"]["x"]) == 9
    grid = Image.open(paths["overlays"])
    assert grid.width == 150 + 4 * 320 and grid.height > 2 * 200  # image names, then 2 methods and 2 baselines across; 2 images down


def _table(rows):
    cols = [c for c in rows[0] if c not in ("method", "image", "target", "label", "score")]
    return EvaluationTable(rows, [{} for _ in rows], cols)


def test_ranking_by_hand():
    rows = [
        {"method": "b", "deletion": 0.2, "insertion": 0.9, "pointing_game": 0.0, "forward_passes": 10.0},
        {"method": "a", "deletion": 0.1, "insertion": 0.5, "pointing_game": 1.0, "forward_passes": 10.0},
        {"method": "a", "deletion": 0.2, "insertion": 0.5, "pointing_game": 1.0, "forward_passes": 10.0},
    ]
    ranking = Comparison(_table(rows), [], [], [], "m").ranking()
    # a: deletion (mean 0.15, lower is better) 1, insertion 2, pointing game 1; passes are cost, not ranked
    assert [r["method"] for r in ranking] == ["a", "b"]
    assert ranking[0]["mean_rank"] == pytest.approx(4 / 3) and ranking[1]["mean_rank"] == pytest.approx(5 / 3)
    assert ranking[0]["n"] == 2 and ranking[0]["deletion"] == pytest.approx(0.15)


def test_the_cheapest_method_does_not_win_on_cost_and_cost_has_its_own_columns():
    rows = [
        {"method": "faithful", "deletion": 0.1, "insertion": 0.8, "sparseness": 0.2, "forward_passes": 5000.0, "seconds": 90.0},
        {"method": "cheap", "deletion": 0.3, "insertion": 0.7, "sparseness": 0.9, "forward_passes": 2.0, "seconds": 0.1},
    ]
    result = Comparison(_table(rows), [], [], [], "m")
    assert [r["method"] for r in result.ranking()] == ["faithful", "cheap"]  # with cost and sparseness ranked, cheap won (1.4 vs 1.6)
    cols = result.ordered_columns()
    assert cols.index("mean_rank") < cols.index("forward_passes") and cols.index("mean_rank") < cols.index("sparseness")
    assert cols.index("deletion") < cols.index("mean_rank")
    assert result.better() == "lower deletion, higher insertion"


@pytest.mark.slow
def test_budget_cuts_passes_without_opening_gaps():
    from patchlens.api import start_job
    from patchlens.engine import Engine

    model = patchlens.load_model(lambda x: x.mean((2, 3)).softmax(1), input_size=224)
    job = start_job(Engine(model), patchlens.load_image("example:coffee"), "top1", 0)
    passes = lambda method: method.prepare(job).passes + 1  # noqa: E731  (and the scoring pass)
    occ = budgeted("occlusion", 100, job)
    assert passes(occ) <= 100 and occ.stride <= occ.window
    assert passes(occ) > 50  # it uses the budget, rather than collapsing to a few windows
    rise = budgeted("rise", 100, job)
    assert passes(rise) == 100
    kept = budgeted("rise", 100, job, fixed={"n_masks": 300})
    assert kept.n_masks == 300
    # whatever the parameters are called; superpixels counted on the photo itself
    for name in ("kernelshap", "lime", "occlusion", "rise", "subset", "sobol", "smoothgrad", "integrated_gradients"):
        cost = passes(budgeted(name, 100, job))
        assert 50 <= cost <= 100, (name, cost)


@pytest.mark.slow
def test_cli_on_the_default_model_writes_the_report(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "example:coffee", "--methods", "occlusion,rise", "--budget", "5", "--steps", "3",
                 "--metrics", "deletion,insertion,cost", "--out", str(out), "--device", "cpu", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| method |" in printed and "espresso" in printed
    for name in ("table.md", "table.csv", "rows.csv", "results.json", "overlays.png", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    rows = (out / "table.csv").read_text().splitlines()
    assert rows[0].startswith("method,n,deletion,insertion") and len(rows) == 5  # 2 methods, 2 sanity baselines
    assert rows[3].startswith("baseline:random,") and rows[4].startswith("baseline:edges,")
    assert "Deletion/insertion protocol: patchlens" in printed


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["compare", "example:coffee", "--metrics", "delation", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "delation: unknown metric" in err
    assert main(["compare", "example:coffee", "--set", "rise.n_maks=3", "--out", str(tmp_path)]) == 2
    assert "rise has no parameter 'n_maks'" in capsys.readouterr().err


def test_set_values_are_typed():
    from patchlens.cli.compare import parse_sets

    assert parse_sets(["rise.n_masks=500", "rise.p_keep=0.3", "occlusion.baseline=blur"]) == {
        "rise": {"n_masks": 500, "p_keep": 0.3}, "occlusion": {"baseline": "blur"}}
    with pytest.raises(MethodError, match="not a valid int"):
        parse_sets(["rise.n_masks=many"])


def test_regions_file_gives_boxes_and_masks(tmp_path):
    from patchlens.cli.compare import load_regions
    from patchlens.metrics import MetricError

    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:9] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    (tmp_path / "r.json").write_text(json.dumps({"a.jpg": [1, 2, 3, 4], "b.jpg": str(tmp_path / "m.png")}))
    box, m = load_regions(str(tmp_path / "r.json"), ["a.jpg", "b.jpg"])
    assert box == [1, 2, 3, 4] and m.shape == (10, 12) and m.sum() == 18 and m[2, 3] and not m[5, 3]
    with pytest.raises(MetricError, match="no region for c.jpg"):
        load_regions(str(tmp_path / "r.json"), ["c.jpg"])


def test_metric_options_are_generated_from_their_declarations(capsys):
    """compare's metric flags come from Options' declarations (one text, one check), not a hand-kept copy."""
    from patchlens.cli._options import flag
    from patchlens.metrics.base import option_infos

    with pytest.raises(SystemExit):
        main(["compare", "x.jpg", "--help"])
    text = capsys.readouterr().out
    declared = [i for i in option_infos() if i.group == "metrics"]
    assert declared and all(flag(i.name) in text and i.help.split(" (")[0][:30] in " ".join(text.split()) for i in declared)
    options = [line.split()[0] for line in text.splitlines() if line.startswith("  --")]
    assert "--seed" in options and options.count("--batch-size") == 1  # the run's own flags serve the metrics too
    # a value the declaration refuses is the API's error, named as typed
    assert main(["compare", "example:coffee", "--unit", "hexagons"]) == 2
    assert "unit='hexagons': use one of pixels, patches" in capsys.readouterr().err
