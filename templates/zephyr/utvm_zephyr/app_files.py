"""Write a generated project's Zephyr application files from the templates in the template's app/
folder: CMakeLists.txt, prj.conf, the board's files in boards/ (devicetree overlay, and a Kconfig
fragment where the board needs one) and a west manifest. Standard library only.
"""

from __future__ import annotations

import pathlib
from typing import Dict, List, Sequence

from project_api.template_support import render_file

from .environment import ZEPHYR_REVISION
from .zephyr_boards import COMMON_MODULES, ZephyrBoard

APP_DIR = pathlib.Path(__file__).resolve().parents[1] / "app"
# Values that are whole lines (CMake's source list, the manifest's module list); every file is
# rendered from the same values, so every call names them.
_MULTILINE = ("sources", "modules")


def _cmake_paths(project_dir: pathlib.Path, sources: Sequence[pathlib.Path]) -> str:
    return "\n".join(f"  {p.relative_to(project_dir).as_posix()}" for p in sources)


def write_app_files(project_dir: pathlib.Path, board: dict, facts: ZephyrBoard, project_type: str,
                    sources: Sequence[pathlib.Path], main_stack_bytes: int,
                    model_name: str) -> List[pathlib.Path]:
    """Write the application's build files into project_dir; returns their paths."""
    values: Dict[str, str] = {
        "board": board["name"], "zephyr_board": facts.target, "project_type": project_type,
        "model": model_name, "sources": _cmake_paths(project_dir, sources),
        "main_stack_bytes": str(int(main_stack_bytes)), "uart_label": facts.uart_label,
        "baud": str(int(board["baud"])), "fpu": str(board.get("fpu")),
        "zephyr_revision": ZEPHYR_REVISION, "project_name": project_dir.name,
        "modules": "\n".join(f"          - {m}" for m in COMMON_MODULES + facts.modules),
    }
    boards = project_dir / "boards"
    written = [
        render_file(APP_DIR / "CMakeLists.txt.in", project_dir / "CMakeLists.txt", values, _MULTILINE),
        render_file(APP_DIR / "west.yml.in", project_dir / "west.yml", values, _MULTILINE),
        render_file(APP_DIR / "board.overlay.in", boards / f"{facts.file_stem}.overlay", values, _MULTILINE),
    ]
    prj = render_file(APP_DIR / "prj.conf.in", project_dir / "prj.conf", values, _MULTILINE)
    if project_type == "aot_standalone":
        with open(prj, "a", encoding="utf-8") as out:
            out.write((APP_DIR / "prj_aot_standalone.conf.in").read_text(encoding="utf-8"))
    written.append(prj)
    if board.get("fpu"):
        written.append(render_file(APP_DIR / "board.conf.in", boards / f"{facts.file_stem}.conf", values,
                                   _MULTILINE))
    return written
