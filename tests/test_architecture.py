"""The layout's rules hold (docs/architecture.md): every module imports, there is no import cycle, the engine
(`plugin/`) never imports the protocol (`cds_hooks`), and the service never imports the tools around it."""
from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import cds_hooks
import plugin

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = {"pyspark"}  # optional extras: a module that needs one may be skipped where it is not installed


def _modules(package) -> list[str]:
    """Every module of the package but `__main__` entry points (importing one runs its program)."""
    return sorted(m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
                  if not m.name.endswith(".__main__"))


def _project_imports(path: Path) -> set[str]:
    """The project modules a file imports (at any depth in the file, lazily too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in found if n.split(".")[0] in ("plugin", "cds_hooks")}


def _file_of(module: str) -> Path:
    base = ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


ALL_MODULES = ["plugin", "cds_hooks", *_modules(plugin), *_modules(cds_hooks)]


@pytest.mark.parametrize("module", ALL_MODULES)
def test_every_module_imports(module):
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in OPTIONAL:
            pytest.skip(f"{module} needs the optional {exc.name}")
        raise


def test_the_engine_never_imports_the_protocol():
    offenders = {m: sorted(i for i in _project_imports(_file_of(m)) if i.startswith("cds_hooks"))
                 for m in ["plugin", *_modules(plugin)]}
    assert {m: i for m, i in offenders.items() if i} == {}


def test_the_service_imports_neither_the_batch_nor_the_sandbox():
    service = [m for m in _modules(cds_hooks) if m.startswith("cds_hooks.service")]
    assert service, "cds_hooks.service has modules"
    offenders = {m: sorted(i for i in _project_imports(_file_of(m))
                           if i.startswith(("cds_hooks.batch", "cds_hooks.sandbox")))
                 for m in service}
    assert {m: i for m, i in offenders.items() if i} == {}


def test_no_import_cycles_between_modules():
    """Module-level (eager) imports form no cycle; a lazy import inside a function does not count."""
    graph: dict[str, set[str]] = {}
    modules = set(ALL_MODULES)
    for m in modules:
        tree = ast.parse(_file_of(m).read_text(encoding="utf-8"))
        deps: set[str] = set()
        for node in tree.body:  # top level only, and `if TYPE_CHECKING:` blocks do not run
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            deps.update(n for n in names if n in modules and n != m)
        graph[m] = deps

    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            # a package importing its own submodule (re-export) is not a cycle
            if dep.startswith(node + "."):
                continue
            if state.get(dep) == 1 and not node.startswith(dep + "."):
                cycle.extend([*stack[stack.index(dep):], dep])
                return True
            if dep not in state and visit(dep, stack):
                return True
        stack.pop()
        state[node] = 2
        return False

    for m in sorted(graph):
        if m not in state and visit(m, []):
            break
    assert cycle == [], " -> ".join(cycle)
