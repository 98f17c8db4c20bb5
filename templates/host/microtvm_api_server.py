"""POSIX host template: the model runs as a native process on this machine.

Three kinds of project (option ``project_type``):
- ``host_driven`` (default): the device runtime serving the host-driven protocol over the
  program's stdin/stdout. ``open_transport`` starts the program and relays its bytes; the
  ``utvm_open_direct_transport`` extension instead tells a utvm client to start it itself, so
  bytes need not cross JSON-RPC.
- ``aot_standalone``: a program that reads each input from an ``.npy`` file, runs the model once
  and writes each output to an ``.npy`` file (``build/model_standalone IN.npy ... -o OUTDIR``);
  the ``utvm_run_standalone`` extension runs it on given inputs.
- ``mlperftiny``: the device under test of the MLPerf Tiny runner (``-o mlperf_model=kws01``...),
  speaking the runner's text protocol on stdin/stdout over the same runtime and AOT entry point.
  The ``utvm_open_pty`` extension starts it behind a pseudo-terminal, whose path the runner
  opens as a serial port (``utvm pty``); ``open_transport`` relays its bytes too.

``generate_project`` writes a self-contained project: this server and the floor it stands on
(``project_api/``), the runtime sources, the model sources and a copy of the MLF, and a plain
Makefile. Everything here, generation included, needs only Python's standard library; building
and running need make and a C compiler. ``build`` runs make, ``flash`` has nothing to do.
"""

import pathlib
import shutil
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
# The floor: a generated project carries its copy beside this file; the template uses utvm's.
sys.path.insert(0, str(HERE if (HERE / "project_api").is_dir() else HERE.parents[1]))

from project_api import board_records, mlperftiny, npy, template_support  # noqa: E402
from project_api.child_process import PipeChild  # noqa: E402
from project_api.device_relay import DeviceProcessRelay  # noqa: E402
from project_api.errors import BuildError, ProjectStateError, UserError  # noqa: E402
from project_api.mlf import read_model_archive  # noqa: E402
from project_api.options import ProjectOption  # noqa: E402
from project_api.pty_bridge import bridge_status  # noqa: E402
from project_api.record import read_record  # noqa: E402
from project_api.server import GeneratedProject, ProjectAPIHandler, TransportTimeouts, main  # noqa: E402

PLATFORM_NAME = "host"
ARCHIVE = "model.tar"
PROGRAMS = {"host_driven": "build/model_device", "aot_standalone": "build/model_standalone",
            "mlperftiny": "build/model_mlperftiny"}
# Why a project of one type refuses a step meant for others.
WRONG_TYPE = {
    "host_driven": "this is a host_driven project: open a session instead (`utvm run`)",
    "aot_standalone": "this is an aot_standalone project: it has no transport; run "
                      f"{PROGRAMS['aot_standalone']} IN.npy ... -o OUTDIR (or `utvm run`) instead",
    "mlperftiny": "this is an mlperftiny project: the MLPerf Tiny runner drives it; put it on a "
                  "pseudo-terminal with `utvm pty`",
}
RUNTIME_DIR = HERE.parent / "runtime"

PROJECT_OPTIONS = [
    ProjectOption(
        "project_type",
        type="str",
        choices=sorted(PROGRAMS),
        default="host_driven",
        optional=["generate_project"],
        help="host_driven: the device runtime driven over stdin/stdout; "
        "aot_standalone: a program that runs the model on .npy files, no host needed; "
        + mlperftiny.TYPE_HELP,
    ),
    mlperftiny.model_option(),
    ProjectOption("cc", type="str", default="cc", optional=["build"],
                  help="C compiler that build runs (cc, gcc, clang...)"),
    ProjectOption("cflags", type="str", default="", optional=["build"],
                  help="extra compiler flags, after the defaults (-O3 -g), so e.g. -O2 overrides -O3"),
    ProjectOption("verbose", type="bool", default=False,
                  optional=["generate_project", "build", "flash",
                            "open_transport"], help="print each command"),
]


def _log(options, text):
    template_support.log_step(options, PLATFORM_NAME, text)


def _usage(project_type, program):
    if project_type == "mlperftiny":
        return (f"`{program}` is the MLPerf Tiny runner's device under test, on its stdin/stdout.\n"
                "`utvm pty .` puts it behind a pseudo-terminal and prints the path to give the runner\n"
                "(see utvm's docs/mlperftiny.md).\n")
    if project_type == "host_driven":
        return (f"`{program}` is the device: it speaks utvm's host-driven protocol on its stdin/stdout.\n"
                "Drive it with `utvm run . [--input NAME=x.npy] [--output out.npz] [--benchmark]\n"
                "[--profile] [--validate]`, or from Python\n"
                "with `utvm.host_driven.Session.from_project(...)`.\n")
    return ("Run the model on `.npy` inputs, in the order listed above, and get one `.npy` per output:\n\n"
            f"    make\n    ./{program} input0.npy -o outputs/    # writes outputs/output_0.npy, ...\n\n"
            "`--repeat N` runs the model N times and prints the mean time per run.\n")


def _generate(mlf_path, project_dir, options):
    archive = read_model_archive(mlf_path)  # refuses a malformed archive before anything is written
    board = board_records.resolve_board("host", PLATFORM_NAME)
    project_type = options["project_type"]
    mlperf = None
    if project_type == mlperftiny.PROJECT_TYPE:
        mlperf = mlperftiny.board_config(archive.metadata, options, board)
    project_dir.mkdir(parents=True)
    shutil.copy2(__file__, project_dir / "microtvm_api_server.py")
    shutil.copy2(mlf_path, project_dir / ARCHIVE)
    archive.extract(project_dir / "model")

    files = template_support.copy_runtime(RUNTIME_DIR, project_dir / "runtime",
                                          ports=["posix", mlperftiny.RUNTIME_PART])
    (project_dir / "src").mkdir()
    for name in ("npy.c", "npy.h", "standalone_main.c", "mlperftiny_main.c"):
        shutil.copy2(HERE / "src" / name, project_dir / "src" / name)

    # A pipe is fast and RAM is plentiful: the runtime's fast-link configuration.
    defines = [f"-D{d}" for d in files["fast_link_defines"]] + ['-DUTVM_BOARD_NAME=\\"host\\"']
    if project_type == "host_driven":
        strict = [f"runtime/{rel}" for rel in files["copied_sources"]
                  if rel not in files[f"{mlperftiny.RUNTIME_PART}_sources"]]
    elif mlperf is not None:
        header = mlperftiny.config_header(mlperf, archive.name)
        (project_dir / "src" / mlperftiny.CONFIG_HEADER).write_text(header)
        strict = [*(f"runtime/{rel}" for rel in mlperftiny.runtime_sources(files)),
                  "runtime/ports/posix/port_posix.c", "src/mlperftiny_main.c"]
        # Every line leaves as it is written: the runner waits at most 30 s for each.
        defines.append("-DUTVM_POSIX_OUT_BUFFER=1")
    else:
        # No session: the generated plan only needs the backend's workspace and error symbols.
        strict = ["runtime/src/backend.c", "src/npy.c", "src/standalone_main.c"]
    generated = sorted(str(p.relative_to(project_dir))
                       for p in (project_dir / "model").glob("codegen/host/src/*.c"))
    includes = [f"runtime/{rel}" for rel in files["copied_includes"]] + ["model/codegen/host/include", "src"]
    program = PROGRAMS[project_type]
    common = {"model_name": archive.name, "project_type": project_type, "program": program}
    template_support.render_file(HERE / "Makefile.in", project_dir / "Makefile", dict(
        common, defines=" ".join(defines), includes=" ".join(f"-I{d}" for d in includes),
        strict_sources=" ".join(strict), generated_sources=" ".join(generated)))
    template_support.render_file(HERE / "README.md.in", project_dir / "README.md", dict(
        common, inputs=template_support.io_lines(archive.inputs),
        outputs=template_support.io_lines(archive.outputs),
        usage=_usage(project_type, program)), multiline=("inputs", "outputs", "usage"))
    _log(options, f"generated {project_type} project for {archive.name} in {project_dir}")
    return GeneratedProject(board=board, archive=ARCHIVE)


class HostHandler(DeviceProcessRelay, ProjectAPIHandler):
    def __init__(self):
        self._device = None
        self._bridge = None

    def _program(self, options, want=None):
        """The built program of this project, checked to exist (and to be of type want)."""
        if read_record(HERE) is None:
            raise ProjectStateError("the template has no device; generate a project first")
        project_type = options["project_type"]
        if want is not None and project_type not in want:
            raise ProjectStateError(WRONG_TYPE[project_type])
        program = HERE / PROGRAMS[project_type]
        if not program.is_file():
            raise ProjectStateError(f"{PROGRAMS[project_type]} does not exist; build the project first")
        return program

    def server_info_query(self, tvm_version):
        return template_support.template_server_info(HERE, PLATFORM_NAME, PROJECT_OPTIONS)

    def generate_project(self, model_library_format_path, standalone_crt_dir, project_dir, options):
        return _generate(pathlib.Path(model_library_format_path), pathlib.Path(project_dir), options)

    def build(self, options):
        if read_record(HERE) is None:
            raise BuildError("build runs in a generated project, not in the template")
        if shutil.which(options["cc"]) is None:
            raise BuildError(f"C compiler {options['cc']!r} not found on PATH; set the cc option")
        template_support.run_make(HERE, [f"CC={options['cc']}", f"CFLAGS_EXTRA={options['cflags']}",
                                         f"V={int(options['verbose'])}"], options, PLATFORM_NAME)
        program = self._program(options)
        size = shutil.which("size")
        if size is not None:
            subprocess.run([size, str(program.relative_to(HERE))], cwd=HERE, stdin=subprocess.DEVNULL)
        print(f"host: built {program.relative_to(HERE)}", flush=True)

    def flash(self, options):
        self._program(options)
        _log(options, "nothing to flash: the device is a host process, started when a transport opens")

    def open_transport(self, options):
        program = self._program(options, want=("host_driven", "mlperftiny"))
        self.close_transport()
        _log(options, f"starting {program.relative_to(HERE)}")
        self._device = PipeChild([str(program)], cwd=str(HERE), name="device process")
        return TransportTimeouts(session_start_retry_timeout_sec=2.0, session_start_timeout_sec=10.0,
                                 session_established_timeout_sec=60.0)

    def close_transport(self):
        bridge, self._bridge = self._bridge, None
        if bridge is not None:  # first: its threads read and write the device
            bridge.close()
        super().close_transport()

    def utvm_open_direct_transport(self, options):
        """Extension: how a utvm client starts the device itself (its pipes carry the bytes)."""
        program = self._program(options, want=("host_driven",))
        return {"kind": "subprocess", "argv": [str(program)], "cwd": str(HERE)}

    def utvm_open_pty(self, options):
        """Extension (mlperftiny): start the device behind a new pseudo-terminal, for a tool that
        opens a serial port by path (the MLPerf Tiny runner). Returns {path, bridged, note}; the
        device runs until close_transport."""
        program = self._program(options, want=(mlperftiny.PROJECT_TYPE,))
        self.close_transport()
        _log(options, f"starting {program.relative_to(HERE)} behind a pseudo-terminal")
        self._device = PipeChild([str(program)], cwd=str(HERE), name="device process")
        try:
            self._bridge = mlperftiny.bridge_device(self.read_transport, self.write_transport,
                                                    "device process")
        except BaseException:
            self.close_transport()
            raise
        return {"path": self._bridge.path, "bridged": True, "note": ""}

    def utvm_pty_status(self):
        """Extension: whether the pseudo-terminal of utvm_open_pty still reaches the device:
        {path, open, error}."""
        return bridge_status(self._bridge)

    def utvm_resolve_board(self, options):
        """Extension: the board record (always this machine's), for the client to pick the target."""
        return board_records.resolve_board("host", PLATFORM_NAME)

    def utvm_standalone_inputs(self, options):
        """Extension: this template's standalone program takes its inputs at run time."""
        return {"baked": False, "inputs": None}

    def utvm_run_standalone(self, options, inputs=None, timeout_sec=600.0):
        """Extension: run the aot_standalone program once. inputs maps every input's name to its
        bytes in hex (the archive gives dtype and shape). Returns {outputs: [{index, name, hex}]}."""
        program = self._program(options, want=("aot_standalone",))
        archive = read_model_archive(HERE / ARCHIVE)
        given = dict(inputs or {})
        missing = [e["name"] for e in archive.inputs if e["name"] not in given]
        if missing:
            raise UserError(f"utvm_run_standalone: no value for input {missing[0]!r}",
                            hint="give every input of the model")
        with tempfile.TemporaryDirectory(prefix="utvm-standalone-") as tmp:
            argv = [str(program)]
            for index, entry in enumerate(archive.inputs):
                path = pathlib.Path(tmp) / f"input_{index}.npy"
                path.write_bytes(npy.npy_bytes(entry["dtype"], entry["shape"],
                                               bytes.fromhex(given[entry["name"]])))
                argv.append(str(path))
            argv += ["-o", str(pathlib.Path(tmp) / "out")]
            try:
                result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_sec,
                                        stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise BuildError(
                    f"{PROGRAMS['aot_standalone']} did not finish within {timeout_sec:g} s") from None
            if result.returncode != 0:
                raise ProjectStateError(f"{PROGRAMS['aot_standalone']} exited with code {result.returncode}: "
                                        f"{(result.stderr or result.stdout).strip()[-2000:]}")
            outputs = []
            for index, entry in enumerate(archive.outputs):
                _, _, data = npy.parse_npy((pathlib.Path(tmp) / "out" / f"output_{index}.npy").read_bytes())
                outputs.append({"index": index, "name": entry["name"], "hex": data.hex()})
        return {"outputs": outputs, "emulated": False, "note": ""}


if __name__ == "__main__":
    main(HostHandler())
