"""The package's shape: no import cycles, layers that only import downwards, `patchlens.methods` is the subpackage."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import patchlens

SRC = Path(patchlens.__file__).parent

#: Each top-level unit of the package and its layer: a unit may import only units of its own layer or below.
#: base: results and views of them; models: adapters; engine; methods; the run request and the checks every
#: front-end makes once per run (below the api, which calls them too); api; above the api: metrics (scoring
#: and comparing explanations); outer: the front-ends.
LAYERS = {
    "_version": 0, "_paths": 0, "errors": 0, "filenames": 0, "webp": 0, "capabilities": 0, "_discovery": 0, "extras": 0, "images": 0, "render": 0,
    "describe": 0, "explanation": 0, "examples": 0, "ranking": 0,
    "models": 1, "objectives": 1,
    "engine": 2,
    "methods": 3,
    "request": 4, "validation": 4,
    "api": 5,
    "metrics": 6,
    "batch": 7, "web": 7, "audit": 8, "cli": 9, "__main__": 10, "__init__": 11,
}


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, src: Path = SRC) -> set[str]:
    """Every patchlens module ``path`` imports: at the top, inside a function or only for type checkers.

    All count. An import inside a function runs later, but it still makes the
    two modules depend on each other; one under ``TYPE_CHECKING`` never runs,
    but it ties the two modules' types together, and today's type-only import
    is tomorrow's real one. A module's import of its own package (``from .
    import x`` in a submodule) counts as well.
    """
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("patchlens")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("patchlens"):
                target = node.module
            else:
                continue
            for alias in node.names:  # "from . import x" imports the submodule x when there is one
                candidate = f"{target}.{alias.name}"
                as_path = src.parent / candidate.replace(".", "/")
                found.add(candidate if as_path.with_suffix(".py").exists() or (as_path / "__init__.py").exists() else target)
    found.discard(name)
    return found


def graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (every kind of import, see :func:`imports_of`)."""
    modules = {module_name(p, src): p for p in src.rglob("*.py")}
    return {name: {i for i in imports_of(path, src) if i in modules} for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles in ``edges``, each as the path that closes it (depth-first search)."""
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """Imports from a unit into a unit of a higher layer."""
    wrong = []
    for module, deps in sorted(edges.items()):
        here = unit(module)
        assert here in LAYERS, f"{module}: new top-level unit {here!r}; give it a layer in this test"
        for dep in sorted(deps):
            there = unit(dep)
            if LAYERS[there] > LAYERS[here]:
                wrong.append(f"{module} ({here}, layer {LAYERS[here]}) imports {dep} ({there}, layer {LAYERS[there]})")
    return wrong


def test_no_import_cycles_between_modules():
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_every_unit_has_a_layer_and_imports_only_downwards():
    wrong = upward_imports(graph())
    assert not wrong, "\n".join(wrong)


def planted_copy(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the package with ``line`` added to ``module`` (a path inside the package) under TYPE_CHECKING."""
    copy = tmp_path / "patchlens"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__", "static", "data"))
    target = copy / module
    target.write_text(target.read_text(encoding="utf-8") + f"\nif TYPE_CHECKING:\n    {line}\n", encoding="utf-8")
    return copy


def test_a_planted_type_checking_cycle_is_found(tmp_path):
    """The cycle search runs on the package with one type-only import added, and finds the cycle it makes
    (so the test above is not vacuous): engine.engine imports models.classifier, which now imports it back."""
    copy = planted_copy(tmp_path, "models/classifier.py", "from ..engine.engine import MaskSource")
    found = cycles(graph(copy))
    assert any(c[0] == c[-1] and {"patchlens.models.classifier", "patchlens.engine.engine"} <= set(c) for c in found), found
    assert not cycles(graph())


def test_a_planted_type_checking_import_upwards_is_found(tmp_path):
    """A type-only import from the models up to the methods is an upward import like any other."""
    copy = planted_copy(tmp_path, "models/vit.py", "from ..methods.base import Method")
    wrong = upward_imports(graph(copy))
    assert wrong == ["patchlens.models.vit (models, layer 1) imports patchlens.methods.base (methods, layer 3)"], wrong


def test_the_cycle_search_finds_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "patchlens"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("def f():\n    from .a import y\n")
    (pkg / "c.py").write_text("from . import a\n")
    assert cycles(graph(pkg)) == [["patchlens.a", "patchlens.b", "patchlens.a"]]


def test_patchlens_methods_is_the_subpackage():
    import types

    import patchlens.methods

    assert patchlens.methods.registry()["rise"].name == "rise"
    assert patchlens.methods.__name__ == "patchlens.methods" and type(patchlens.methods) is types.ModuleType


# -- objectives: what a score is, decided in one place --------------------------------------------

#: names that hold a model's class scores (or its raw output) in this codebase
SCORE_VALUES = {"probs", "logits", "scores", "output", "outputs", "raw_output", "out", "chosen"}
#: calls that return a model's output
SCORE_CALLS = {"logits", "score_tokens", "score_one", "output_of", "classifier"}
#: names that pick a target's column
TARGET_NAMES = {"t", "target", "targets", "index", "indices", "cls", "class_index"}


def _root(node: ast.AST) -> str:
    """The name a subscripted value comes from: ``probs`` in ``probs[..]``, ``probs`` in ``job.probs[..]``,
    ``logits`` in ``clf.logits(x)[..]``."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def column_picks(path: Path) -> list[str]:
    """Places in ``path`` that index a model's scores by a target (``probs[:, targets]``, ``logits[0, t]``),
    or read the class indices and scores a method's job used to carry (``job.targets``, ``job.probs``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Subscript) and _root(node.value) in SCORE_VALUES | SCORE_CALLS:
            names = {n.id for n in ast.walk(node.slice) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(node.slice) if isinstance(n, ast.Attribute)}
            if names & TARGET_NAMES:
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Attribute) and node.attr in ("targets", "probs") and isinstance(node.ctx, ast.Load):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and _root(node) == "resolve_targets":
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)} (resolve an objective instead)")
    return found


def test_no_module_outside_the_objective_layer_picks_score_columns_for_a_target():
    """The engine, methods, metrics and front-ends score through an objective and never learn what a class is;
    objectives/ turns the model's output into scores."""
    allowed = {SRC / "objectives"}
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if any(path == a or a in path.parents for a in allowed):
            continue
        offenders += column_picks(path)
    assert not offenders, "target columns picked outside patchlens/objectives:\n" + "\n".join(offenders)


def test_the_column_check_can_fail(tmp_path):
    """The checker finds the forms the code had before the objective layer (so the test above is not vacuous)."""
    planted = tmp_path / "old.py"
    planted.write_text(
        "chosen = probs if targets is None else probs[:, targets]\n"
        "(g,) = torch.autograd.grad(logits[:, t].sum(), x)\n"
        "drops = job.probs[job.targets][None, :] - scores\n"
        "out = clf.score_tokens(view, keep)[:, targets]\n"
        "grads = torch.autograd.grad(logits[0, t], raw)\n"
        "ok = x[:, :, 8:28, 8:28].mean() + scores[:, 0]\n"
    )
    found = column_picks(planted)
    assert sorted(f.split(":")[1] for f in found) == ["1", "2", "3", "3", "3", "4", "5"], found
