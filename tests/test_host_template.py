"""The POSIX host template: generated projects are self-contained, build with make and a C
compiler, move freely, and come in two kinds (host_driven and aot_standalone).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from host_driven_helpers import built_project, host_reference_outputs, run_cli, small_tflite_archive
from utvm.host_driven.executor import Session
from utvm.host_driven.signature import ModelSignature
from utvm.host_driven.standalone import run_standalone
from utvm.model_library import load
from utvm.project_api.errors import ProjectAPIError, UserError
from utvm.project_api.project import GeneratedProject, TemplateProject
from utvm.templates import template_path


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return small_tflite_archive(tmp_path_factory, quantized=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory, archive):
    return built_project(tmp_path_factory, archive)


def _inputs(archive, seed=5):
    from utvm.host_driven.signature import ModelSignature

    return ModelSignature(load(archive).metadata).random_inputs(seed)


def _run_on_device(project_dir, inputs, **kwargs):
    with Session.from_project(project_dir, **kwargs) as session:
        session.set_inputs(inputs)
        session.run()
        return session.get_output(0)


def test_template_describes_its_options():
    result = run_cli("info", "host")
    assert result.returncode == 0, result.stderr
    for text in (
        "platform:   host",
        "template",
        "project_type",
        "host_driven",
        "aot_standalone",
        "cflags",
        "cc",
    ):
        assert text in result.stdout
    assert "utvm_open_direct_transport" in result.stdout


def test_generated_project_is_self_contained(project, archive):
    for rel in (
        "microtvm_api_server.py",
        "project_api/server.py",
        "project_api/record.py",
        "model.tar",
        "model/metadata.json",
        "runtime/src/session.c",
        "runtime/include/utvm/runtime.h",
        "runtime/ports/posix/port_posix.c",
        "src/npy.c",
        "Makefile",
        "README.md",
        "build/model_device",
    ):
        assert (project / rel).is_file(), rel
    assert (project / "model.tar").read_bytes() == archive.read_bytes()
    makefile = (project / "Makefile").read_text()
    assert str(project) not in makefile and "/tmp" not in makefile  # relative paths only
    assert "UTVM_MAX_PACKET=4093" in makefile
    saved = json.loads((project / "utvm-project.json").read_text())
    assert saved["platform_name"] == "host" and saved["options"]["project_type"] == "host_driven"
    assert saved["board"]["name"] == "host" and saved["archive"] == "model.tar"


def test_server_runs_on_a_bare_python(project):
    """The generated project's server needs neither utvm nor third-party packages (python -S)."""
    to_server_r, to_server_w = os.pipe()
    from_server_r, from_server_w = os.pipe()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-S",
            "microtvm_api_server.py",
            "--read-fd",
            str(to_server_r),
            "--write-fd",
            str(from_server_w),
        ],
        cwd=project,
        pass_fds=(to_server_r, from_server_w),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    os.close(to_server_r)
    os.close(from_server_w)
    requests = [
        ("server_info_query", {"tvm_version": "0.27"}),
        ("build", {"options": {}}),
        ("utvm_open_direct_transport", {"options": {}}),
    ]
    with os.fdopen(to_server_w, "wb") as out, os.fdopen(from_server_r, "rb") as replies:
        results = []
        for i, (method, params) in enumerate(requests):
            out.write(
                json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}).encode() + b"\n"
            )
            out.flush()
            results.append(json.loads(replies.readline()))
    proc.wait(30)
    assert all("result" in r for r in results), results
    assert results[0]["result"]["is_template"] is False
    assert "utvm_open_direct_transport" in results[0]["result"]["utvm_extensions"]
    assert results[2]["result"]["kind"] == "subprocess"


def test_moved_project_builds_and_runs(project, archive, tmp_path):
    moved = tmp_path / "somewhere" / "else"
    shutil.copytree(project, moved, ignore=shutil.ignore_patterns("build"))
    with GeneratedProject.from_directory(moved, echo=False) as generated:
        generated.build()
        generated.flash()  # a no-op on the host, but it must accept a built project
    assert (moved / "build" / "model_device").is_file()
    inputs = _inputs(archive)
    for transport in ("direct", "relay"):
        out = _run_on_device(moved, inputs, transport=transport)
        np.testing.assert_array_equal(out, host_reference_outputs(archive, inputs)[0])


def test_cc_and_cflags_options(project, archive, tmp_path):
    cc = "clang" if shutil.which("clang") else "gcc"
    copy = tmp_path / "proj"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("build"))
    with GeneratedProject.from_directory(copy, echo=False) as generated:
        generated.build({"cc": cc, "cflags": "-O0 -DUTVM_LOG_LEVEL=0"})
    flags = (copy / "build" / "compile_flags").read_text()
    assert flags.startswith(cc) and "-O0" in flags and "UTVM_LOG_LEVEL=0" in flags
    inputs = _inputs(archive, seed=9)
    np.testing.assert_array_equal(_run_on_device(copy, inputs), host_reference_outputs(archive, inputs)[0])


def test_build_errors_are_clear(project, tmp_path):
    copy = tmp_path / "proj"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("build"))
    with GeneratedProject.from_directory(copy, echo=False) as generated:
        with pytest.raises(ProjectAPIError, match="build the project first"):
            generated.open_transport()
        with pytest.raises(ProjectAPIError, match="'no-such-cc' not found"):
            generated.build({"cc": "no-such-cc"})
        with pytest.raises(ProjectAPIError, match="make exited"):
            generated.build({"cflags": "-DUTVM_MAX_PACKET=8"})  # below the protocol's minimum: #error


def test_bad_archive_leaves_no_project(tmp_path):
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w"):
        pass
    with TemplateProject.from_directory(template_path("host"), echo=False) as template:
        with pytest.raises(UserError):
            template.generate_project(bad, tmp_path / "proj")
    assert not (tmp_path / "proj").exists()


# ---- aot_standalone ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def standalone(tmp_path_factory, archive):
    return built_project(tmp_path_factory, archive, project_type="aot_standalone")


def test_standalone_program_matches_the_reference(standalone, archive, tmp_path):
    program = standalone / "build" / "model_standalone"
    assert program.is_file()
    assert not (standalone / "build" / "model_device").exists()
    inputs = _inputs(archive, seed=11)
    with GeneratedProject.from_directory(standalone, echo=False) as project:
        assert project.project_type == "aot_standalone"
        outputs = run_standalone(project, ModelSignature(load(archive).metadata), inputs)["outputs"]
    expected = host_reference_outputs(archive, inputs)
    for got, want in zip(outputs.values(), expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    # The program on its own, as its README says to run it.
    np.save(tmp_path / "in.npy", next(iter(inputs.values())))
    result = subprocess.run(
        [str(program), str(tmp_path / "in.npy"), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "output_0.npy"), expected[0])


def test_standalone_program_rejects_a_wrong_array(standalone, tmp_path):
    spec = load(standalone / "model.tar").inputs[0]
    np.save(tmp_path / "wrong.npy", np.zeros(spec["shape"], np.float32))
    program = str(standalone / "build" / "model_standalone")
    result = subprocess.run(
        [program, str(tmp_path / "wrong.npy"), "-o", str(tmp_path / "out")], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert f"needs int8[{','.join(map(str, spec['shape']))}]" in result.stderr and "float32" in result.stderr
    result = subprocess.run([program, "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2 and "takes 1 input file(s), 0 given" in result.stderr


def test_utvm_run_on_a_standalone_project(standalone, archive, tmp_path):
    inputs = _inputs(archive, seed=13)
    name, array = next(iter(inputs.items()))
    np.save(tmp_path / "x.npy", array)
    result = run_cli(
        "run", standalone, "--input", f"{name}=" + str(tmp_path / "x.npy"), "--output", tmp_path / "o.npz"
    )
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "o.npz") as saved:
        out_name = load(archive).outputs[0]["name"]
        np.testing.assert_array_equal(saved[out_name], host_reference_outputs(archive, inputs)[0])
    refused = run_cli("run", standalone, "--benchmark")
    assert refused.returncode == 2 and "aot_standalone" in refused.stderr
    with pytest.raises(ProjectAPIError, match="no transport"):
        with GeneratedProject.from_directory(standalone, echo=False) as generated:
            generated.open_transport()
