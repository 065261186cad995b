"""The layout the design card asks for, and no import cycles between nxc's modules."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

from nxc.runtime import registry
from tests.conftest import REPO

PACKAGE = REPO / "nxc"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of nxc that ``path`` imports anywhere (lazy imports count), except under
    ``if TYPE_CHECKING:`` and except its own ancestor packages (imported implicitly)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if "TYPE_CHECKING" in ast.unparse(node.test):
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
            found.update(submodules)
            if len(submodules) < len(node.names):
                found.add(base)

    Visitor().visit(ast.parse(path.read_text()))
    return {m for m in found if m in modules and m != name and not name.startswith(m + ".")}


def test_no_import_cycles() -> None:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imports(path, set(paths)) for name, path in paths.items()}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str], done: set[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in trail:
                cycles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in done:
                visit(nxt, [*trail, nxt], done)
        done.add(node)

    finished: set[str] = set()
    for start in sorted(graph):
        if start not in finished:
            visit(start, [start], finished)
    assert cycles == [], " ; ".join(" -> ".join(c) for c in cycles[:5])


def test_the_design_card_top_level() -> None:
    for entry in ("pyproject.toml", "flake.nix", "nxc", "compositions", "flavours", "nix"):
        assert (REPO / entry).exists(), entry
    for entry in ("tests", "docs"):
        assert (REPO / entry).is_dir(), entry
    tracked = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "nxc.egg-info"], capture_output=True, text=True
    )
    assert tracked.stdout == ""


def test_every_flavour_is_one_folder_plus_one_runtime() -> None:
    for name in registry.BUILT_BY_NXC:
        folder = REPO / "flavours" / name
        assert (folder / "module.nix").is_file(), name
        readme = (folder / "README.md").read_text()
        for heading in ("**Builds**", "**Starts**", "**Needs", "**Cannot**"):
            assert heading in readme, (name, heading)
    for name in registry.names():
        runtime = registry.load(name)
        assert type(runtime).__module__.startswith(f"nxc.flavours.{name.replace('-', '_')}")
