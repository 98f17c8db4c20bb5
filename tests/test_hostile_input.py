"""Crafted archives and hostile requests (issue 18): each is refused with one clear answer before it can
reach a build file, and the server keeps serving.

- An archive whose strings would reach a Makefile, a linker script or C (a model name holding
  `$(shell ...)` and newlines) is refused by the floor's reader before anything is written, by every
  template; absurd shapes and sizes likewise.
- The template renderer refuses a line break in any value but the ones meant to span lines.
- A relative project_dir, a request nested thousands deep, an id of NaN, absurd n and timeout_sec
  each get a protocol error, and the server answers the next request.
- An option value its declared type refuses is refused by the server base, naming the option.
- `create-project --timeout` bounds the server's first answer too.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from project_api_peers import EXAMPLE_TEMPLATE, PEERS_DIR, make_mlf
from project_api_peers.spec_client import SpecClient
from utvm.project_api.template_support import render_text
from utvm.templates import template_path

pytestmark = pytest.mark.timeout(120)


def utvm(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "utvm.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=90, cwd=cwd, env=env)


def _crafted(path: Path, change) -> Path:
    """make_mlf's archive with its metadata changed by change(metadata)."""
    source = make_mlf(path.with_suffix(".orig.tar"))
    with tarfile.open(source) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    metadata = json.loads(files["metadata.json"])
    change(metadata)
    files["metadata.json"] = json.dumps(metadata).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


INJECTION = "x\n$(shell touch INJECTED)\nfoo"


@pytest.mark.parametrize("template,options", [
    ("host", []), ("baremetal", ["-o", "board=mps2_an385"]), ("example", ["-o", "app_name=demo"])])
def test_a_model_name_that_would_inject_into_build_files_is_refused(tmp_path, template, options):
    archive = _crafted(tmp_path / "crafted.tar", lambda m: m.update(model_name=INJECTION))
    done = utvm("create-project", template, archive, tmp_path / "proj", *options, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "model_name" in done.stderr and "is not a C identifier" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "proj").exists()
    assert not list(tmp_path.rglob("INJECTED"))


@pytest.mark.parametrize("change,why", [
    (lambda m: m["memory"].update(arena_bytes=10**18), "not a byte count"),
    (lambda m: m["plan"]["tensors"][0].update(shape=[10**12, 10**12]), "positive integers below 2^31"),
    (lambda m: m["inputs"][0].update(name="n" * 100_000), "is not a printable name"),
])
def test_absurd_metadata_is_refused_at_create_project(tmp_path, change, why):
    archive = _crafted(tmp_path / "crafted.tar", change)
    done = utvm("create-project", "host", archive, tmp_path / "proj")
    assert done.returncode == 2 and why in done.stderr, done.stderr
    assert not (tmp_path / "proj").exists()


def test_the_renderer_refuses_line_breaks_where_a_line_is_expected():
    assert render_text("CC := @cc@\n", {"cc": "gcc"}) == "CC := gcc\n"
    with pytest.raises(ValueError, match="@cc@ holds a line break"):
        render_text("CC := @cc@\n", {"cc": "gcc\nall:\n\ttouch INJECTED"})
    assert render_text("@list@", {"list": "- a\n- b\n"}, multiline=("list",)) == "- a\n- b\n"


@pytest.fixture
def spec():
    client = SpecClient(str(EXAMPLE_TEMPLATE))
    yield client
    client.close()


def _error(reply):
    assert "error" in reply and "result" not in reply, reply
    return reply["error"]


def test_a_relative_project_dir_is_refused(spec, tmp_path):
    mlf = make_mlf(tmp_path / "m.tar")
    error = _error(spec.request("generate_project", {"model_library_format_path": str(mlf),
                                                     "project_dir": "relative/proj",
                                                     "options": {"app_name": "demo"}}))
    assert error["code"] == -32000 and "not an absolute path" in error["data"]["detail"]
    assert not (EXAMPLE_TEMPLATE / "relative").exists()


def test_hostile_requests_get_protocol_errors_and_the_server_keeps_serving(spec):
    spec.send_raw(b'{"jsonrpc": "2.0", "method": "server_info_query", "params": ' + b"[" * 100_000
                  + b"]" * 100_000 + b', "id": 1}\n')
    assert _error(spec.read_reply())["code"] == -32700
    spec.send_raw(b'{"jsonrpc": "2.0", "method": "server_info_query", "params": {}, "id": NaN}\n')
    line = spec.read_reply()  # json.loads would take NaN; the reply must be strict JSON all the same
    assert _error(line)["code"] == -32600 and line["id"] is None
    for params in ({"n": 2 ** 70, "timeout_sec": 1.0}, {"n": 4, "timeout_sec": 1e300},
                   {"n": 4, "timeout_sec": -1}):
        assert _error(spec.request("read_transport", params))["code"] == -32602, params
    assert spec.call("server_info_query", {"tvm_version": None})["platform_name"] == "example"


def test_an_option_value_of_the_wrong_type_is_refused_by_the_server(tmp_path):
    client = SpecClient(str(template_path("baremetal")))
    try:
        error = _error(client.request("generate_project", {
            "model_library_format_path": str(make_mlf(tmp_path / "m.tar")),
            "project_dir": str(tmp_path / "p"),
            "options": {"board": "mps2_an385", "verbose": "yes please"}}))
    finally:
        client.close()
    assert error["message"] == "OptionError"
    assert "verbose='yes please'" in error["data"]["detail"] and "true/false" in error["data"]["detail"]
    assert not (tmp_path / "p").exists()


def test_create_project_timeout_bounds_the_servers_first_answer(tmp_path):
    env = dict(os.environ, UTVM_TEST_MODE="hang-at-start")
    done = utvm("create-project", PEERS_DIR / "misbehaving", make_mlf(tmp_path / "m.tar"),
                tmp_path / "p", "--timeout", "2", env=env)
    # The deadline the client used is the one given, not server_info_query's default of 60 s.
    assert done.returncode == 1 and "did not answer server_info_query within 2 s" in done.stderr
    refused = utvm("create-project", "host", make_mlf(tmp_path / "m.tar"), tmp_path / "p", "--timeout", "-1")
    assert refused.returncode == 2 and "a deadline must be a positive number" in refused.stderr


def test_run_refuses_what_it_could_not_honour_before_the_device_starts(tmp_path):
    # No project is opened for any of these: the refusal comes first, as one line.
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o500)
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    cases = [
        (["--output", tmp_path], "is a directory"),
        (["--output", a_file / "out.npz"], "is not a writable folder"),
        (["--number", str(2 ** 32)], "at most 4294967295"),
        (["--timeout", "-1"], "a deadline must be a positive number"),
    ]
    if os.geteuid() != 0:  # root may write anywhere
        cases.append((["--output", readonly / "sub" / "out.npz"], "is not a writable folder"))
    for extra, why in cases:
        done = utvm("run", tmp_path / "no-such-project", *extra)
        assert done.returncode == 2 and why in done.stderr, (extra, done.stderr)
        assert "Traceback" not in done.stderr


def test_a_negative_stack_is_refused_at_generate(tmp_path):
    done = utvm("create-project", "baremetal", make_mlf(tmp_path / "m.tar"), tmp_path / "p",
                "-o", "board=mps2_an385", "-o", "stack_bytes=-5")
    assert done.returncode == 2 and "stack_bytes=-5" in done.stderr and not (tmp_path / "p").exists()


@pytest.mark.parametrize("output,why", [
    ("", "the output path is empty"), (".", "is a directory"),
    ("a_file/x.tar", "not a folder this user can")])
def test_compile_refuses_an_output_it_could_not_write_before_the_work(tmp_path, output, why):
    (tmp_path / "a_file").write_text("not a folder")
    done = utvm("compile", make_small_model(tmp_path), "-o", output, cwd=tmp_path)
    assert done.returncode == 2 and why in done.stderr and "Traceback" not in done.stderr, done.stderr


def make_small_model(tmp_path: Path) -> Path:
    from model_builders import make_tflite_relu

    return make_tflite_relu(tmp_path / "relu.tflite", [1, 8])


@pytest.mark.parametrize("shape,declared,why", [
    ([1 << 30, 1 << 30], None, "holds 4,611,686,018,427,387,904 bytes; a tensor may hold at most"),
    ([1, 8], [1, 2 ** 31 - 1], "declares output 0 with shape [1, 2147483647], but its operators compute"),
])
def test_absurd_model_shapes_are_refused_at_compile(tmp_path, shape, declared, why):
    from model_builders import make_tflite_relu

    model = make_tflite_relu(tmp_path / "m.tflite", shape, declared)
    done = utvm("compile", model, "-o", tmp_path / "m.tar")
    assert done.returncode == 2 and why in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "m.tar").exists()


def test_a_huge_intermediate_is_refused_at_compile_with_its_size(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([1 << 19, 1 << 20, 8], dtype=np.int64), "shape")
    nodes = [helper.make_node("Expand", ["x", "shape"], ["big"]),
             helper.make_node("Transpose", ["big"], ["t"], perm=[2, 1, 0]),
             helper.make_node("ReduceMax", ["t"], ["y"], keepdims=0)]
    graph = helper.make_graph(nodes, "huge", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
                              initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "huge.onnx")
    done = utvm("compile", tmp_path / "huge.onnx", "-o", tmp_path / "huge.tar")
    assert done.returncode == 2 and "17,592,186,044,416 bytes" in done.stderr, done.stderr


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664)])
def test_an_archive_gets_the_mode_the_umask_allows(tmp_path, umask, mode):
    from utvm.model_library.archive import write_archive

    old = os.umask(umask)
    try:
        path = write_archive(tmp_path / "a.tar", {"metadata.json": b"{}"})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
