"""The import table of docs/architecture.md, enforced: who may import whom, and no cycles.

Every import counts, including those inside functions (a lazy import is still a dependency,
and hiding a cycle in a function is what this test exists to catch). A failure names the
importing module and the import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("worker", "schema", "analysis", "ui", "saegap")
MODEL_LIBRARIES = ("torch", "transformer_lens", "sae_lens")
# What each folder may import of the project besides itself (docs/architecture.md, "Folders").
ALLOWED: dict[str, tuple[str, ...]] = {
    "schema": (),
    "worker": ("schema",),
    "analysis": ("schema.read", "schema.spec", "schema.errors", "schema.relations", "schema.output"),  # the read path
    "ui": ("analysis", "worker.api", "schema.spec"),  # analysis and the job API (a JobSpec is its argument)
    "saegap": ("worker", "schema", "analysis", "ui"),  # the console command and the Python API wire all
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    """Absolute module names imported anywhere in the file (relative imports resolved)."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)  # `from pkg import module`


def _graph() -> dict[str, set[str]]:
    files = [path for package in PACKAGES for path in (ROOT / package).rglob("*.py")]
    modules = {_module_name(path): path for path in files}
    return {name: set(_imports(path)) for name, path in modules.items()}


GRAPH = _graph()


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _violations(module: str) -> list[str]:
    folder = module.split(".")[0]
    found = []
    for imported in sorted(GRAPH[module]):
        top = imported.split(".")[0]
        if top in MODEL_LIBRARIES and folder != "worker":
            found.append(f"{module} imports {imported}: only worker/ imports torch, TransformerLens, SAELens")
        elif top in PACKAGES and top != folder and not _within(imported, ALLOWED[folder]):
            found.append(f"{module} imports {imported}: {folder}/ may import only {ALLOWED[folder] or 'no other'}")
    return found


@pytest.mark.parametrize("folder", PACKAGES)
def test_each_folder_imports_only_what_the_table_allows(folder: str) -> None:
    found = [line for module in GRAPH if module.split(".")[0] == folder for line in _violations(module)]
    assert not found, "\n".join(found)


def _project_edges(module: str) -> set[str]:
    """The project modules `module` imports (a `from pkg import name` counts only when name is a module)."""
    return {name for name in GRAPH[module] if name in GRAPH and name != module}


def _cycle_from(start: str) -> list[str] | None:
    """A shortest import cycle through `start`, as a list of modules, or None."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for imported in sorted(_project_edges(module)):
                if imported == start:
                    return [*paths[module], start]
                if imported not in paths and not _is_package_of(imported, start):
                    paths[imported] = [*paths[module], imported]
                    following.append(imported)
        frontier = following
    return None


def _is_package_of(package: str, module: str) -> bool:
    """Importing a package's __init__ from inside it is not a cycle of roles."""
    return module.startswith(package + ".")


def test_there_are_no_import_cycles() -> None:
    cycles = {" -> ".join(cycle) for module in GRAPH if (cycle := _cycle_from(module))}
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_the_table_catches_a_forbidden_import() -> None:
    """The check itself: a ui module importing schema.store is named, with the rule it breaks."""
    GRAPH["ui.probe"] = {"schema.store", "torch"}
    try:
        found = _violations("ui.probe")
    finally:
        del GRAPH["ui.probe"]
    assert any("schema.store" in line and "ui/ may import only" in line for line in found)
    assert any("torch" in line for line in found)
