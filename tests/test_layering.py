"""The import graph: packages depend one way (project_api <- boards, model_library <- host_driven <- cli),
with no cycle and no import placed inside a function to get around one; the floor and the templates
stand on the standard library.

Every import in every module is counted, at module level or inside a function, so an import moved into
a function still shows. See DESIGN.md, "Layout".
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest
from conftest import REPO_ROOT

# Each package and the utvm packages it may import. `templates` is data to the others (the runtime's C
# sources, the template folders): it imports no utvm package itself.
ALLOWED: Dict[str, Set[str]] = {
    "project_api": set(),
    "templates": set(),
    "boards": {"project_api"},
    "model_library": {"project_api", "templates"},
    "host_driven": {"project_api", "boards", "model_library", "templates"},
    "cli": {"project_api", "boards", "model_library", "host_driven", "templates"},
}
# Optional third-party modules the floor may import inside a function: numpy speeds up base85 when it
# is there, pyserial and pyusb reach physical boards. Nothing else beyond the standard library.
FLOOR_OPTIONAL = {"numpy", "serial", "usb"}
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def _python_files(package: str) -> List[Path]:
    root = REPO_ROOT / package
    return sorted(p for p in root.rglob("*.py") if "fuzz" not in p.parts)


def _imports(path: Path) -> Iterator[Tuple[str, int, bool]]:
    """(absolute module name, line, at module level) of every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    module_level = {id(node) for node in tree.body}
    package_parts = path.relative_to(REPO_ROOT).parent.parts
    for node in ast.walk(tree):
        top = id(node) in module_level
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - (node.level - 1)]
                name = ".".join(("utvm",) + base + ((node.module,) if node.module else ()))
            else:
                name = node.module or ""
            yield name, node.lineno, top


def _utvm_package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if parts[0] == "utvm" and len(parts) > 1 else ""


def _edges() -> Dict[Tuple[str, str], List[str]]:
    """{(importing package, imported package): [where]} over every utvm package."""
    edges: Dict[Tuple[str, str], List[str]] = {}
    for package in ALLOWED:
        for path in _python_files(package):
            for module, line, _ in _imports(path):
                target = _utvm_package(module)
                if target and target != package:
                    edges.setdefault((package, target), []).append(f"{path.relative_to(REPO_ROOT)}:{line}")
    return edges


def test_packages_import_only_downward():
    wrong = [f"{src} imports {dst} ({', '.join(where[:3])})"
             for (src, dst), where in sorted(_edges().items()) if dst not in ALLOWED.get(src, set())]
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_the_package_graph_has_no_cycle():
    graph: Dict[str, Set[str]] = {}
    for src, dst in _edges():
        graph.setdefault(src, set()).add(dst)
    state: Dict[str, int] = {}

    def visit(node: str, trail: List[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("package cycle: " + " -> ".join(trail + [node, nxt]))
            if not state.get(nxt):
                visit(nxt, trail + [node])
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [])


def test_the_floor_stands_on_the_standard_library():
    bad = []
    for path in _python_files("project_api"):
        for module, line, top in _imports(path):
            root = module.split(".")[0]
            if _utvm_package(module) == "project_api" or root in STDLIB:
                continue
            if root in FLOOR_OPTIONAL and not top:
                continue
            bad.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {module}")
    assert not bad, "the floor must need only the standard library:\n" + "\n".join(bad)


# A template's board/ folder holds programs that run on the device itself, under the device's Python
# (TVM's RPC server on a Jetson imports TVM there); the template's server never imports them.
DEVICE_SIDE_FOLDER = "board"


def _template_python_files() -> Iterator[Tuple[Path, Set[str]]]:
    """Each template's Python files (not its device-side programs), with its own helper packages."""
    for server in sorted((REPO_ROOT / "templates").glob("*/microtvm_api_server.py")):
        folder = server.parent
        helpers = {p.parent.name for p in folder.glob("*/__init__.py")}
        for path in sorted(folder.rglob("*.py")):
            if path.relative_to(folder).parts[0] != DEVICE_SIDE_FOLDER:
                yield path, helpers


def test_no_template_server_imports_its_device_side_programs():
    bad = [f"{path.relative_to(REPO_ROOT)}:{line} imports {module}"
           for path, _ in _template_python_files() for module, line, _ in _imports(path)
           if module.split(".")[0] == DEVICE_SIDE_FOLDER]
    assert not bad, "device-side programs run on the device, not in the template's server:\n" + "\n".join(bad)


def test_templates_import_only_the_floor():
    bad = []
    files = list(_template_python_files())
    assert len(files) >= 3, "the templates' Python files were not found"
    for path, helpers in files:
        own = path.parent.name if path.parent.name in helpers else None
        for module, line, top in _imports(path):
            root = module.split(".")[0]
            if root in STDLIB or root == "project_api" or root in helpers:
                continue
            if own and module.startswith(f"utvm.templates.{path.parent.parent.name}.{own}"):
                continue  # a relative import inside the template's own helper package
            if root in ("serial", "usb") and not top:
                continue  # physical boards only, imported where a port is opened
            bad.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {module}")
    assert not bad, "templates may import the floor (project_api) and the standard library only:\n" + \
        "\n".join(bad)
