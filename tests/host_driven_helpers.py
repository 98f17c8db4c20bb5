"""Shared pieces of the host-template, transport, executor and `utvm run` tests.

Compiled archives and built projects are cached for the whole pytest session (compiles and
builds take seconds each), keyed by what made them, so every test file reuses them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_MODELS = REPO_ROOT.parent / "shared" / "models"
CLI = [sys.executable, "-m", "utvm.cli.main"]

_ARCHIVES: Dict[str, Path] = {}
_PROJECTS: Dict[Tuple[str, str], Path] = {}


def cached_archive(tmp_path_factory, key: str, make_model: Callable[[Path], object], **options) -> Path:
    """The MLF archive of the model ``make_model(workdir)`` returns (a path or an IRModule), compiled
    once (with compile ``options``)."""
    if key not in _ARCHIVES:
        from utvm.model_library import compile_model

        workdir = tmp_path_factory.mktemp(f"model-{key}")
        model = make_model(workdir)
        _ARCHIVES[key] = Path(compile_model(model, workdir / f"{key}.tar", model_name=key, **options))
    return _ARCHIVES[key]


def small_tflite_archive(tmp_path_factory, quantized: bool = True) -> Path:
    """A tiny FULLY_CONNECTED + RELU TFLite model (int8 or float32), compiled."""
    from model_builders import make_small_tflite

    key = "small_int8" if quantized else "small_float"
    return cached_archive(tmp_path_factory, key, lambda d: make_small_tflite(d / f"{key}.tflite", quantized))


def shared_model_archive(tmp_path_factory, filename: str) -> Path:
    """A model of ../shared/models, compiled (the caller has checked it exists)."""
    key = filename.split(".")[0]
    return cached_archive(tmp_path_factory, key, lambda _d: SHARED_MODELS / filename)


def built_project(tmp_path_factory, archive: Path, project_type: str = "host_driven") -> Path:
    """A host project generated from ``archive`` and built, once per archive and project type."""
    key = (str(archive), project_type)
    if key not in _PROJECTS:
        from utvm.project_api.project import TemplateProject
        from utvm.templates import template_path

        project_dir = tmp_path_factory.mktemp(f"proj-{archive.stem}-{project_type}") / "project"
        with TemplateProject.from_directory(template_path("host"), echo=False) as template:
            with template.generate_project(archive, project_dir, {"project_type": project_type}) as project:
                project.build()
        _PROJECTS[key] = project_dir
    return _PROJECTS[key]


def run_cli(*args: str, timeout: float = 300, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """`utvm ARGS...` in a fresh interpreter, as a user runs it; output captured as text."""
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def host_reference_outputs(archive: Path, inputs: Dict[str, np.ndarray]) -> list:
    """Outputs of the archive's C on this machine (model_library's HostReference), in order."""
    from utvm.model_library import HostReference, load

    library = load(archive)
    with HostReference(library) as reference:
        for name, array in inputs.items():
            reference.set_input(name, array)
        reference.run()
        return [reference.get_output(i) for i in range(len(library.outputs))]


@contextlib.contextmanager
def socket_bridge(argv: Sequence[str]) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that starts ``argv`` for its one client and pipes bytes both ways.

    Stands in for a device or emulator UART on a socket (as QEMU's socket chardev is); yields the port.
    """
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(30)
    port = server.getsockname()[1]
    children = []

    def pump_to_child(conn, child):
        with contextlib.suppress(OSError):
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                child.stdin.write(data)
        with contextlib.suppress(OSError):
            child.stdin.close()

    def serve():
        try:
            conn, _ = server.accept()
        except OSError:
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        children.append(child)
        threading.Thread(target=pump_to_child, args=(conn, child), daemon=True).start()
        with contextlib.suppress(OSError):
            while True:
                data = os.read(child.stdout.fileno(), 65536)
                if not data:
                    break
                conn.sendall(data)
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.close()
        for child in children:
            with contextlib.suppress(OSError):
                child.stdin.close()
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        thread.join(5)
