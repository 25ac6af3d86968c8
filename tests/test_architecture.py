"""The layout's rules, checked on the source (no database, no Django): every module sits under an import-linter
contract, every module a contract names exists, no module-level import circle, no service or selector module over
the size the house allows.

Why each check: import-linter matches module names as prefixes of the dotted path, so a contract naming
``labeling.selectors`` silently left ``labeling.selectors_quality`` outside it for months; and a module no contract
names as a source can import anything. Circles between modules at import time make the import order matter and
hide which of two modules is the lower floor. (Imports inside functions, and under ``if TYPE_CHECKING:``, do not
run at import time and are not counted.)
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ROOT_PACKAGES = ("config", "labeling", "learning", "frontend")
# A workflow that outgrows this many lines becomes a package along its seams (ARCHITECTURE.md).
MAX_SERVICE_LINES = 750
SIZE_CHECKED = ("labeling/services", "labeling/selectors", "learning/services")


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the root packages (a package is its __init__.py)."""
    found: dict[str, Path] = {}
    for package in ROOT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def contracts() -> list[dict[str, Any]]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return list(tomllib.load(handle)["tool"]["importlinter"]["contracts"])


def covers(name: str, module: str) -> bool:
    return module == name or module.startswith(name + ".")


def test_every_module_is_the_source_of_an_import_linter_contract() -> None:
    sources = [name for contract in contracts() for name in contract["source_modules"]]
    outside = [module for module in project_modules() if not any(covers(name, module) for name in sources)]
    assert outside == []


def test_every_project_module_a_contract_names_exists() -> None:
    modules = project_modules()
    named: list[str] = []
    for contract in contracts():
        named += contract.get("source_modules", []) + contract.get("forbidden_modules", [])
        for rule in contract.get("ignore_imports", []):
            named += [side.strip() for side in rule.split("->") if "*" not in side]
    missing = sorted({name for name in named if name.split(".")[0] in ROOT_PACKAGES and name not in modules})
    assert missing == []


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _top_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: top level, and inside top-level try/if (not TYPE_CHECKING)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.Try):
            yield from _top_level_imports(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                yield from _top_level_imports(handler.body)
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            yield from _top_level_imports(node.body + node.orelse)


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for module, path in modules.items():
        for node in _top_level_imports(ast.parse(path.read_text(), filename=str(path)).body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level or node.module is None:
                    continue  # the project uses absolute imports only
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                           for alias in node.names]
            graph[module].update(target for target in targets if target in modules and target != module)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_level_import_circles() -> None:
    assert circles(import_graph()) == []


def test_the_circle_check_finds_a_circle() -> None:
    """The check itself can fail: a two-module circle and a three-module one are found, a chain is not."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert sorted(circles(graph)) == [["a", "b"], ["c", "d", "e"]]
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_service_or_selector_module_outgrows_its_room() -> None:
    oversized = {str(path.relative_to(ROOT)): lines for folder in SIZE_CHECKED
                 for path in sorted((ROOT / folder).rglob("*.py"))
                 if (lines := len(path.read_text().splitlines())) > MAX_SERVICE_LINES}
    assert oversized == {}


def test_every_module_opens_with_a_docstring() -> None:
    """Each module says what lives in it (migrations are generated and exempt)."""
    silent = [module for module, path in project_modules().items()
              if ".migrations" not in module and ast.get_docstring(ast.parse(path.read_text())) is None]
    assert silent == []
