"""The host template and the projects it generates need nothing but Python's standard library, make and a
C compiler: no utvm, no jinja2, no numpy, no site-packages at all.

The template is copied out of the repository with only what it stands on (the floor, the board
database, the device runtime), and every server, template and project alike, is started as
`python -S` (no site-packages) through the launch script a client honours, as microTVM's launch
scripts are. Then the project is generated, built, and driven: its model's answers are checked
against the archive's own C built for this machine.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, require_tool
from host_driven_helpers import small_tflite_archive
from utvm.host_driven.executor import Session
from utvm.model_library import HostReference, load
from utvm.project_api.project import GeneratedProject, TemplateProject
from utvm.project_api.wire import LAUNCH_SCRIPT

pytestmark = pytest.mark.timeout(300)

# What the host template stands on, as it sits in the utvm package.
STANDS_ON = ["project_api", "boards/boards.json", "templates/host", "templates/runtime"]


def _without_site_packages(directory: Path) -> None:
    """A launch script that runs the server with `python -S`: no site-packages, so no utvm."""
    script = directory / LAUNCH_SCRIPT
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def demo_archive(tmp_path_factory) -> Path:
    return small_tflite_archive(tmp_path_factory, quantized=False)


@pytest.fixture
def bare_template(tmp_path) -> Path:
    root = tmp_path / "copy"
    for rel in STANDS_ON:
        source, dest = REPO_ROOT / rel, root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "fuzz"))
        else:
            shutil.copy2(source, dest)
    template = root / "templates" / "host"
    _without_site_packages(template)
    return template


def test_python_dash_s_has_no_site_packages():
    # The premise of this file: under -S neither utvm nor numpy can be imported.
    code = "import importlib.util as u; print(*(u.find_spec(m) for m in ('utvm', 'numpy', 'jinja2')))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.split() == ["None", "None", "None"]


@pytest.mark.parametrize("project_type", ["host_driven", "aot_standalone"])
def test_generate_build_and_run_with_the_standard_library_only(bare_template, tmp_path, demo_archive,
                                                               project_type, monkeypatch):
    require_tool("make")
    require_tool("cc")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    project_dir = tmp_path / "project"
    with TemplateProject.from_directory(bare_template, echo=False) as template:
        assert template.info()["platform_name"] == "host"
        template.generate_project(demo_archive, project_dir, {"project_type": project_type}).close()
    # The project carries its floor; its server must run without utvm too.
    assert (project_dir / "project_api" / "server.py").is_file()
    _without_site_packages(project_dir)
    library = load(demo_archive)
    x = np.random.default_rng(3).standard_normal(library.inputs[0]["shape"]).astype("float32")
    with HostReference(library) as reference:
        reference.set_input(0, x)
        reference.run()
        expected = reference.get_output(0)

    with GeneratedProject.from_directory(project_dir, echo=False) as project:
        assert project.record.board["name"] == "host"
        project.build()
        project.flash()
        if project_type == "aot_standalone":
            report = project.call_extension("utvm_run_standalone", options={},
                                            inputs={library.inputs[0]["name"]: x.tobytes().hex()})
            got = np.frombuffer(bytes.fromhex(report["outputs"][0]["hex"]), dtype="float32")
            np.testing.assert_array_equal(got.reshape(expected.shape), expected)
            return
        # Bytes go through the -S server itself: the relay transport, not the direct one.
        with Session.from_project(project, transport="relay") as session:
            session.set_input(0, x)
            session.run()
            np.testing.assert_array_equal(session.get_output(0), expected)
