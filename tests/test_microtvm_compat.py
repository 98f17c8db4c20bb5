"""utvm's client against a template that behaves as microTVM's templates (TVM v0.18) do: a real
standalone_crt_dir is sent, --debug goes last where a launch script keeps only five arguments, and
the options given at generate time are remembered for a server that does not keep them.

The peer (project_api_peers/microtvm_style) is written from what was seen when utvm drove TVM's own
templates; TVM's code itself is never part of the repository. docs/project-api.md, "microTVM
compatibility", says what was checked against TVM v0.18.0 itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from project_api_peers import copy_peer, make_mlf, read_calls
from utvm.project_api.project import GeneratedProject, TemplateProject, default_standalone_crt_dir
from utvm.project_api.record import read_record

pytestmark = pytest.mark.timeout(120)


def utvm(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "utvm.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


@pytest.fixture
def peer(tmp_path) -> Path:
    return copy_peer("microtvm_style", tmp_path)


def test_the_default_standalone_crt_dir_is_laid_out_as_tvms(tmp_path):
    crt = default_standalone_crt_dir()
    assert (crt / "include").is_dir() and (crt / "src").is_dir() and (crt / "CMakeLists.txt").is_file()


def test_create_project_sends_a_real_crt_dir_and_remembers_the_options(peer, tmp_path):
    mlf = make_mlf(tmp_path / "model.tar")
    project_dir = tmp_path / "proj"
    done = utvm("create-project", peer, mlf, project_dir,
                "-o", "sdk_dir=/opt/sdk", "-o", "project_type=host_driven")
    assert done.returncode == 0, done.stderr
    # The server copied the CRT's three items from the directory it was sent.
    crt = project_dir / "crt"
    assert (crt / "CMakeLists.txt").is_file() and (crt / "src").is_dir()
    assert (crt / "include" / "utvm").is_dir()
    record = read_record(project_dir)
    assert record.written_by == "client" and record.options["sdk_dir"] == "/opt/sdk"
    # build, flash and open need sdk_dir, which the server forgot: the client sends it again.
    for command in ("build", "flash"):
        done = utvm(command, project_dir)
        assert done.returncode == 0, done.stderr
    calls = [json.loads(line) for line in (project_dir / "calls.log").read_text().splitlines()]
    build = next(c for c in calls if c["method"] == "build")
    assert build["params"]["options"]["sdk_dir"] == "/opt/sdk"
    # An option given on the line still wins over the remembered one.
    with GeneratedProject.from_directory(project_dir, echo=False) as project:
        project.build({"sdk_dir": "/elsewhere"})
    assert json.loads((project_dir / "built.marker").read_text())["sdk_dir"] == "/elsewhere"


def test_a_named_standalone_crt_dir_is_sent(peer, tmp_path):
    crt = tmp_path / "tvm_crt"
    for item in ("include", "src"):
        (crt / item).mkdir(parents=True)
    (crt / "include" / "tvm_marker.h").write_text("/* TVM's CRT */\n")
    (crt / "CMakeLists.txt").write_text("# TVM's CRT\n")
    done = utvm("create-project", peer, make_mlf(tmp_path / "model.tar"), tmp_path / "proj",
                "-o", "sdk_dir=x", "-o", "project_type=host_driven", "--standalone-crt", crt)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "proj" / "crt" / "include" / "tvm_marker.h").is_file()
    missing = utvm("create-project", peer, make_mlf(tmp_path / "model2.tar"), tmp_path / "proj2",
                   "-o", "sdk_dir=x", "-o", "project_type=host_driven", "--standalone-crt", tmp_path / "nope")
    assert missing.returncode == 2 and "standalone CRT directory" in missing.stderr


def test_verbose_info_through_a_five_argument_launch_script(peer):
    done = utvm("-v", "info", peer)
    assert done.returncode == 0, done.stderr
    assert "platform:   microtvm_style" in done.stdout
    # The script kept the first five arguments: --debug, last, is the one dropped.
    argv = json.loads((peer / "argv.log").read_text().splitlines()[-1])
    assert argv[0] == "--read-fd" and argv[2] == "--write-fd" and len(argv) == 4


def test_the_library_api_sends_the_default_crt_dir(peer, tmp_path):
    with TemplateProject.from_directory(peer, echo=False) as template:
        project = template.generate_project(make_mlf(tmp_path / "model.tar"), tmp_path / "proj",
                                            {"sdk_dir": "s", "project_type": "host_driven"})
    project.close()
    call = json.loads((peer / "calls.log").read_text().splitlines()[-1])
    assert call["method"] == "generate_project"
    assert Path(call["params"]["standalone_crt_dir"]) == default_standalone_crt_dir()
    assert read_calls(peer)[-1] == "generate_project"
