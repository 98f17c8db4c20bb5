"""Jetson / aarch64 Linux template: the model on an NVIDIA Jetson, or on its emulated stand-in.

Boards come from utvm's board database (platform "jetson"): jetson_nano, jetson_xavier_nx and
jetson_orin_nano are reached over SSH (the system OpenSSH client); qemu_aarch64 runs the same
aarch64 Linux programs under ``qemu-aarch64`` on this machine, or on an SSH host with
``remote_prefix`` naming the emulator there.

Project types (option ``project_type``):
- ``host_driven`` (default): the model's C kernels and utvm's device runtime, cross-compiled with
  ``aarch64-linux-gnu-gcc`` for the board's CPU into one static program that speaks the host-driven
  protocol on its stdin and stdout. ``flash`` copies it to the board over SSH; ``open_transport``
  (or the ``utvm_open_direct_transport`` extension, so bytes skip JSON-RPC) starts it there over
  ``ssh -T`` or under qemu-aarch64 here. Same protocol, ``utvm run`` and Session as the host template.
- ``tvm_runtime`` (the Arachne path): TVM's own runtime and Relax VM run the model on the board,
  driven over TVM RPC. The shared library is compiled by the client (``utvm create-project``, with
  TVM and the aarch64 cross compiler), since a template stands on the standard library alone: the
  archive carries it (``runtime_library/``), ``build`` takes it out and checks it, and the
  ``utvm_open_tvm_rpc`` extension starts TVM's RPC server on the board (``board/utvm_rpc_server.py``,
  under qemu-aarch64 or over SSH) or names one that runs already (``rpc_host``, or a ``tracker`` key).

Generating needs only Python's standard library; building a host_driven project needs make and
aarch64-linux-gnu-gcc. Timings of the emulated board follow the host's clock: they are not
real-board timings.
"""

import pathlib
import shlex
import shutil
import sys

HERE = pathlib.Path(__file__).resolve().parent
# The floor: a generated project carries its copy beside this file; the template uses utvm's.
sys.path.insert(0, str(HERE if (HERE / "project_api").is_dir() else HERE.parents[1]))
sys.path.insert(0, str(HERE))  # utvm_jetson, beside this file in the template and in projects

from utvm_jetson import elf_check, rpc_board, ssh  # noqa: E402
from utvm_jetson.toolchain import DEFAULT_CC, cpu_flags  # noqa: E402

from project_api import board_records, template_support  # noqa: E402
from project_api.child_process import PipeChild  # noqa: E402
from project_api.device_relay import DeviceProcessRelay  # noqa: E402
from project_api.errors import BuildError, ProjectStateError, UserError  # noqa: E402
from project_api.mlf import read_model_archive  # noqa: E402
from project_api.options import ProjectOption  # noqa: E402
from project_api.record import read_record  # noqa: E402
from project_api.runtime_library import LIBRARY_MEMBER, read_library_info  # noqa: E402
from project_api.server import GeneratedProject, ProjectAPIHandler, TransportTimeouts, main  # noqa: E402

PLATFORM_NAME = "jetson"
ARCHIVE = "model.tar"
PROJECT_TYPES = ("host_driven", "tvm_runtime")
DEVICES = ("cpu", "cuda")
PROGRAM = "build/model_device"
LIBRARY = "build/model.so"
BOARD_SCRIPT = "board/" + rpc_board.SERVER_SCRIPT
RUNTIME_DIR = HERE.parent / "runtime"
# Debian's aarch64 C library (gcc-aarch64-linux-gnu's libc6-arm64-cross): what a dynamically linked
# program needs under qemu-aarch64. A static program (the default) needs none.
DEFAULT_QEMU_ROOT = "/usr/aarch64-linux-gnu"
# The fit check's allowance on a Linux board: the runtime's buffers, the stack and the C library.
RUNTIME_RAM_BYTES = 8 << 20
EMULATOR_NOTE = "qemu-aarch64 timings follow the host's clock; they are not real-board timings"
SSH_OPTIONS = ["build", "flash", "open_transport"]
# The board-side check for TVM's CUDA compiler (device=cuda), sent over SSH at build.
CUDA_CHECK = "board/utvm_cuda_check.py"


def _options_schema():
    record = read_record(HERE)
    # A project offers its own board only; the template offers the database's Jetson boards.
    choices = [record.board_name] if record else board_records.board_names(PLATFORM_NAME)
    opt = ProjectOption
    transport = ["build", "open_transport", "utvm_open_tvm_rpc"]
    return [
        opt("board", type="str", choices=choices, required=["generate_project"],
            help="board from utvm's database (`utvm boards --template jetson`)"),
        opt("project_type", type="str", choices=list(PROJECT_TYPES), default="host_driven",
            optional=["generate_project"],
            help="host_driven: utvm's C runtime serves the host over SSH or qemu-aarch64's stdin/stdout; "
                 "tvm_runtime: TVM's runtime and Relax VM on the board, over TVM RPC"),
        opt("device", type="str", choices=list(DEVICES), default="cpu", optional=["generate_project"],
            help="tvm_runtime: run on the CPU, or on the GPU (cuda: compiled with the board's TVM target "
                 "tag; the board compiles the CUDA kernels as it loads them, which build checks)"),
        opt("cc", type="str", default=DEFAULT_CC, optional=["generate_project", "build"],
            help="the aarch64 C compiler (host_driven builds; tvm_runtime links the library with it)"),
        opt("cflags", type="str", default="", optional=["build"],
            help="host_driven: extra compiler flags after the defaults (-O2 and the board's CPU flags)"),
        opt("static", type="bool", default=True, optional=["build"],
            help="host_driven: link a static program, which runs on any aarch64 Linux C library"),
        opt("ssh_host", type="str", default="", optional=SSH_OPTIONS,
            help="the board's address; empty: an emulated board runs here under qemu-aarch64"),
        opt("ssh_port", type="int", default=22, optional=SSH_OPTIONS, help="the board's SSH port"),
        opt("ssh_user", type="str", default="", optional=SSH_OPTIONS,
            help="the login on the board (default: ssh's, from your ssh config or user name)"),
        opt("ssh_key", type="str", default="", optional=SSH_OPTIONS,
            help="private key file to log in with (default: ssh's own keys and agent)"),
        opt("ssh_options", type="str", default="", optional=SSH_OPTIONS,
            help="more ssh arguments, e.g. \"-o UserKnownHostsFile=FILE\" or \"-F CONFIG\""),
        opt("connect_timeout", type="int", default=10, optional=SSH_OPTIONS,
            help="seconds an SSH connection may take before the board counts as unreachable"),
        opt("remote_dir", type="str", default="utvm", optional=SSH_OPTIONS,
            help="directory on the board for the program (relative: from the login directory)"),
        opt("remote_prefix", type="str", default="", optional=transport,
            help="a wrapper command on the board, e.g. \"qemu-aarch64 -L /usr/aarch64-linux-gnu\""),
        opt("remote_python", type="str", default="python3", optional=transport,
            help="tvm_runtime over SSH: the board's Python, with TVM installed"),
        opt("qemu_root", type="str", default=DEFAULT_QEMU_ROOT, optional=transport,
            help="emulated board: the aarch64 root qemu-aarch64 runs in (-L); for tvm_runtime an arm64 "
                 "root with Python and TVM (docs/jetson.md)"),
        opt("rpc_host", type="str", default="", optional=transport,
            help="tvm_runtime: the address of a TVM RPC server already running for the board"),
        opt("rpc_port", type="int", default=9091, optional=transport,
            help="tvm_runtime: that server's port, or the first port utvm's server tries on the board"),
        opt("tracker", type="str", default="", optional=transport,
            help="tvm_runtime: HOST:PORT of TVM's RPC tracker to reach the board through"),
        opt("rpc_key", type="str", default="", optional=transport,
            help="tvm_runtime: the board's key at the tracker (default: the board's name)"),
        opt("board_start_timeout", type="float", default=180.0, optional=transport,
            help="tvm_runtime: seconds TVM's RPC server may take to start on the board"),
        opt("verbose", type="bool", default=False,
            optional=["generate_project", "build", "flash", "open_transport"], help="print each step"),
    ]


def _log(options, text):
    template_support.log_step(options, PLATFORM_NAME, text)


# ---- generate_project --------------------------------------------------------------------------


def _gpu_tag(board):
    return (board.get("gpu") or {}).get("tvm_tag")


def _check_device(board, project_type, device):
    if device == "cpu":
        return
    if project_type != "tvm_runtime":
        raise UserError("device=cuda is for tvm_runtime projects: the host_driven program runs on the CPU",
                        hint="add -o project_type=tvm_runtime, or drop -o device=cuda")
    if not _gpu_tag(board):
        raise UserError(f"board {board['name']} has no GPU that TVM can target (device=cuda)",
                        hint="use a Jetson board (`utvm boards --template jetson`), or -o device=cpu")


def _usage(project_type):
    if project_type == "host_driven":
        return (f"\n`make` cross-compiles `{PROGRAM}`; `utvm flash .` copies it to the board over SSH (an\n"
                "emulated board without ssh_host runs it here under qemu-aarch64); `utvm run .` drives it.\n")
    return (f"\n`utvm build .` takes TVM's library out of `model.tar` into `{LIBRARY}`; `utvm flash .`\n"
            f"copies `{BOARD_SCRIPT}` (TVM's RPC server) to the board over SSH; `utvm run .` starts that\n"
            "server and runs the model in TVM's Relax VM on the board through TVM RPC.\n")


def _generate_host_driven(archive, board, project_dir):
    archive.extract(project_dir / "model")
    files = template_support.copy_runtime(RUNTIME_DIR, project_dir / "runtime", ports=["posix"])
    includes = [f"runtime/{rel}" for rel in files["copied_includes"]] + ["model/codegen/host/include"]
    # A pipe (or an SSH channel) is fast and RAM is plentiful: the runtime's fast-link configuration.
    defines = [f"-D{d}" for d in files["fast_link_defines"]] + [f'-DUTVM_BOARD_NAME=\\"{board["name"]}\\"']
    model_sources = sorted(str(p.relative_to(project_dir))
                           for p in (project_dir / "model").glob("codegen/host/src/*.c"))
    template_support.render_file(HERE / "Makefile.in", project_dir / "Makefile", {
        "model_name": archive.name, "board": board["name"], "program": PROGRAM,
        "cpu_flags": " ".join(cpu_flags(board)), "defines": " ".join(defines),
        "includes": " ".join(f"-I{d}" for d in includes),
        "runtime_sources": " ".join(f"runtime/{rel}" for rel in files["copied_sources"]),
        "model_sources": " ".join(model_sources)})


def _check_library(archive, board, device):
    """The archive's TVM runtime library, checked to suit the board and the device option."""
    info = read_library_info(archive)
    if info is None:
        raise UserError(f"{archive.path} carries no TVM runtime library ({LIBRARY_MEMBER}), which a "
                        "tvm_runtime project runs",
                        hint="give `utvm create-project` the model file itself (.tflite, .onnx...): it "
                             "compiles the library for the board on the way")
    if info.get("device") != device:
        raise UserError(f"the archive's library was compiled for device={info.get('device')}, not {device}",
                        hint=f"compile the model again for this project (-o device={device})")
    triple = (info.get("target") or {}).get("mtriple", "")
    if not str(triple).startswith("aarch64"):
        raise UserError(f"the archive's library was compiled for {triple or 'this machine'}, not aarch64",
                        hint="give `utvm create-project` the model file, so it is compiled for the board")
    return info


def _generate(mlf_path, project_dir, options):
    board = board_records.resolve_board(options["board"], PLATFORM_NAME)
    archive = read_model_archive(mlf_path)  # refuses a malformed archive before anything is written
    project_type, device = options["project_type"], options["device"]
    _check_device(board, project_type, device)
    board_records.check_fit(board, board_records.footprint_from_metadata(
        archive.metadata, runtime_ram=RUNTIME_RAM_BYTES, runtime_flash=0))
    if project_type == "tvm_runtime":
        _check_library(archive, board, device)
    project_dir.mkdir(parents=True)
    shutil.copy2(__file__, project_dir / "microtvm_api_server.py")
    shutil.copytree(HERE / "utvm_jetson", project_dir / "utvm_jetson",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(mlf_path, project_dir / ARCHIVE)
    if project_type == "host_driven":
        _generate_host_driven(archive, board, project_dir)
    else:
        (project_dir / "board").mkdir()
        for name in (BOARD_SCRIPT, CUDA_CHECK):
            shutil.copy2(HERE / name, project_dir / name)
    template_support.render_file(HERE / "README.md.in", project_dir / "README.md", {
        "model_name": archive.name, "board": board["name"], "project_type": project_type,
        "inputs": template_support.io_lines(archive.inputs),
        "outputs": template_support.io_lines(archive.outputs),
        "usage": _usage(project_type)}, multiline=("inputs", "outputs", "usage"))
    _log(options, f"generated {project_type} project for {archive.name} on {board['name']} in {project_dir}")
    return GeneratedProject(board=board, archive=ARCHIVE)


# ---- the generated project ---------------------------------------------------------------------


def _qemu():
    qemu = shutil.which("qemu-aarch64")
    if qemu is None:
        raise UserError("qemu-aarch64 not found on PATH; the emulated board runs under it",
                        hint="install it (Debian: apt-get install qemu-user)")
    return qemu


class JetsonHandler(DeviceProcessRelay, ProjectAPIHandler):
    def __init__(self):
        self._device = None  # the running device program (host_driven)
        self._board_server = None  # TVM's RPC server for the board (tvm_runtime), when started here

    def close_transport(self):
        server, self._board_server = self._board_server, None
        try:
            if server is not None:
                server.close()
        finally:
            DeviceProcessRelay.close_transport(self)

    # -- helpers --

    def _board(self):
        record = read_record(HERE)
        if record is None or not record.board:
            raise ProjectStateError("the template has no board; generate a project first")
        return record.board

    def _built(self, path):
        if not (HERE / path).is_file():
            raise ProjectStateError(f"{path} does not exist; build the project first (utvm build)")
        return HERE / path

    def _want(self, options, project_type):
        if options["project_type"] != project_type:
            if project_type == "host_driven":
                raise ProjectStateError("this is a tvm_runtime project: it is driven through TVM RPC; use "
                                        "`utvm run` or Session.from_project, which do that")
            raise ProjectStateError("this is a host_driven project: open a session on it (`utvm run`)")

    def _ssh_target(self, options, board):
        target = ssh.SshTarget.from_options(options)
        if target is None and board.get("kind") != "emulated":
            raise UserError(f"{board['name']} is reached over SSH: give its address with -o ssh_host=...",
                            hint="also -o ssh_user=... and -o ssh_key=... unless your ssh config has them")
        return target

    def _device_argv(self, options, board):
        """The command that runs the device program: ssh to the board, or qemu-aarch64 here."""
        target = self._ssh_target(options, board)
        if target is None:
            return [_qemu(), "-L", options["qemu_root"], "-cpu", board["emulator"]["cpu"],
                    str(self._built(PROGRAM))], "device process (qemu-aarch64)"
        name = pathlib.PurePosixPath(PROGRAM).name
        # A quick login first, so a wrong host, port or key is named before a session starts.
        ssh.check_files(target, options["remote_dir"], [name], f"opening the device on {target.where}")
        command = " ".join(filter(None, [f"cd {shlex.quote(options['remote_dir'])} && exec",
                                         options["remote_prefix"], f"./{name}"]))
        return target.argv(command), "ssh"

    # -- Project API --

    def server_info_query(self, tvm_version):
        return template_support.template_server_info(HERE, PLATFORM_NAME, _options_schema())

    def generate_project(self, model_library_format_path, standalone_crt_dir, project_dir, options):
        return _generate(pathlib.Path(model_library_format_path), pathlib.Path(project_dir), options)

    def build(self, options):
        board = self._board()
        if options["project_type"] == "tvm_runtime":
            return self._build_library(options)
        if shutil.which(options["cc"]) is None:
            raise BuildError(f"C compiler {options['cc']!r} not found on PATH; install it (Debian: apt-get "
                             "install gcc-aarch64-linux-gnu) or set the cc option")
        template_support.run_make(HERE, [f"CC={options['cc']}", f"CFLAGS_EXTRA={options['cflags']}",
                                         f"STATIC={int(options['static'])}", f"V={int(options['verbose'])}"],
                                  options, PLATFORM_NAME)
        program = self._built(PROGRAM)
        elf_check.require_aarch64(program, executable=True)
        print(f"{PLATFORM_NAME}: built {PROGRAM} for {board['name']} ({' '.join(cpu_flags(board))}"
              f"{', static' if options['static'] else ''}): {program.stat().st_size} bytes", flush=True)

    def _build_library(self, options):
        archive = read_model_archive(HERE / ARCHIVE)
        info = read_library_info(archive)
        library = HERE / LIBRARY
        library.parent.mkdir(parents=True, exist_ok=True)
        library.write_bytes(archive.read(LIBRARY_MEMBER))
        elf_check.require_aarch64(library, executable=False)
        print(f"{PLATFORM_NAME}: {LIBRARY}: TVM {info.get('tvm_version')} Relax VM library for "
              f"{info.get('target_str')}, {library.stat().st_size} bytes", flush=True)
        if info.get("device") == "cuda":
            self._check_cuda_compiler(options)

    def _check_cuda_compiler(self, options):
        """TVM 0.27 puts a library's CUDA kernels in it as CUDA C, compiled when the board loads it:
        with NVRTC (the cuda-bindings package; TVM's default) or with nvcc when the board's server
        runs with TVM_CUDA_COMPILE_MODE=nvcc. The board's Python must have the one TVM will use."""
        what = "device=cuda: TVM 0.27 compiles the model's CUDA kernels on the board as it loads the library"
        target = ssh.SshTarget.from_options(options)
        if target is None:
            print(f"{PLATFORM_NAME}: note: {what}; without ssh_host utvm cannot check that the board has a "
                  "CUDA compiler (NVRTC from cuda-bindings, or nvcc)", flush=True)
            return
        python = " ".join(filter(None, [options["remote_prefix"], shlex.quote(options["remote_python"])]))
        check = (HERE / CUDA_CHECK).read_text(encoding="utf-8")
        found = target.run(f"{python} -c {shlex.quote(check)}", f"looking for TVM's CUDA compiler on "
                           f"{target.where}", ok_codes=(0, ssh.MISSING_ON_BOARD))
        said = found.stdout.decode("utf-8", "replace").strip()
        if found.returncode == ssh.MISSING_ON_BOARD:
            raise BuildError(f"{what}, and {target.where} has no CUDA compiler for it: {said}. Run "
                             f"`{options['remote_python']} -m pip install cuda-bindings` on the board "
                             "(NVRTC, with JetPack's CUDA), or use -o device=cpu")
        print(f"{PLATFORM_NAME}: {target.where} can compile the CUDA kernels: {said}", flush=True)

    def flash(self, options):
        board = self._board()
        project_type = options["project_type"]
        files = [self._built(PROGRAM)] if project_type == "host_driven" else [HERE / BOARD_SCRIPT]
        if project_type == "tvm_runtime":
            self._built(LIBRARY)
            if not options["ssh_host"] and (options["rpc_host"] or options["tracker"]):
                _log(options, "nothing to copy: the model goes to the board through TVM RPC")
                return
        target = self._ssh_target(options, board)
        if target is None:
            _qemu()
            print(f"{PLATFORM_NAME}: {board['name']} runs here under qemu-aarch64; nothing to copy "
                  "(the program starts when a session opens)", flush=True)
            return
        what = f"copying {', '.join(f.name for f in files)} to {target.where}:{options['remote_dir']}"
        _log(options, what)
        ssh.install_files(target, options["remote_dir"], files, what)
        print(f"{PLATFORM_NAME}: copied {', '.join(f.name for f in files)} to "
              f"{target.where}:{options['remote_dir']}", flush=True)

    def open_transport(self, options):
        board = self._board()
        self._want(options, "host_driven")
        self.close_transport()
        argv, name = self._device_argv(options, board)
        _log(options, " ".join(shlex.quote(a) for a in argv))
        self._device = PipeChild(argv, cwd=str(HERE), name=name)
        return TransportTimeouts(session_start_retry_timeout_sec=2.0, session_start_timeout_sec=30.0,
                                 session_established_timeout_sec=60.0)

    # -- extensions --

    def utvm_open_direct_transport(self, options):
        """Extension: the command a utvm client starts itself (ssh, or qemu-aarch64); its pipes carry
        the bytes, so the session's pipe fast paths apply."""
        board = self._board()
        self._want(options, "host_driven")
        argv, name = self._device_argv(options, board)
        return {"kind": "subprocess", "argv": argv, "cwd": str(HERE), "name": name}

    def utvm_resolve_board(self, options):
        """Extension: the record of the board option, as generate_project will resolve it."""
        record = read_record(HERE)
        if record is not None and record.board:
            return record.board
        return board_records.resolve_board(options["board"], PLATFORM_NAME)

    def utvm_model_targets(self, options):
        """Extension: what the client compiles a model file into for this project. ``mlf_target``:
        the C target of the archive's kernels (the board's CPU); ``runtime_library``: for
        tvm_runtime, TVM's shared library to build too ({target, gpu_tag, device, cc}), else null."""
        board = self.utvm_resolve_board(options)
        _check_device(board, options["project_type"], options["device"])
        library = None
        if options["project_type"] == "tvm_runtime":
            library = {"target": board["target"], "device": options["device"], "cc": options["cc"],
                       "gpu_tag": _gpu_tag(board) if options["device"] == "cuda" else None}
        return {"mlf_target": {"kind": "c", "mcpu": board["cpu"]}, "runtime_library": library}

    def utvm_open_tvm_rpc(self, options):
        """Extension (tvm_runtime): where the client reaches TVM's RPC server for the board. Starts
        it when it can (under qemu-aarch64 for the emulated board, over SSH with ssh_host; stopped by
        close_transport); else names the one given (rpc_host, or the tracker and key). Returns
        {kind: "tvm_rpc", host, port, tracker, key, device, library, board, emulated}."""
        board = self._board()
        self._want(options, "tvm_runtime")
        library = self._built(LIBRARY)
        self.close_transport()
        key = options["rpc_key"] or board["name"]
        tracker = options["tracker"].strip()
        reply = {"kind": "tvm_rpc", "host": None, "port": None, "tracker": tracker or None,
                 "key": key if tracker else "", "device": options["device"], "library": str(library),
                 "board": board["name"], "emulated": board.get("kind") == "emulated"}
        timeout = float(options["board_start_timeout"])
        port, cuda = int(options["rpc_port"]), options["device"] == "cuda"
        target = ssh.SshTarget.from_options(options)
        if options["rpc_host"]:
            return dict(reply, host=options["rpc_host"], port=port)
        if target is not None:
            ssh.check_files(target, options["remote_dir"], [rpc_board.SERVER_SCRIPT],
                            f"starting TVM's RPC server on {target.where}")
            args = rpc_board.server_arguments(port, port + rpc_board.PORT_RANGE, tracker, key,
                                              address=target.host, cuda=cuda)
            server = rpc_board.start_over_ssh(target, options["remote_dir"], options["remote_prefix"],
                                              options["remote_python"], args, timeout)
        elif board.get("kind") == "emulated":
            print(f"{PLATFORM_NAME}: starting TVM's RPC server under qemu-aarch64 (importing TVM there "
                  "takes about 20 s); " + EMULATOR_NOTE, flush=True)
            args = rpc_board.server_arguments(port, port + rpc_board.PORT_RANGE, tracker, key, cuda=cuda)
            server = rpc_board.start_emulated(_qemu(), pathlib.Path(options["qemu_root"]),
                                              board["emulator"]["cpu"], HERE / BOARD_SCRIPT, args,
                                              HERE / "build" / "board-tmp", timeout)
        elif tracker:
            return reply  # the board's own server is registered at the tracker
        else:
            raise UserError(f"{board['name']}: utvm needs a way to reach TVM's RPC server on the board",
                            hint="give -o ssh_host=... (utvm starts the server over SSH), -o rpc_host=... "
                                 "(a server that runs already) or -o tracker=HOST:PORT")
        self._board_server = server
        return dict(reply, host=server.host, port=server.port)


if __name__ == "__main__":
    main(JetsonHandler())
