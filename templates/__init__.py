"""utvm's built-in templates, one folder per platform, and the device runtime they share.

Each template folder holds a ``microtvm_api_server.py`` that stands on the floor
(``utvm.project_api``) alone; the folders are data to the rest of utvm, which reaches them through
``builtin_templates`` and ``template_path``. Nothing here imports any other utvm package.
"""

from __future__ import annotations

import pathlib
from typing import Dict

TEMPLATES_DIR = pathlib.Path(__file__).resolve().parent
SERVER_SCRIPT = "microtvm_api_server.py"


def builtin_templates() -> Dict[str, pathlib.Path]:
    """Built-in template names and directories: the subdirectories holding a microtvm_api_server.py."""
    return {p.name: p for p in sorted(TEMPLATES_DIR.iterdir()) if (p / SERVER_SCRIPT).is_file()}


def template_path(name: str) -> pathlib.Path:
    """The directory of the built-in template ``name``; KeyError naming the others when there is none."""
    templates = builtin_templates()
    if name not in templates:
        raise KeyError(f"no built-in template {name!r}; there are: {', '.join(templates)}")
    return templates[name]
