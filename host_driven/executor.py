"""The user-facing session: a compiled model on a device, driven from Python.

    with Session.from_project("proj") as sess:          # or Session(transport, "model.tar")
        sess.set_input("input_1", x)
        sess.run()
        y = sess.get_output(0)
        print(sess.benchmark().summary())
        print(sess.profile().table())
        print(sess.validate().verdict())

Every array is checked against the archive's signature (metadata.json) before a byte is sent,
the device is checked to carry the archive's model (same hash) when the session opens, and the
session closes its transport (and the project's server, when it opened it) on every error path.
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np
from utvm.project_api.errors import UserError
from utvm.project_api.project import GeneratedProject

from . import protocol as P
from .benchmark import BenchmarkResult, timed, timed_one_by_one
from .device import DeviceClient, DeviceInfo
from .direct import open_project_transport
from .errors import HostDrivenError
from .layer_names import kernel_layers
from .profile import ProfileReport, profile_kernels
from .session import ProtocolSession
from .session_inputs import SessionInputs, require_inputs
from .signature import Key, ModelSignature
from .transport import Transport
from .tvm_runtime_session import TvmRuntimeSession
from .validate import Reference, ValidationReport, validate_layers

# How long a whole run (or one kernel) may take before the device is declared hung.
DEFAULT_RUN_TIMEOUT = 120.0
# Transfers at least this large report progress.
PROGRESS_MIN_BYTES = 256 * 1024
# The project type whose model runs under TVM's own runtime, reached over TVM RPC.
TVM_RUNTIME = "tvm_runtime"

Progress = Callable[[str, int, int], None]


class ModelMismatchError(HostDrivenError):
    """The device carries another model (or another build of it) than the archive given."""


def _load_library(model):
    from utvm.model_library import ModelLibrary, load

    return model if isinstance(model, ModelLibrary) else load(pathlib.Path(model))


def _clobbered_inputs(library) -> bool:
    """True when some kernel writes over an input's bytes, so inputs must be re-sent before a run."""
    tensors = library.tensors
    written = {t for k in library.kernels for t in k["outputs"]}
    for entry in library.inputs:
        tensor = tensors[entry["tensor"]]
        start, end = tensor["offset"], tensor["offset"] + tensor["nbytes"]
        for tid in written:
            other = tensors[tid]
            if (
                other["storage"] == "arena"
                and other["offset"] < end
                and start < other["offset"] + other["nbytes"]
            ):
                return True
    return False



class Session(SessionInputs):
    """A model on a device: set inputs, run, read outputs, benchmark, profile and validate.

    ``transport`` is any :class:`Transport` to a device flashed with ``model`` (a ModelLibrary or
    the path of its archive). The session owns the transport: closing the session closes it.
    ``timeout``, ``retries`` and ``max_packet`` (the host's packet limit proposal) go to the
    protocol session; ``run_timeout`` bounds runs;
    ``progress(what, done, total)`` is called during large transfers.
    """

    def __init__(
        self,
        transport: Transport,
        model,
        *,
        timeout: float = 5.0,
        retries: int = 3,
        run_timeout: float = DEFAULT_RUN_TIMEOUT,
        check_model: bool = True,
        max_packet: int = P.MAX_PACKET,
        progress: Optional[Progress] = None,
        log_handler: Optional[Callable[[int, str], None]] = None,
        project=None,
        owns_project: bool = False,
    ):
        self.project = project
        self._owns_project = owns_project
        self.transport = transport
        self.protocol: Optional[ProtocolSession] = None
        try:
            self.library = _load_library(model)
            self.signature = ModelSignature(self.library.metadata)
            self.protocol = ProtocolSession(
                transport, timeout=timeout, retries=retries, log_handler=log_handler, max_packet=max_packet
            )
        except BaseException:
            self.close()
            raise
        self.device = DeviceClient(self.protocol)
        self.run_timeout = run_timeout
        self.check_model = check_model
        self.progress = progress
        self.info: Optional[DeviceInfo] = None
        self.last_run_seconds: Optional[float] = None
        self._inputs: Dict[str, np.ndarray] = {}
        self._stale_inputs: set = set()
        self._runs_clobber_inputs = _clobbered_inputs(self.library)

    @classmethod
    def from_project(
        cls,
        project,
        options: Optional[Mapping[str, Any]] = None,
        transport: str = "auto",
        model=None,
        **kwargs,
    ) -> Session:
        """A session on a generated project's device (not yet opened; use ``with`` or ``open()``).

        ``project`` is a GeneratedProject or a project directory (whose server the session then
        starts and stops). ``transport`` is "auto" (direct when the server offers it, else the
        relay), "direct" or "relay". ``model`` defaults to the archive the project reports.

        A ``tvm_runtime`` project (the Jetson template's) runs the model under TVM's own runtime on
        the board: it gives a :class:`~utvm.host_driven.tvm_runtime_session.TvmRuntimeSession`, which
        offers the same calls over TVM RPC.
        """
        owns = not isinstance(project, GeneratedProject)
        if owns:
            project = GeneratedProject.from_directory(project)
        if project.project_type == TVM_RUNTIME:
            try:
                return TvmRuntimeSession(project, options, model, owns_project=owns, **kwargs)
            except BaseException:
                if owns:
                    project.close()
                raise
        try:
            if model is None:
                model = project.archive
                if model is None:
                    raise UserError(f"{project.directory} reports no model archive",
                                    hint="give the archive: Session.from_project(..., model='model.tar')")
            link = open_project_transport(project, options, mode=transport)
        except BaseException:
            if owns:
                project.close()
            raise
        return cls(link, model, project=project, owns_project=owns, **kwargs)

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> Session:
        """Handshake, read the device info, and check that the device runs this archive's model.

        Also the way back after a DeviceRebootedError: the inputs set before are sent again
        before the next run.
        """
        try:
            self.protocol.open()
            self._stale_inputs = set(self._inputs)
            self.info = self.device.info()
            if self.check_model:
                self._check_model(self.info)
        except BaseException:
            self.close()
            raise
        return self

    def _check_model(self, info: DeviceInfo) -> None:
        meta = self.library.metadata
        if info.model_hash != meta["model_hash"] and meta["model_hash"].startswith(info.model_hash):
            raise ModelMismatchError(
                f"the device reported only {len(info.model_hash)} characters of its model hash, too few "
                f"to check it against the archive {self.library.path} (its runtime cuts INFO to one "
                f"packet of {self.protocol.max_packet} bytes)",
                hint="rebuild and flash the project with this utvm version, or use larger packets",
            )
        if info.model_hash != meta["model_hash"]:
            raise ModelMismatchError(
                f"the device runs model {info.model_name!r} (hash {info.model_hash[:12]}), but the archive "
                f"{self.library.path} holds {meta['model_name']!r} (hash {meta['model_hash'][:12]})",
                hint="rebuild and flash the project from this archive, or give the archive it was built from",
            )
        tensors, kernels = len(self.library.tensors), len(self.library.kernels)
        if info.num_tensors != tensors or info.num_kernels != kernels:
            raise ModelMismatchError(
                f"the device's model table ({info.num_tensors} tensors, {info.num_kernels} kernels) "
                f"differs from the archive's ({tensors} tensors, {kernels} kernels)",
                hint="rebuild and flash the project",
            )

    @property
    def link(self):
        """What the link has cost so far (a LinkReport: frames received and corrupted, the frame
        error rate, re-sends, lost requests and replies, packet sizes); ``.as_dict()`` for JSON."""
        return self.protocol.link

    def reset(self) -> None:
        """Reboot the device and open a new session on it; the inputs are sent again before the next run."""
        self.device.reset(timeout=self.run_timeout)
        self._stale_inputs = set(self._inputs)
        self.info = self.device.info()

    def close(self) -> None:
        """Close the transport (and the project's server if this session started it). Idempotent."""
        try:
            if self.protocol is not None:
                self.protocol.close()
            elif self.transport is not None:
                self.transport.close()
        finally:
            self.transport = None
            if self._owns_project and self.project is not None:
                project, self.project = self.project, None
                project.close()

    def __enter__(self) -> Session:
        if self.info is None:
            self.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- tensors ---------------------------------------------------------------------------------

    def _progress_for(self, what: str, nbytes: int):
        if self.progress is None or nbytes < PROGRESS_MIN_BYTES:
            return None
        return lambda done, total: self.progress(what, done, total)

    def _send_input(self, name: str) -> None:
        spec = self.signature.input(name)
        data = self._inputs[name]
        self.device.write_tensor(
            spec.tensor_id, data, progress=self._progress_for(f"input {name}", spec.nbytes)
        )
        self._stale_inputs.discard(name)

    def set_input(self, key: Key, array) -> None:
        """Write input ``key`` (its name or position); dtype and shape must match the archive's."""
        spec, data = self.signature.check_input(key, array)
        self._inputs[spec.name] = data.copy()
        self._send_input(spec.name)

    def _refresh_inputs(self) -> None:
        require_inputs(self.signature, self._inputs)
        for name in sorted(self._stale_inputs):
            self._send_input(name)

    def note_inputs_consumed(self) -> None:
        """Record that the device ran kernels, which may have overwritten the inputs' bytes."""
        if self._runs_clobber_inputs:
            self._stale_inputs = set(self._inputs)

    def read_plan_tensor(self, tensor_id: int) -> np.ndarray:
        """Any tensor of the plan (input, output, intermediate or constant) as the device holds it now."""
        spec = self.library.tensors[tensor_id]
        array = np.empty(spec["shape"], dtype=spec["dtype"])
        progress = self._progress_for(f"tensor {spec['name']}", spec["nbytes"])
        return self.device.read_tensor(tensor_id, spec["nbytes"], progress=progress, out=array)

    def get_output(self, key: Key) -> np.ndarray:
        """Output ``key`` (its name or position) after ``run()``."""
        return self.read_plan_tensor(self.signature.output(key).tensor_id)

    def get_outputs(self) -> Dict[str, np.ndarray]:
        """Every output, by name."""
        return {spec.name: self.get_output(spec.index) for spec in self.signature.outputs}

    # -- execution -------------------------------------------------------------------------------

    def run(self) -> float:
        """Run the whole model once on the inputs set; returns the device-timed seconds it took."""
        self._refresh_inputs()
        ticks = self.device.run(timeout=self.run_timeout)
        self.note_inputs_consumed()
        self.last_run_seconds = ticks / self.device.timer_hz
        return self.last_run_seconds

    def run_kernel(self, index: int) -> float:
        """Run one kernel on the arena as it is; returns its device-timed seconds."""
        ticks = self.device.run_kernel(index, timeout=self.run_timeout)
        self.note_inputs_consumed()
        return ticks / self.device.timer_hz

    def benchmark(self, number: int = 10, repeat: int = 5, warmup: int = 1) -> BenchmarkResult:
        """Device-timed whole-model runs: mean, median, std, min and max seconds per run."""
        if self._inputs:
            self._refresh_inputs()
        try:
            if self._inputs and self._runs_clobber_inputs:
                # A run overwrites the inputs' bytes (the default plan lets the arena reuse them), so
                # each timed run gets its inputs again first; the device's clock times the run alone.
                return timed_one_by_one(self.device, self._send_all_inputs, number=number, repeat=repeat,
                                        warmup=warmup, timeout=self.run_timeout)
            return timed(self.device, None, number=number, repeat=repeat, warmup=warmup)
        finally:
            self.note_inputs_consumed()

    def _send_all_inputs(self) -> None:
        self._stale_inputs = set(self._inputs)
        self._refresh_inputs()

    def profile(
        self, number: int = 5, repeat: int = 5, warmup: int = 1, on_kernel: Optional[Callable] = None
    ) -> ProfileReport:
        """Device time of every kernel on its own, named as in the archive, in plan order."""
        if self._inputs:
            self._refresh_inputs()
        names = [str(k["name"]) for k in self.library.kernels]
        try:
            return profile_kernels(
                self.device, names, number=number, repeat=repeat, warmup=warmup, on_kernel=on_kernel,
                layers=[kernel_layers(self.library.metadata, i) for i in range(len(names))],
            )
        finally:
            self.note_inputs_consumed()

    def validate(
        self,
        reference: Reference = None,
        inputs: Optional[Mapping[Key, Any]] = None,
        isolate: bool = True,
        on_kernel: Optional[Callable[[int, str], None]] = None,
    ) -> ValidationReport:
        """Run kernel by kernel and compare every intermediate tensor with ``reference``.

        ``reference`` None uses model_library's HostReference on the same inputs; otherwise a
        mapping of expected tensors or a callable returning one (see ``validate.py``).
        ``inputs`` default to the ones set with ``set_input``.
        """
        if inputs is not None:
            for key, array in inputs.items():
                self.set_input(key, array)
        self._refresh_inputs()
        return validate_layers(self, self.inputs, reference=reference, isolate=isolate, on_kernel=on_kernel)

    def validate_source(
        self, model_file=None, on_kernel: Optional[Callable[[int, str], None]] = None
    ) -> ValidationReport:
        """Run kernel by kernel and compare each layer's output with the source framework's own
        (see ``source_validation.py``); ``model_file`` overrides the model the archive carries."""
        from .source_validation import validate_against_source

        self._refresh_inputs()
        return validate_against_source(self, self.inputs, model_file=model_file, on_kernel=on_kernel)
