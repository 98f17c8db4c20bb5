"""POSIX host template: the model runs as a native process on this machine.

Two kinds of project (option ``project_type``):
- ``host_driven`` (default): the device runtime serving the host-driven protocol over the
  program's stdin/stdout. ``open_transport`` starts the program and relays its bytes; the
  ``utvm_open_direct_transport`` extension instead tells a utvm client to start it itself, so
  bytes need not cross JSON-RPC.
- ``aot_standalone``: a program that reads each input from an ``.npy`` file, runs the model once
  and writes each output to an ``.npy`` file (``build/model_standalone IN.npy ... -o OUTDIR``).

``generate_project`` writes a self-contained project: this server and a copy of the server base,
the runtime sources, the model sources and a copy of the MLF, and a plain Makefile rendered with
jinja2 (only generation needs jinja2 and utvm; building and running need Python's standard
library, make and a C compiler). ``build`` runs make, ``flash`` has nothing to do.
"""

import collections
import json
import os
import pathlib
import selectors
import shlex
import shutil
import subprocess
import sys
import threading
import time

# The server base: a generated project carries its own copy; the template inside the utvm package
# uses the package's (../../project_api/server.py from here).
try:
    import utvm_project_server as server
except ImportError:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "project_api"))
    import server

HERE = pathlib.Path(__file__).resolve().parent

PLATFORM_NAME = "host"
PROGRAMS = {"host_driven": "build/model_device", "aot_standalone": "build/model_standalone"}
# read_transport with no timeout_sec waits at most this long (a call must never hang).
DEFAULT_READ_TIMEOUT_SEC = 300.0
STDERR_TAIL_BYTES = 8192

PROJECT_OPTIONS = [
    server.ProjectOption(
        "project_type",
        type="str",
        choices=sorted(PROGRAMS),
        default="host_driven",
        optional=["generate_project"],
        help="host_driven: the device runtime driven over stdin/stdout; "
        "aot_standalone: a program that runs the model on .npy files, no host needed",
    ),
    server.ProjectOption(
        "cc",
        type="str",
        default="cc",
        optional=["build"],
        help="C compiler that build runs (cc, gcc, clang...)",
    ),
    server.ProjectOption(
        "cflags",
        type="str",
        default="",
        optional=["build"],
        help="extra compiler flags, after the defaults (-O2 -g), so e.g. -O3 overrides -O2",
    ),
    server.ProjectOption(
        "verbose",
        type="bool",
        default=False,
        optional=["generate_project", "build", "flash", "open_transport"],
        help="print each command",
    ),
]


BuildError = server.BuildError
ProjectStateError = server.ProjectStateError


def _log(options, text):
    server.log_step(options, PLATFORM_NAME, text)


# ---- generate_project (runs in the template, where utvm and jinja2 are installed) -----------


def _copy_runtime(project_dir):
    """Copy the device runtime (sources, headers, POSIX port); returns its file lists."""
    runtime = HERE.parent / "runtime"
    files = json.loads((runtime / "runtime_files.json").read_text())
    dest = project_dir / "runtime"
    for rel in files["sources"] + files["posix_sources"]:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(runtime / rel, dest / rel)
    for rel in files["includes"] + files["posix_includes"]:
        shutil.copytree(runtime / rel, dest / rel, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.c"))
    return files


def _render(name, dest, **context):
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    dest.write_text(env.get_template(name).render(**context))


def _generate(mlf_path, project_dir, options):
    from utvm.model_library import load

    library = load(mlf_path)  # refuses a malformed archive before anything is written
    project_type = options["project_type"]
    project_dir.mkdir(parents=True)
    shutil.copy2(__file__, project_dir / "microtvm_api_server.py")
    server.copy_server_base(project_dir)
    shutil.copy2(mlf_path, project_dir / "model.tar")
    library.extract(project_dir / "model")

    files = _copy_runtime(project_dir)
    (project_dir / "src").mkdir()
    for name in ("npy.c", "npy.h", "standalone_main.c"):
        shutil.copy2(HERE / "src" / name, project_dir / "src" / name)

    if project_type == "host_driven":
        strict = [f"runtime/{rel}" for rel in files["sources"] + files["posix_sources"]]
    else:
        # No session: the generated plan only needs the backend's workspace and error symbols.
        strict = ["runtime/src/backend.c", "src/npy.c", "src/standalone_main.c"]
    generated = sorted(
        str(p.relative_to(project_dir)) for p in (project_dir / "model").glob("codegen/host/src/*.c")
    )
    includes = [f"runtime/{rel}" for rel in files["includes"] + files["posix_includes"]]
    includes += ["model/codegen/host/include", "src"]
    name = library.metadata["model_name"]
    _render(
        "Makefile.j2",
        project_dir / "Makefile",
        model_name=name,
        project_type=project_type,
        program=PROGRAMS[project_type],
        # A pipe is fast and RAM is plentiful: the runtime's fast-link configuration.
        defines=[f"-D{d}" for d in files["fast_link_defines"]] + ['-DUTVM_BOARD_NAME=\\"host\\"'],
        include_dirs=includes,
        strict_sources=strict,
        generated_sources=generated,
    )
    _render(
        "README.md.j2",
        project_dir / "README.md",
        model_name=name,
        project_type=project_type,
        program=PROGRAMS[project_type],
        inputs=library.metadata["inputs"],
        outputs=library.metadata["outputs"],
    )
    _log(options, f"generated {project_type} project for {name} in {project_dir}")


# ---- the device process (runs in a generated project: standard library only) --------------


class DeviceProcess:
    """The built program, with non-blocking pipes and a bounded stderr tail for error messages."""

    def __init__(self, argv, cwd):
        self.proc = subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
        )
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        os.set_blocking(self._in, False)
        os.set_blocking(self._out, False)
        self._stderr = collections.deque()
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()

    def _drain_stderr(self):
        size = 0
        for line in iter(self.proc.stderr.readline, b""):
            self._stderr.append(line)
            size += len(line)
            while size > STDERR_TAIL_BYTES and len(self._stderr) > 1:
                size -= len(self._stderr.popleft())

    def _closed(self, what):
        try:
            code = self.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            code = None
        self._stderr_thread.join(0.5)
        tail = b"".join(self._stderr).decode("utf-8", "replace").strip()
        status = "is still running" if code is None else f"exited with code {code}"
        return server.TransportClosedError(
            f"{what}: the device process {status}" + (f"; its stderr ends with:\n{tail}" if tail else "")
        )

    def _wait(self, fd, event, deadline):
        with selectors.DefaultSelector() as sel:
            sel.register(fd, event)
            return bool(sel.select(max(0.0, deadline - time.monotonic())))

    def read(self, n, timeout_sec):
        deadline = time.monotonic() + (DEFAULT_READ_TIMEOUT_SEC if timeout_sec is None else timeout_sec)
        while True:
            try:
                data = os.read(self._out, n)
            except BlockingIOError:
                data = None
            if data == b"":
                raise self._closed("the device closed its output")
            if data:
                return data
            if not self._wait(self._out, selectors.EVENT_READ, deadline):
                raise server.IoTimeoutError(f"no bytes from the device within {timeout_sec} s")

    def write(self, data, timeout_sec):
        view = memoryview(data)
        deadline = time.monotonic() + (DEFAULT_READ_TIMEOUT_SEC if timeout_sec is None else timeout_sec)
        while view:
            try:
                view = view[os.write(self._in, view) :]
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                raise self._closed("cannot write to the device") from None
            if view and not self._wait(self._in, selectors.EVENT_WRITE, deadline):
                raise server.IoTimeoutError(
                    f"the device did not take {len(view)} bytes within {timeout_sec} s"
                )

    def close(self):
        for stream in (self.proc.stdin, self.proc.stdout):
            stream.close()
        try:
            self.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr_thread.join(1.0)
        self.proc.stderr.close()


class HostHandler(server.ProjectAPIHandler):
    def __init__(self):
        self._device = None

    def _saved_options(self):
        project = server.load_project_file(HERE) or {}
        return dict(project.get("options") or {})

    def _program(self, options):
        project_type = options.get("project_type") or self._saved_options().get("project_type", "host_driven")
        return project_type, HERE / PROGRAMS[project_type]

    def _driven_program(self, options):
        if not server.is_generated_project(HERE):
            raise ProjectStateError("the template has no device; generate a project first")
        project_type, program = self._program(options)
        if project_type != "host_driven":
            raise ProjectStateError(
                f"this is an {project_type} project: it has no transport; run "
                f"{PROGRAMS[project_type]} IN.npy ... -o OUTDIR instead"
            )
        if not program.is_file():
            raise ProjectStateError(f"{PROGRAMS[project_type]} does not exist; build the project first")
        return program

    def server_info_query(self, tvm_version):
        return server.template_server_info(HERE, PLATFORM_NAME, PROJECT_OPTIONS)

    def generate_project(self, model_library_format_path, standalone_crt_dir, project_dir, options):
        _generate(pathlib.Path(model_library_format_path), pathlib.Path(project_dir), options)

    def build(self, options):
        if not server.is_generated_project(HERE):
            raise BuildError("build runs in a generated project, not in the template")
        make = shutil.which("make")
        if make is None:
            raise BuildError("make not found on PATH; install it (Debian: apt-get install make)")
        if shutil.which(options["cc"]) is None:
            raise BuildError(f"C compiler {options['cc']!r} not found on PATH; set the cc option")
        command = [
            make,
            f"CC={options['cc']}",
            f"CFLAGS_EXTRA={options['cflags']}",
            f"V={int(options['verbose'])}",
        ]
        command += ["-j", str(min(os.cpu_count() or 1, 8))]
        _log(options, " ".join(shlex.quote(c) for c in command))
        # make's output goes to our stdout/stderr, which the client shows to the user.
        result = subprocess.run(command, cwd=HERE, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise BuildError(f"make exited with code {result.returncode}; the compiler's output is above")
        _, program = self._program(options)
        size = shutil.which("size")
        if size is not None:
            subprocess.run([size, str(program.relative_to(HERE))], cwd=HERE, stdin=subprocess.DEVNULL)
        print(f"host: built {program.relative_to(HERE)}", flush=True)

    def flash(self, options):
        _, program = self._program(options)
        if not program.is_file():
            raise ProjectStateError(f"{program.relative_to(HERE)} does not exist; build the project first")
        _log(options, "nothing to flash: the device is a host process, started when a transport opens")

    def open_transport(self, options):
        program = self._driven_program(options)
        self.close_transport()
        _log(options, f"starting {program.relative_to(HERE)}")
        self._device = DeviceProcess([str(program)], HERE)
        return server.TransportTimeouts(
            session_start_retry_timeout_sec=2.0,
            session_start_timeout_sec=10.0,
            session_established_timeout_sec=60.0,
        )

    def close_transport(self):
        if self._device is not None:
            device, self._device = self._device, None
            device.close()

    def _open_device(self):
        if self._device is None:
            raise server.TransportClosedError("the transport is not open; call open_transport first")
        return self._device

    def read_transport(self, n, timeout_sec):
        return self._open_device().read(n, timeout_sec)

    def write_transport(self, data, timeout_sec):
        self._open_device().write(data, timeout_sec)

    def utvm_open_direct_transport(self, options):
        """Extension: how a utvm client starts the device itself (its pipes carry the bytes)."""
        merged = self._saved_options()
        merged.update(options or {})
        program = self._driven_program(merged)
        return {"kind": "subprocess", "argv": [str(program)], "cwd": str(HERE)}


if __name__ == "__main__":
    server.main(HostHandler())
