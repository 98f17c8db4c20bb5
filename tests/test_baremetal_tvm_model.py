"""TVM-compiled models on the bare-metal template under qemu-system-arm: compile for each board's own
target, create-project, build, flash, run over the host-driven protocol, and compare with the same
archive's C run on this machine (HostReference). Also the aot_standalone image of a quantized model.

Timings under QEMU are not real-board timings; nothing here asserts one.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_tool
from model_builders import build_onnx_model, onnx_input_arrays
from utvm.boards import get_board
from utvm.host_driven.executor import Session
from utvm.model_library import HostReference, compile_model, load
from utvm.project_api.project import TemplateProject
from utvm.templates import template_path

BOARDS = ["mps2_an385", "mps2_an386", "mps2_an500"]


@pytest.fixture(scope="module")
def template():
    require_tool("arm-none-eabi-gcc")
    require_tool("make")
    require_tool("qemu-system-arm")
    with TemplateProject.from_directory(template_path("baremetal")) as t:
        yield t


def _compile(tmp_path, kind: str, board: str):
    model = build_onnx_model(kind, tmp_path / f"{kind}.onnx")
    archive = compile_model(model, tmp_path / f"{kind}-{board}.tar", target=get_board(board).target)
    return model, archive


def _reference(archive, inputs: dict) -> dict:
    library = load(archive)
    with HostReference(library) as ref:
        for name, value in inputs.items():
            ref.set_input(name, value)
        ref.run()
        return {o["name"]: ref.get_output(o["name"]) for o in library.outputs}


@pytest.mark.parametrize("board", BOARDS)
def test_compiled_model_runs_host_driven(template, tmp_path, board):
    model, archive = _compile(tmp_path, "cnn", board)
    assert load(archive).metadata["target"]["mcpu"] == get_board(board).cpu
    inputs = onnx_input_arrays(model)
    expected = _reference(archive, inputs)
    with template.generate_project(archive, tmp_path / "project", {"board": board}) as project:
        project.build()
        project.flash()
        with Session.from_project(project) as session:
            session.set_inputs(inputs)
            session.run()
            for name, value in expected.items():
                # Same C, another compiler and FPU: equal up to float rounding.
                np.testing.assert_allclose(session.get_output(name), value, rtol=1e-4, atol=1e-5)
            result = session.benchmark(number=2, repeat=2)
            assert result.mean > 0


def test_quantized_model_aot_standalone(template, tmp_path):
    model, archive = _compile(tmp_path, "qdq_cnn", "mps2_an386")
    inputs = onnx_input_arrays(model)
    npz = tmp_path / "inputs.npz"
    np.savez(npz, **inputs)
    expected = _reference(archive, inputs)
    options = {"board": "mps2_an386", "project_type": "aot_standalone", "input_npz": str(npz)}
    with template.generate_project(archive, tmp_path / "project", options) as project:
        project.build()
        report = project.client.call("utvm_run_standalone", {"timeout_sec": 60})
    assert (report["status"], report["exit_status"]) == (0, 0)
    library = load(archive)
    for out in report["outputs"]:
        meta = library.find_io("output", out["name"])
        got = np.frombuffer(bytes.fromhex(out["hex"]), dtype=meta["dtype"]).reshape(meta["shape"])
        np.testing.assert_allclose(got, expected[out["name"]], rtol=1e-4, atol=1e-5)
