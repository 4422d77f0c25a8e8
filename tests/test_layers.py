"""The package's layers depend one way: io → data → augment/features → models → training →
interpret → plots → app → commands/cli, with ``utils`` below everything; no import cycles.

Imports are read from the source (module level and inside functions alike), so a late import
cannot hide a dependency that runs the wrong way.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "audioconv"

# rank of each top-level part of the package; a module may import only from ranks <= its own
RANKS = {"utils": 0, "io": 1, "data": 2, "augment": 3, "features": 3, "models": 4, "training": 5,
         "interpret": 6, "plots": 7, "app": 8, "commands": 9, "cli": 10, "__main__": 11, "__init__": 0}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every ``audioconv.*`` module ``path`` imports (absolute or relative, at any depth)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("audioconv"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("audioconv"):
                continue
            found.add(mod)
            for a in node.names:  # `from audioconv.io import audio` imports a module
                if (PACKAGE.parent / Path(*f"{mod}.{a.name}".split("."))).with_suffix(".py").exists():
                    found.add(f"{mod}.{a.name}")
    return {m for m in found if m != me and not me.startswith(m + ".")}  # a package is imported first anyway


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_of_the_package_has_a_rank():
    parts = {_part(m) for m in _graph()}
    assert parts <= set(RANKS), f"parts without a rank in this test: {sorted(parts - set(RANKS))}"


def test_dependencies_run_one_way():
    wrong = []
    for module, deps in _graph().items():
        for dep in deps:
            if _part(dep) == "__init__" and dep != "audioconv":
                continue
            if RANKS[_part(dep)] > RANKS[_part(module)] and _part(module) != "__init__":
                wrong.append(f"{module} imports {dep}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                cycle.extend(stack[stack.index(dep):] + [dep] if dep in stack else [node, dep])
                return True
            if state.get(dep) is None and visit(dep, stack + [dep]):
                return True
        state[node] = 2
        return False

    for node in sorted(graph):
        if state.get(node) is None and visit(node, [node]):
            break
    assert not cycle, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("bad", ["from audioconv.plots import render", "import audioconv.app.demo"])
def test_the_checker_sees_a_wrong_way_import(tmp_path, bad, monkeypatch):
    """The checks above can fail: an interpret module importing plots/app is caught."""
    fake = tmp_path / "audioconv"
    (fake / "interpret").mkdir(parents=True)
    (fake / "plots").mkdir()
    (fake / "app").mkdir()
    (fake / "plots" / "render.py").write_text("")
    (fake / "app" / "demo.py").write_text("")
    (fake / "interpret" / "x.py").write_text(bad + "\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    with pytest.raises(AssertionError, match="interpret.x imports"):
        test_dependencies_run_one_way()


MAX_FUNCTION_LINES = 100


def _long_functions(package: Path, limit: int) -> list[str]:
    rows = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    rows.append(f"{path.relative_to(package.parent)}:{node.lineno} {node.name} ({n} lines)")
    return rows


def test_no_function_is_longer_than_a_screen():
    """Functions fit on a screen: none in the package is longer than 100 lines (docstring included)."""
    too_long = _long_functions(PACKAGE, MAX_FUNCTION_LINES)
    assert not too_long, "functions over 100 lines:\n" + "\n".join(too_long)


def test_the_length_check_sees_a_long_function(tmp_path):
    (tmp_path / "pkg").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "pkg" / "m.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n")
    assert _long_functions(tmp_path / "pkg", MAX_FUNCTION_LINES) == ["pkg/m.py:5 long (101 lines)"]
