"""`utvm --quiet` for scripts: no progress lines and no echoed build output, results still printed,
and a failed build still quotes the compiler's last lines in its one error."""

from __future__ import annotations

import shutil

import pytest
from host_driven_helpers import run_cli, small_tflite_archive


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("the host template builds with make and cc, which are not on PATH")
    return small_tflite_archive(tmp_path_factory)


def test_quiet_prints_results_only(archive, tmp_path):
    project = tmp_path / "p"
    loud = run_cli("create-project", "host", archive, tmp_path / "loud")
    assert loud.returncode == 0 and "created" in loud.stderr  # the progress lines --quiet removes
    for argv in (("-q", "create-project", "host", archive, project), ("build", project, "--quiet")):
        done = run_cli(*argv)
        assert done.returncode == 0, done.stderr
        assert done.stderr == "" and done.stdout == "", (argv, done.stdout, done.stderr)
    ran = run_cli("--quiet", "run", project, "--validate")
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr == ""
    assert "validation: PASS" in ran.stdout and "output " in ran.stdout


def test_a_quiet_build_that_fails_quotes_the_compiler(archive, tmp_path):
    project = tmp_path / "p"
    assert run_cli("-q", "create-project", "host", archive, project).returncode == 0
    with open(project / "runtime" / "src" / "backend.c", "a", encoding="utf-8") as source:
        source.write("\nthis is not C\n")
    built = run_cli("-q", "build", project)
    assert built.returncode == 1
    lines = built.stderr.splitlines()
    assert lines[0].startswith("error: build failed"), built.stderr
    assert any("backend.c" in line and "error" in line for line in lines[1:]), built.stderr
    assert lines[-1].startswith("hint: the server's last lines above say why")
