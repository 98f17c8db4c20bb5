"""The Jetson template without SSH or TVM's runtime on the board: the board records, a host_driven
project cross-compiled for aarch64 and run under qemu-aarch64 on a small model (checked against the
TFLite interpreter), and the errors a user meets: a GPU where there is none, a tvm_runtime project
from an archive without TVM's library, a physical board without its address. Also the SSH command
line and how ssh's failures are told, on canned output (unit tests of the code around ssh)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import require_tool
from host_driven_helpers import run_cli
from model_builders import make_small_tflite
from tflite_reference import tflite_reference
from utvm.boards import all_boards
from utvm.model_library import load
from utvm.templates import template_path

pytestmark = pytest.mark.timeout(600)

# The template's helpers, imported as its server imports them: beside it, on the floor as templates
# see it (`project_api`, whose error classes are not utvm.project_api's objects).
sys.path.insert(0, str(template_path("jetson")))
from utvm_jetson import elf_check, ssh  # noqa: E402
from utvm_jetson.toolchain import cpu_flags  # noqa: E402

from project_api.errors import BuildError, UserError  # noqa: E402

JETSONS = ("jetson_nano", "jetson_xavier_nx", "jetson_orin_nano")


def cli(*args, ok: bool = True) -> subprocess.CompletedProcess:
    result = run_cli(*args)
    if ok:
        assert result.returncode == 0, f"utvm {' '.join(map(str, args))}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    pytest.importorskip("tflite", reason="the tflite package builds the small model")
    return make_small_tflite(tmp_path_factory.mktemp("jetson-model") / "small_int8.tflite", quantized=True)


@pytest.fixture(scope="module")
def cross_tools():
    for tool in ("aarch64-linux-gnu-gcc", "aarch64-linux-gnu-readelf", "make", "qemu-aarch64"):
        require_tool(tool)


# ---- the board records -------------------------------------------------------------------------


def test_utvm_boards_lists_the_jetsons_with_their_facts():
    table = cli("boards", "--template", "jetson").stdout
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:] if line.strip()}
    assert set(rows) >= {*JETSONS, "qemu_aarch64"}
    # CPU, RAM and storage as NVIDIA's module data sheets give them (storage only where it is on board).
    assert rows["jetson_nano"][1:4] == ["cortex-a57", "4", "GiB"]
    assert rows["jetson_xavier_nx"][1:6] == ["carmel", "8", "GiB", "16", "GiB"]
    assert rows["jetson_orin_nano"][1:4] == ["cortex-a78ae", "8", "GiB"]
    assert "qemu-aarch64 -cpu cortex-a57" in table
    records = {r["name"]: r for r in json.loads(cli("boards", "--template", "jetson", "--json").stdout)}
    assert {n: records[n]["gpu"]["arch"] for n in JETSONS} == {
        "jetson_nano": "sm_53", "jetson_xavier_nx": "sm_72", "jetson_orin_nano": "sm_87"}


def test_every_jetson_target_and_tag_is_one_tvm_knows():
    import tvm

    tags = tvm.target.list_tags()
    for board in all_boards("jetson"):
        cpu = tvm.target.Target(dict(board.target))
        assert cpu.kind.name == "llvm" and str(cpu.attrs["mcpu"]) == board.cpu
        if board.gpu:
            tag = board.gpu["tvm_tag"]
            assert tag in tags, f"{board.name}: TVM 0.27 has no target tag {tag}"
            gpu = tvm.target.Target(tag, host=dict(board.target))
            assert str(gpu.attrs["arch"]) == board.gpu["arch"]
            assert str(gpu.host.attrs["mcpu"]) == board.cpu  # the record's CPU, not the tag's


def test_gcc_takes_every_jetson_cpu_flags(tmp_path, cross_tools):
    source = tmp_path / "f.c"
    source.write_text("float f(float x) { return x * 3.0f; }\n")
    for board in all_boards("jetson"):
        flags = cpu_flags(board.to_dict())
        result = subprocess.run(["aarch64-linux-gnu-gcc", *flags, "-c", str(source), "-o",
                                 str(tmp_path / "f.o")], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{board.name} {flags}: {result.stderr}"


# ---- host_driven on the emulated board ---------------------------------------------------------


def test_a_host_driven_project_runs_under_qemu_aarch64(small_model, cross_tools, tmp_path):
    project = tmp_path / "p"
    cli("create-project", "jetson", small_model, project, "-o", "board=qemu_aarch64")
    archive = load(project / "model.tar")
    assert archive.metadata["target"] == {"kind": "c", "mcpu": "cortex-a57"}
    assert "CPU_FLAGS = -mcpu=cortex-a57" in (project / "Makefile").read_text()
    built = cli("build", project)
    assert "jetson: built build/model_device for qemu_aarch64 (-mcpu=cortex-a57, static)" in built.stderr
    program = project / "build" / "model_device"
    elf_check.require_aarch64(program, executable=True)
    headers = subprocess.run(["aarch64-linux-gnu-readelf", "-l", str(program)], capture_output=True,
                             text=True)
    assert headers.returncode == 0 and "INTERP" not in headers.stdout  # static: no dynamic loader needed
    assert "nothing to copy" in cli("flash", project).stderr
    x = np.random.default_rng(3).integers(-128, 128, archive.inputs[0]["shape"], dtype=np.int8)
    np.save(tmp_path / "x.npy", x)
    ran = cli("run", project, "--input", f"0={tmp_path / 'x.npy'}", "--output", tmp_path / "out.npz",
              "--validate")
    assert "note: qemu_aarch64 runs under qemu-aarch64: timings follow the host's clock" in ran.stdout
    assert "validation: PASS" in ran.stdout
    [want] = tflite_reference(small_model, [x])
    with np.load(tmp_path / "out.npz") as out:
        [got] = [out[name] for name in out.files]
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_the_direct_transport_is_a_pipe_with_the_fast_path(small_model, cross_tools, tmp_path):
    from utvm.host_driven import Session

    project = tmp_path / "p"
    cli("create-project", "jetson", small_model, project, "-o", "board=qemu_aarch64")
    cli("build", project)
    with Session.from_project(project) as session:
        assert session.transport.pipe_fds() is not None
        if session.protocol.fast_path is None:
            pytest.skip("the framing accelerator did not load (no C compiler?): no pipe call to use")
        assert session.protocol.fast_path == "pipe call"
        assert session.info.board == "qemu_aarch64"


# ---- errors a user meets -----------------------------------------------------------------------


def test_cuda_needs_a_gpu_board_and_tvm_runtime(small_model, tmp_path):
    result = cli("create-project", "jetson", small_model, tmp_path / "a", "-o", "board=qemu_aarch64",
                 "-o", "project_type=tvm_runtime", "-o", "device=cuda", ok=False)
    assert result.returncode != 0
    assert "board qemu_aarch64 has no GPU that TVM can target (device=cuda)" in result.stderr
    result = cli("create-project", "jetson", small_model, tmp_path / "b", "-o", "board=jetson_orin_nano",
                 "-o", "device=cuda", ok=False)
    assert "device=cuda is for tvm_runtime projects" in result.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_tvm_runtime_project_needs_tvm_s_library_in_the_archive(small_model, tmp_path):
    archive = tmp_path / "m.tar"
    cli("compile", small_model, "-o", archive)
    result = cli("create-project", "jetson", archive, tmp_path / "p", "-o", "board=qemu_aarch64",
                 "-o", "project_type=tvm_runtime", ok=False)
    assert result.returncode != 0
    assert "carries no TVM runtime library (runtime_library/model.so)" in result.stderr
    assert "give `utvm create-project` the model file itself" in result.stderr


def test_a_physical_board_is_reached_over_ssh(small_model, cross_tools, tmp_path):
    project = tmp_path / "p"
    cli("create-project", "jetson", small_model, project, "-o", "board=jetson_orin_nano")
    assert "-mcpu=cortex-a78ae" in (project / "Makefile").read_text()
    cli("build", project)
    result = cli("flash", project, ok=False)
    assert result.returncode != 0
    assert "jetson_orin_nano is reached over SSH: give its address with -o ssh_host=..." in result.stderr


def test_the_xavier_nx_is_built_with_its_march():
    [xavier] = [b for b in all_boards("jetson") if b.name == "jetson_xavier_nx"]
    assert cpu_flags(xavier.to_dict()) == ["-march=armv8.2-a+fp16"]  # GCC has no -mcpu=carmel


def test_elf_check_refuses_a_program_for_another_machine(tmp_path):
    with pytest.raises(BuildError, match="not a 64-bit AArch64 ELF file"):
        elf_check.require_aarch64(sys.executable, executable=True)
    (tmp_path / "x").write_text("#!/bin/sh\n")
    with pytest.raises(BuildError, match="not an ELF file"):
        elf_check.require_aarch64(tmp_path / "x", executable=True)


# ---- ssh's command line and its errors (unit tests: canned ssh output) -------------------------


def test_ssh_never_prompts_and_notices_a_dead_connection():
    target = ssh.SshTarget.from_options({"ssh_host": "jetson.local", "ssh_port": 2200, "ssh_user": "nvidia",
                                         "ssh_key": "/k", "ssh_options": "-F cfg", "connect_timeout": 7})
    argv = target.argv("echo hi", forward="1:127.0.0.1:2")
    text = " ".join(argv)
    for option in ("-T", "-p 2200", "BatchMode=yes", "ConnectTimeout=7", "ServerAliveInterval=5",
                   "ServerAliveCountMax=3", "-i /k", "IdentitiesOnly=yes", "-l nvidia",
                   "ExitOnForwardFailure=yes", "-L 1:127.0.0.1:2", "-F cfg"):
        assert option in text, option
    assert argv[-3:] == ["jetson.local", "--", "echo hi"]
    assert ssh.SshTarget.from_options({"ssh_host": ""}) is None


@pytest.mark.parametrize("stderr, says, hint", [
    ("ssh: connect to host 10.0.0.9 port 22: Connection refused", "the connection was refused", "ssh_port"),
    ("ssh: Could not resolve hostname nowhere: Name or service not known", "is unknown", "ssh_host"),
    ("ssh: connect to host 10.0.0.9 port 22: Connection timed out", "did not answer", "powered"),
    ("root@10.0.0.9: Permission denied (publickey).", "refused the login (key /k)", "authorized_keys"),
    ("Host key verification failed.", "host key of 10.0.0.9 is not known", "ssh-keyscan"),
    ("Connection to 10.0.0.9 closed by remote host.", "dropped", "still running"),
])
def test_ssh_failures_are_named(stderr, says, hint):
    target = ssh.SshTarget(host="10.0.0.9", key="/k")
    err = ssh.ssh_error(target, "flash", ssh.SSH_FAILED, stderr + "\n")
    assert isinstance(err, UserError)
    assert says in err.message and hint in err.hint
    assert stderr in err.details
