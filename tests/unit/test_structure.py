"""The layout shows the flow (DESIGN §3): no import cycle, short modules and functions, few modules at the top of ope/."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import estimators
import ope
import policies

PACKAGES = (ope, estimators, policies)
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_TOP_MODULES = 8


def _modules() -> dict[str, Path]:
    """Every module of the three packages by dotted name, with its file."""
    out = {}
    for package in PACKAGES:
        out[package.__name__] = Path(package.__file__)  # type: ignore[arg-type]
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            spec = importlib.util.find_spec(info.name)
            assert spec is not None and spec.origin is not None
            out[info.name] = Path(spec.origin)
    return out


MODULES = _modules()


def _typing_only(tree: ast.Module) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (annotations only: never executed)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            out |= {id(n) for child in node.body for n in ast.walk(child)}
    return out


def _imports(name: str, path: Path) -> set[str]:
    """The project modules ``name`` imports anywhere in its file, function-level imports included (not those under
    ``if TYPE_CHECKING:``, which only annotations use)."""
    tree = ast.parse(path.read_text())
    skip = _typing_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {m for m in found if m in MODULES and m != name}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_no_import_cycle() -> None:
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_the_layers_only_import_down() -> None:
    """data → models → evaluation → report → cli: nothing imports a layer above it, and nothing below the engines imports them."""
    order = ["ope.data", "ope.models", "ope.evaluation", "ope.report", "ope.cli"]
    for name, path in MODULES.items():
        layer = next((i for i, prefix in enumerate(order) if name == prefix or name.startswith(prefix + ".")), None)
        for imported in _imports(name, path):
            target = next((i for i, prefix in enumerate(order) if imported == prefix or imported.startswith(prefix + ".")), None)
            if layer is not None and target is not None:
                assert target <= layer, f"{name} imports {imported}, a layer above it"
            if name.startswith(("estimators", "policies")):
                assert not imported.startswith("ope"), f"{name} imports {imported}: estimators and policies never import ope"
            if imported.startswith("ope.evaluation.engines") and not name.startswith("ope.evaluation.engines"):
                assert name in ("ope.evaluation.run", "ope.evaluation.tune"), f"{name} imports the engines"


def test_at_most_eight_modules_directly_in_ope() -> None:
    top = [p.name for p in Path(ope.__file__).parent.glob("*.py")]  # type: ignore[arg-type]
    assert len(top) <= MAX_TOP_MODULES, sorted(top)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_functions_are_short(name: str) -> None:
    path = MODULES[name]
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{path} has {len(lines)} lines"
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            assert length <= MAX_FUNCTION_LINES, f"{path}:{node.lineno} {node.name} has {length} lines"
