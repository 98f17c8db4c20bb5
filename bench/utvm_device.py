"""utvm's side of the benchmark: a model on the POSIX host template, driven over its pipe.

Every figure goes through the public path a user takes: model_library compiles the model, the
`host` template generates and builds the project, the project's server hands out the direct
transport (the device program's stdin/stdout), and DeviceClient / the executor drive it.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

# A 4 MiB tensor needs a model that has one: float32 [1, N] -> Relu, as an ONNX file, which goes
# through model_library's front end like any user model.
TRANSFER_MODEL_NAME = "bench_transfer"


def write_transfer_model(nbytes: int, path: Path) -> Path:
    """An ONNX model whose input and output are float32 tensors of `nbytes` bytes."""
    from onnx import TensorProto, helper

    shape = [1, nbytes // 4]
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], TRANSFER_MODEL_NAME,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path.write_bytes(model.SerializeToString())
    return path


def build_project(model, workdir: Path, name: str) -> tuple[Path, Path]:
    """Compile `model` (a model file or a Relax module) and build a host project; (archive, project)."""
    from utvm.model_library import compile_model
    from utvm.project_api.project import TemplateProject
    from utvm.templates import template_path

    archive = Path(compile_model(model, workdir / f"{name}.tar", model_name=name))
    project_dir = workdir / f"{name}-project"
    with TemplateProject.from_directory(template_path("host"), echo=False) as template:
        with template.generate_project(archive, project_dir, {"project_type": "host_driven"}) as project:
            project.build()
    return archive, project_dir


@contextlib.contextmanager
def executor_session(project_dir: Path, archive: Path, **kwargs) -> Iterator:
    """An open executor Session on the project's device, through the template's direct transport."""
    from utvm.host_driven.executor import Session

    with Session.from_project(project_dir, transport="direct", model=archive, **kwargs) as session:
        yield session


class UtvmPeer:
    """A host-template device with a `nbytes` input tensor, driven through DeviceClient."""

    name = "utvm"

    def __init__(self, nbytes: int):
        self._tmp = tempfile.TemporaryDirectory(prefix="utvm-bench-xfer-")
        try:
            workdir = Path(self._tmp.name)
            model = write_transfer_model(nbytes, workdir / f"{TRANSFER_MODEL_NAME}.onnx")
            archive, project_dir = build_project(model, workdir, TRANSFER_MODEL_NAME)
            self._session = executor_session(project_dir, archive)
            session = self._session.__enter__()
        except BaseException:
            self._tmp.cleanup()
            raise
        self.device = session.device
        self.round_trip = self.device.ping
        self.tensor = session.signature.input(0).tensor_id
        self.nbytes = nbytes
        self.data = os.urandom(nbytes)
        self.device.write_tensor(self.tensor, self.data)
        self.sink = bytearray(nbytes)  # downloads land here, as the raw pipe's do in its sink
        if self.device.read_tensor(self.tensor, nbytes, out=self.sink) != self.data:
            self.close()
            raise RuntimeError("the device returned different bytes than it was sent")
        self.packet = {"max_packet": session.protocol.max_packet, "window": session.protocol.window,
                       "fast_path": session.protocol.fast_path}

    def upload(self) -> None:
        self.device.write_tensor(self.tensor, self.data)

    def download(self) -> None:
        self.device.read_tensor(self.tensor, self.nbytes, out=self.sink)

    def close(self) -> None:
        try:
            self._session.__exit__(None, None, None)
        finally:
            self._tmp.cleanup()


def measure_model(model: Path, inputs: list[np.ndarray], *, number: int, repeat: int) -> dict:
    """Device-timed latency (seconds per inference, median of `repeat`) and the outputs."""
    with tempfile.TemporaryDirectory(prefix="utvm-bench-model-") as tmp:
        archive, project_dir = build_project(model, Path(tmp), model.stem)
        with executor_session(project_dir, archive, run_timeout=600.0) as session:
            for index, array in enumerate(inputs):
                session.set_input(index, array)
            session.run()
            outputs = [session.get_output(spec.index) for spec in session.signature.outputs]
            ticks = session.device.time(None, number=number, repeat=repeat, timeout=600.0)
            seconds = statistics.median(ticks) / session.device.timer_hz / number
            return {"utvm_s": seconds, "outputs": outputs, "arena_bytes": session.info.arena_bytes}
