"""The device runtime built with AddressSanitizer + UndefinedBehaviorSanitizer, driven end to end.

A host-template project is built with `-fsanitize=address,undefined` (the template's `cc` and
`cflags` build options) and the runtime's fixture device likewise; every command of the protocol,
the error paths, corrupted frames and a reset then run against them. Any sanitizer report makes
the device exit non-zero (`-fno-sanitize-recover=all`), and its stderr must stay clean.
"""

from __future__ import annotations

import re
import shutil
import struct

import numpy as np
import pytest
from host_driven_helpers import small_tflite_archive
from runtime_fixtures.build import FAST_LINK_DEFINES, FIXTURE_DIR, compile_c, include_flags, runtime_sources
from utvm.host_driven import protocol as P
from utvm.host_driven.device import DeviceClient
from utvm.host_driven.errors import DeviceError
from utvm.host_driven.executor import Session
from utvm.host_driven.fault_injection import FROM_DEVICE, TO_DEVICE, FaultInjectingTransport
from utvm.host_driven.session import ProtocolSession
from utvm.host_driven.transport import SubprocessTransport
from utvm.templates import template_path

SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
SANITIZER_REPORT = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:")
# ASan must see the device's whole life, leak check at exit included.
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=66",
                 "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=67"}

pytestmark = pytest.mark.timeout(300)


def sanitizing_compiler() -> str:
    for cc in ("clang", "gcc"):
        if shutil.which(cc):
            return cc
    pytest.skip("no C compiler with sanitizers (clang or gcc) installed")


def device_env() -> dict:
    import os

    return {**os.environ, **SANITIZER_ENV}


def assert_instrumented(exe) -> None:
    """The build really took the flags: ASan's and UBSan's runtime hooks are in the program."""
    binary = exe.read_bytes()
    assert b"__asan_init" in binary and b"__ubsan_handle" in binary, f"{exe} is not instrumented"


def assert_exited_clean(transport: SubprocessTransport) -> None:
    """After close(): exit code 0 and no sanitizer report on the device's stderr."""
    tail = transport.stderr_tail(max_lines=60)
    assert not SANITIZER_REPORT.search(tail), tail
    assert transport.returncode == 0, f"device exit code {transport.returncode}\n{tail}"


@pytest.fixture(scope="module")
def sanitized_project(tmp_path_factory):
    """(archive, project_dir): the small int8 model on the host template, built with sanitizers."""
    from utvm.project_api.project import TemplateProject

    cc = sanitizing_compiler()
    archive = small_tflite_archive(tmp_path_factory)
    project_dir = tmp_path_factory.mktemp("sanitized") / "project"
    with TemplateProject.from_directory(template_path("host"), echo=False) as template:
        with template.generate_project(archive, project_dir, {"project_type": "host_driven"}) as project:
            project.build({"cc": cc, "cflags": " ".join(SANITIZE)})
    return archive, project_dir


def test_host_template_round_trip_under_sanitizers(sanitized_project):
    from utvm.model_library import HostReference, load

    archive, project_dir = sanitized_project
    library = load(archive)
    exe = project_dir / "build" / "model_device"
    assert_instrumented(exe)
    inner = SubprocessTransport([str(exe)], cwd=str(project_dir), env=device_env())
    injector = FaultInjectingTransport(inner, seed=11)
    rng = np.random.default_rng(2)
    spec = library.inputs[0]
    with Session(injector, archive, timeout=0.5, retries=4, run_timeout=5.0) as session, \
            HostReference(library) as reference:
        for i in range(4):
            x = rng.integers(-128, 128, size=spec["shape"]).astype(spec["dtype"])
            reference.set_input(0, x)
            reference.run()
            if i == 2:  # corrupted frames both ways: the runtime's framer resynchronises
                injector.inject("corrupt", TO_DEVICE, after=5, length=3)
                injector.inject("drop", FROM_DEVICE, after=2, length=2)
            session.set_input(0, x)
            session.run()
            np.testing.assert_array_equal(session.get_output(0), reference.get_output(0))
        # Every tensor of the plan, constants included, and every kernel on its own.
        for tensor_id in range(len(library.tensors)):
            session.read_plan_tensor(tensor_id)
        for index in range(len(library.kernels)):
            session.run_kernel(index)
        assert session.benchmark(number=3, repeat=2).mean > 0
        exercise_error_paths(session.device, session.info.arena_bytes)
        session.device.reset()
        session.device.ping(b"after reset")
    assert_exited_clean(inner)


def exercise_error_paths(device: DeviceClient, arena_bytes: int) -> None:
    """Each refusal the dispatcher has, then a ping: the device must still answer."""
    bad = [
        (0x7F, b""),
        (P.CMD_INFO, b"\0"),
        (P.CMD_TENSOR_INFO, struct.pack("<H", 0xFFFF)),
        (P.CMD_KERNEL_INFO, struct.pack("<H", 0xFFFF)),
        (P.CMD_WRITE, P.WRITE_ARGS.pack(0, 0, 0xFFFFFFF0, 0xFFFFFFFF) + b"\0" * 32),
        (P.CMD_WRITE, b"\0"),
        (P.CMD_READ, P.READ_ARGS.pack(0, 0, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)),
        (P.CMD_READ, P.READ_ARGS.pack(0, 0, 0, arena_bytes + 1, arena_bytes + 1)),
        (P.CMD_RUN_KERNEL, struct.pack("<H", 0xFFFE)),
        (P.CMD_TIME, P.TIME_ARGS.pack(P.TIME_WHOLE_MODEL, 0, 1, 0xFFFFFFFF)),
        (P.CMD_TIME, P.TIME_ARGS.pack(0xFFFE, 0, 1, 1)),
        (P.CMD_RESET, b"x"),
    ]
    for cmd, args in bad:
        with pytest.raises(DeviceError):
            device.session.request(cmd, args)
    device.ping(b"still serving")


# ---- the runtime's fixture device: kernel errors, logs, workspace, the big tensor --------------


@pytest.fixture(scope="module")
def sanitized_fixture_device(tmp_path_factory):
    cc = sanitizing_compiler()
    out = tmp_path_factory.mktemp("sanitized-fixture") / "device"
    flags = ["-O1", *SANITIZE, *include_flags(), *(f"-D{d}" for d in FAST_LINK_DEFINES)]
    return compile_c(cc, runtime_sources() + [FIXTURE_DIR / "fixture_model.c"], out, flags)


def test_fixture_device_round_trip_under_sanitizers(sanitized_fixture_device):
    assert_instrumented(sanitized_fixture_device)
    inner = SubprocessTransport([str(sanitized_fixture_device)], env=device_env())
    logs = []
    session = ProtocolSession(inner, timeout=2.0, retries=2,
                              log_handler=lambda level, text: logs.append(text))
    client = DeviceClient(session.open())
    try:
        info = client.info()
        n = client.tensor_info(info.inputs[0]).nbytes
        for first in (0, 124, 127):  # plain, a device log line, a kernel error
            data = np.full(n, 3, dtype=np.int8)
            data[0] = first
            client.write_tensor(info.inputs[0], data.tobytes())
            if first == 127:
                with pytest.raises(DeviceError, match="KERNEL_FAILED"):
                    client.run()
            else:
                client.run()
            client.read_tensor(info.outputs[0], client.tensor_info(info.outputs[0]).nbytes)
        assert any("124" in line for line in logs), logs
        client.write_tensor(info.inputs[0], bytes(n))  # a plain input again, for the timed runs
        for tensor_id in range(info.num_tensors):
            t = client.tensor_info(tensor_id)
            client.read_tensor(tensor_id, t.nbytes)
        for index in range(info.num_kernels):
            client.kernel_info(index)
        client.time(None, number=2, repeat=3)
        exercise_error_paths(client, info.arena_bytes)
    finally:
        session.close()
    assert_exited_clean(inner)
