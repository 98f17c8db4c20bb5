"""A tvm_runtime project's model on its board: TVM's own runtime and Relax VM, driven over TVM RPC,
behind the Session's calls (set_input, run, get_output(s), benchmark, profile, validate).

    with Session.from_project("proj") as sess:     # a tvm_runtime project gives a TvmRuntimeSession
        sess.set_input(0, x); sess.run(); y = sess.get_output(0)
        print(sess.benchmark().summary())

Opening asks the project's server where TVM's RPC server for the board is (the
``utvm_open_tvm_rpc`` extension: it starts one under qemu-aarch64 or over SSH, or names one given
by address or tracker key), connects, uploads the project's library and loads it into a Relax VM
on the board's device. Figures are the board's own: ``run`` and ``benchmark`` come from TVM's
``time_evaluator`` on the board; ``profile`` times each kernel call there (utvm's board server only)
and names its layers from the archive's layer map;
``validate`` compares the outputs with the host reference (the archive's C built for this machine).

Every RPC call has a deadline. TVM's RPC calls cannot be interrupted, so each runs on a worker
thread; one that overruns closes the project's transport (the board's server stops, which ends the
call) and raises IoTimeoutError.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import queue
import statistics
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np
from utvm.project_api.errors import UserError

from .benchmark import BenchmarkResult
from .errors import HostDrivenError, IoTimeoutError, TransportClosedError
from .layer_names import call_layers
from .profile import ProfileReport, ProfileRow
from .relay_transport import close_server_transport
from .session_inputs import SessionInputs, require_inputs
from .signature import Key, ModelSignature
from .validate import TensorCheck, ValidationReport

OPEN_EXTENSION = "utvm_open_tvm_rpc"
ENTRY = "main"
# Nanosecond resolution: TVM's timers report seconds from the board's steady clock.
TIMER_HZ = 1_000_000_000
# The least time any RPC call gets (the `timeout` given is for one reply of a fast device).
MIN_CALL_TIMEOUT = 60.0
CONNECT_TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class TvmRuntimeInfo:
    """What the session knows of the board and the model it runs."""

    board: str
    runtime_version: str
    model_name: str
    model_hash: str
    device: str
    server: str  # host:port, or tracker HOST:PORT key KEY
    machine: str
    emulated: bool
    library_bytes: int

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


class OutputsValidationReport(ValidationReport):
    """A validation of the outputs alone (TVM's VM does not expose its intermediate tensors)."""

    def verdict(self) -> str:
        first = self.first_failure
        if first is None:
            return f"PASS: the {len(self.checks)} output(s) of the board's run match the {self.reference}"
        c = first.comparison
        return (f"FAIL: output {first.tensor_name!r} differs from the {self.reference}: {c.mismatches} of "
                f"{c.size} elements out of tolerance, max abs error {c.max_abs:.6g}, max rel error "
                f"{c.max_rel:.6g}")


class _Worker:
    """One daemon thread that makes every RPC call (TVM's RPC session stays on one thread), each
    awaited with a deadline; a thread stuck in a call never keeps the interpreter from exiting."""

    def __init__(self):
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="utvm-tvm-rpc", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, box, done = job
            try:
                box["value"] = fn()
            except BaseException as err:  # handed to the caller's thread
                box["error"] = err
            done.set()

    def call(self, fn: Callable[[], Any], timeout: float) -> Any:
        box: Dict[str, Any] = {}
        done = threading.Event()
        self._jobs.put((fn, box, done))
        if not done.wait(timeout):
            raise TimeoutError
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def stop(self) -> None:
        self._jobs.put(None)


class TvmRuntimeSession(SessionInputs):
    """The Session API over TVM RPC for a tvm_runtime project (use Session.from_project)."""

    def __init__(self, project, options: Optional[Mapping[str, Any]] = None, model=None, *,
                 timeout: float = 5.0, run_timeout: float = 120.0, owns_project: bool = False,
                 progress: Optional[Callable[[str, int, int], None]] = None, **_host_driven_only):
        from utvm.model_library import load

        self.project = project
        self._owns_project = owns_project
        self._options = dict(options or {})
        self.library = load(pathlib.Path(model or project.archive))
        self.signature = ModelSignature(self.library.metadata)
        self.call_timeout = max(float(timeout), MIN_CALL_TIMEOUT)
        self.run_timeout = max(float(run_timeout), MIN_CALL_TIMEOUT)
        self.progress = progress
        self.info: Optional[TvmRuntimeInfo] = None
        self.last_run_seconds: Optional[float] = None
        self._inputs: Dict[str, np.ndarray] = {}
        self._remote_inputs: Dict[str, Any] = {}
        self._outputs: Optional[List[Any]] = None
        self._worker: Optional[_Worker] = None
        self._remote = self._vm = self._dev = None
        self._where = "the board"

    # -- lifecycle -------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], Any], timeout: Optional[float] = None,
              hint: Optional[str] = None) -> Any:
        if self._worker is None:
            raise TransportClosedError("the TVM RPC session is closed")
        timeout = self.call_timeout if timeout is None else timeout
        try:
            return self._worker.call(fn, timeout)
        except TimeoutError:
            self.close()
            raise IoTimeoutError(f"{what}: no answer from TVM's RPC server on {self._where} within "
                                 f"{timeout:g} s; the session is closed") from None
        except (UserError, HostDrivenError):
            raise
        except Exception as err:
            first = next((ln for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
            raise HostDrivenError(f"{what} on {self._where} failed: {first}",
                                  hint=hint or "the board's TVM must be the version that built the library "
                                       f"({self.library_info.get('tvm_version')})") from None

    @property
    def library_info(self) -> Dict[str, Any]:
        from utvm.project_api.runtime_library import read_library_info

        return read_library_info(self.library) or {}

    def open(self) -> TvmRuntimeSession:
        """Reach the board's RPC server, upload and load the library, and make the Relax VM."""
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        info = self.library_info
        options = self.project.prepare_options("open_transport", self._options)
        reply = self.project.call_extension(OPEN_EXTENSION, options=options,
                                            timeout=float(options.get("board_start_timeout") or 180) + 60)
        library = pathlib.Path(reply["library"])
        data = library.read_bytes()
        if hashlib.sha256(data).hexdigest() != info.get("sha256"):
            raise UserError(f"{library} is not the library of {self.library.path}",
                            hint=f"rebuild the project (utvm build {self.project.directory})")
        if reply.get("tracker"):
            self._where = f"tracker {reply['tracker']} key {reply['key']}"
        else:
            self._where = f"{reply['host']}:{reply['port']}"
        self._worker = _Worker()
        self._remote = self._call(
            "connecting", lambda: _connect(reply), CONNECT_TIMEOUT,
            hint="check the address (rpc_host, rpc_port) or the tracker and key (tracker, rpc_key; "
                 "`python -m tvm.exec.query_rpc_tracker` lists what a tracker serves)")
        board_info = self._call("asking the board about itself", lambda: _board_info(self._remote))
        device = reply.get("device") or "cpu"
        self._call(f"uploading {library.name} ({len(data)} bytes)",
                   lambda: self._remote.upload(bytearray(data), "model.so"))
        self._vm, self._dev = self._call("loading the library into a Relax VM",
                                         lambda: _load_vm(self._remote, device), self.run_timeout)
        self.info = TvmRuntimeInfo(
            board=reply.get("board") or "unknown",
            runtime_version=f"TVM {board_info.get('tvm_version', '(version not reported)')}, Relax VM",
            model_name=self.library.name, model_hash=self.library.model_hash, device=device,
            server=self._where, machine=board_info.get("machine", "unknown"),
            emulated=bool(reply.get("emulated")), library_bytes=len(data))

    def close(self) -> None:
        """End the RPC session, stop the board's server (when the project started it) and the
        project's server (when this session started it). Idempotent."""
        worker, self._worker = self._worker, None
        self._vm = self._remote = self._dev = None
        self._remote_inputs.clear()
        self._outputs = None
        if worker is not None:
            worker.stop()
        project = self.project
        if project is None:
            return
        if self._owns_project:
            self.project = None
        try:
            close_server_transport(project)
        finally:
            if self._owns_project:
                project.close()

    def __enter__(self) -> TvmRuntimeSession:
        if self.info is None:
            self.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- tensors ---------------------------------------------------------------------------------

    def set_input(self, key: Key, array) -> None:
        """Send input ``key`` (its name or position); dtype and shape must match the archive's."""
        import tvm

        spec, data = self.signature.check_input(key, array)
        self._inputs[spec.name] = data.copy()
        self._remote_inputs[spec.name] = self._call(
            f"sending input {spec.name!r}", lambda: tvm.runtime.tensor(np.ascontiguousarray(data), self._dev))

    def _ready(self) -> None:
        require_inputs(self.signature, self._remote_inputs)
        args = [self._remote_inputs[s.name] for s in self.signature.inputs]
        self._call("setting the VM's inputs", lambda: self._vm.set_input(ENTRY, *args))

    def get_output(self, key: Key) -> np.ndarray:
        """Output ``key`` (its name or position) after ``run()``."""
        spec = self.signature.output(key)
        if self._outputs is None:
            raise UserError("no outputs yet", hint="call run() first")
        array = self._call(f"reading output {spec.name!r}", lambda: self._outputs[spec.index].numpy())
        if str(array.dtype) != spec.dtype or list(array.shape) != list(spec.shape):
            raise HostDrivenError(f"the board's output {spec.name!r} is {array.dtype}{list(array.shape)}; "
                                  f"the archive says {spec.dtype}{list(spec.shape)}")
        return array

    def get_outputs(self) -> Dict[str, np.ndarray]:
        return {spec.name: self.get_output(spec.index) for spec in self.signature.outputs}

    # -- execution -------------------------------------------------------------------------------

    def _evaluator(self, number: int, repeat: int):
        return self._vm.time_evaluator("invoke_stateful", self._dev, number=number, repeat=repeat)

    def run(self) -> float:
        """Run the model once on the inputs set; returns the seconds the board measured (TVM's
        time_evaluator, which also makes one untimed call first)."""
        self._ready()
        result = self._call("running the model", lambda: self._evaluator(1, 1)(ENTRY), self.run_timeout)
        outputs = self._call("taking the outputs", lambda: self._vm.get_outputs(ENTRY))
        self._outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
        self.last_run_seconds = float(result.mean)
        return self.last_run_seconds

    def benchmark(self, number: int = 10, repeat: int = 5, warmup: int = 1) -> BenchmarkResult:
        """Board-timed whole-model runs (TVM's time_evaluator): mean, median, std, min, max seconds."""
        if number < 1 or repeat < 1 or warmup < 0:
            raise ValueError(f"number and repeat must be at least 1 and warmup at least 0, got "
                             f"number={number} repeat={repeat} warmup={warmup}")
        self._ready()
        for _ in range(max(0, warmup - 1)):  # time_evaluator makes one untimed call itself
            self._call("warming up", lambda: self._vm.invoke_stateful(ENTRY), self.run_timeout)
        result = self._call("benchmarking", lambda: self._evaluator(number, repeat)(ENTRY),
                            self.run_timeout * (1 + number * repeat / 10))
        per_call = [float(r) for r in result.results]
        return BenchmarkResult(
            mean=statistics.fmean(per_call), median=statistics.median(per_call),
            std=statistics.pstdev(per_call), min=min(per_call), max=max(per_call), raw=tuple(per_call),
            ticks=tuple(round(s * number * TIMER_HZ) for s in per_call), number=number,
            repeat=len(per_call), warmup=warmup, timer_hz=TIMER_HZ)

    def profile(self, number: int = 5, repeat: int = 1, warmup: int = 1, on_kernel=None) -> ProfileReport:
        """The board's time of each kernel call of a run, in call order (utvm's board server times
        them around each call of the Relax VM; TVM's VM has no profiler of its own)."""
        self._ready()
        try:
            profile = self._call("finding the board's profiler",
                                 lambda: self._remote.get_function("utvm.vm_profile"))
        except HostDrivenError:
            raise UserError(f"TVM's RPC server on {self._where} has no per-kernel profiler",
                            hint="profiles need utvm's board server, the one `utvm run` starts (leave "
                                 "rpc_host unset); --benchmark works with any server") from None
        for _ in range(warmup):
            self._call("warming up", lambda: self._vm.invoke_stateful(ENTRY), self.run_timeout)
        runs = number * repeat
        calls = json.loads(self._call("profiling", lambda: profile(self._vm.module, ENTRY, runs),
                                      self.run_timeout * (1 + runs)))
        means = [statistics.fmean(ns) / 1e9 for _, ns in calls]
        total = sum(means)
        layers = call_layers(self.library.metadata, [name for name, _ in calls])
        rows = [ProfileRow(index=i, name=name, mean=mean, median=statistics.median(ns) / 1e9,
                           min=min(ns) / 1e9, share=mean / total if total else 0.0, layers=layers[i])
                for i, ((name, ns), mean) in enumerate(zip(calls, means))]
        return ProfileReport(rows=rows, total=total, number=number, repeat=repeat)

    def validate(self, reference=None, inputs: Optional[Mapping[Key, Any]] = None, isolate: bool = True,
                 on_kernel=None) -> ValidationReport:
        """Run the model on the board and compare every output with the host reference (the
        archive's C built for this machine, run on the same inputs). TVM's VM keeps its
        intermediate tensors to itself, so the comparison is of the outputs, not layer by layer."""
        from utvm.model_library import HostReference

        from .compare import compare, tolerance_text

        if inputs is not None:
            self.set_inputs(inputs)
        self.run()
        device = self.get_outputs()
        with HostReference(self.library) as host:
            for name, array in self._inputs.items():
                host.set_input(name, array)
            host.run()
            expected = {spec.name: host.get_output(spec.index) for spec in self.signature.outputs}
        tensors = self.library.tensors
        checks = [TensorCheck(kernel_index=len(self.library.kernels), kernel_name="(outputs of the VM's run)",
                              tensor_id=spec.tensor_id, tensor_name=spec.name, dtype=spec.dtype,
                              shape=list(tensors[spec.tensor_id]["shape"]),
                              comparison=compare(device[spec.name], expected[spec.name]))
                  for spec in self.signature.outputs]
        return OutputsValidationReport(checks=checks, reference="host reference (the archive's C built for "
                                       "this machine)", isolated=False, tolerance=tolerance_text())


def _connect(reply: Mapping[str, Any]):
    from tvm import rpc

    if reply.get("tracker"):
        host, _, port = str(reply["tracker"]).rpartition(":")
        return rpc.connect_tracker(host, int(port)).request(reply["key"], priority=1, session_timeout=0)
    return rpc.connect(reply["host"], int(reply["port"]))


def _board_info(remote) -> Dict[str, Any]:
    """What utvm's board server reports about itself ({} from another server)."""
    try:
        return json.loads(remote.get_function("utvm.board_info")())
    except Exception:  # a server that is not utvm's has no such function
        return {}


def _load_vm(remote, device: str):
    from tvm import relax

    module = remote.load_module("model.so")
    devices = [remote.cuda(0), remote.cpu(0)] if device == "cuda" else [remote.cpu(0)]
    return relax.VirtualMachine(module, devices), devices[0]
