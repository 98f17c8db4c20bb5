"""The Zephyr template: generated applications checked with Zephyr's own tooling, since no Zephyr tree
can be had where these tests run (so nothing here runs `west build`, except the one test that says
it needs a Zephyr tree and skips without one).

For every Zephyr board in the database, a TVM-compiled model for the board's CPU becomes a project,
and:
- its devicetree overlay parses with Zephyr's devicetree library (dtlib) over the board's real
  labels (tests/zephyr_facts.py), and points utvm's UART at the board's console UART;
- every CONFIG_ symbol its prj.conf and board fragment set is a Zephyr 4.x symbol of the right type,
  checked with kconfiglib (the Kconfig library Zephyr's build uses) over the listed symbols;
- its west manifest passes west's own parser, and `west init -l` takes it;
- every C file that does not include Zephyr headers compiles with arm-none-eabi-gcc -Werror for
  the board's CPU and FPU.
The command line's `utvm build` without a Zephyr tree fails with one clear error and exit code 2;
the fit check counts Zephyr's own RAM and flash as a stated estimate. The transport to a QEMU board
runs for real with a stand-in image (the bare-metal build of the same archive for the same machine),
since the Zephyr image cannot be built here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require_tool
from model_builders import build_onnx_model, onnx_input_arrays
from test_baremetal_template import _fixture_metadata, _write_mlf
from utvm.boards import all_boards, get_board
from utvm.host_driven.executor import Session
from utvm.model_library import HostReference, compile_model, load
from utvm.project_api.errors import UserError
from utvm.project_api.project import GeneratedProject, TemplateProject
from utvm.project_api.record import read_record
from utvm.templates import template_path
from zephyr_facts import BOARD_LABELS, KCONFIG_SYMBOLS

dtlib = pytest.importorskip("devicetree.dtlib", reason="the devicetree package (Zephyr's dtlib) is missing")
kconfiglib = pytest.importorskip("kconfiglib", reason="kconfiglib is not installed")
west_manifest = pytest.importorskip("west.manifest", reason="west is not installed")

ZEPHYR_BOARDS = [b.name for b in all_boards("zephyr")]
ZEPHYR_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]zephyr/', re.M)


@pytest.fixture(scope="module")
def template():
    with TemplateProject.from_directory(template_path("zephyr"), echo=False) as t:
        yield t


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A small CNN compiled once per CPU target of the Zephyr boards: {target json: (onnx, archive)}."""
    root = tmp_path_factory.mktemp("zephyr-models")
    onnx = build_onnx_model("cnn", root / "cnn.onnx")
    cache = {}

    def archive_for(board: str):
        target = get_board(board).target
        key = json.dumps(target, sort_keys=True)
        if key not in cache:
            cache[key] = compile_model(onnx, root / f"cnn-{len(cache)}.tar", target=target)
        return onnx, cache[key]

    return archive_for


@pytest.fixture(scope="module")
def fixture_mlf_path(tmp_path_factory):
    """The runtime's hand-written fixture model as an MLF archive (no TVM needed)."""
    return _write_mlf(tmp_path_factory.mktemp("fixture") / "fixture.tar", _fixture_metadata())


@pytest.fixture(scope="module")
def projects(template, models, tmp_path_factory):
    """{board: project dir} of host_driven projects, generated once per board."""
    root = tmp_path_factory.mktemp("zephyr-projects")
    made = {}

    def project_for(board: str) -> Path:
        if board not in made:
            _, archive = models(board)
            options = {"board": board, "zephyr_base": "/nowhere"}
            with template.generate_project(archive, root / board, options):
                pass
            made[board] = root / board
        return made[board]

    return project_for


def test_the_template_offers_every_zephyr_board(template):
    info = template.info()
    assert info["platform_name"] == "zephyr" and info["is_template"]
    board = next(o for o in info["project_options"] if o["name"] == "board")
    assert board["choices"] == ZEPHYR_BOARDS
    assert {"nucleo_f746zg", "stm32f746g_disco", "nucleo_l4r5zi", "nrf5340dk", "mimxrt1050_evk",
            "qemu_cortex_m3", "mps2_an385"} <= set(ZEPHYR_BOARDS)
    names = {o["name"] for o in info["project_options"]}
    assert {"zephyr_base", "west_cmd", "toolchain", "serial_number", "project_type"} <= names


def test_board_records_name_zephyrs_hardware_model_v2_targets():
    targets = {b.name: b.zephyr_board for b in all_boards("zephyr")}
    assert targets["nrf5340dk"] == "nrf5340dk/nrf5340/cpuapp"
    assert targets["mps2_an385"] == "mps2/an385"
    assert targets["qemu_cortex_m3"] == "qemu_cortex_m3"
    assert set(targets) == set(BOARD_LABELS), "every Zephyr board needs its devicetree labels in zephyr_facts"


def _overlay_and_conf(project: Path, board: str):
    stem = get_board(board).zephyr_board.replace("/", "_")
    return project / "boards" / f"{stem}.overlay", project / "boards" / f"{stem}.conf"


@pytest.mark.parametrize("board", ZEPHYR_BOARDS)
def test_overlay_parses_with_zephyrs_dtlib_over_the_boards_labels(projects, board, tmp_path):
    project = projects(board)
    overlay, _ = _overlay_and_conf(project, board)
    facts = BOARD_LABELS[board]
    text = overlay.read_text()
    used = set(re.findall(r"&([A-Za-z_][A-Za-z0-9_]*)", text))
    assert used and used <= set(facts["labels"]), f"labels {used - set(facts['labels'])} are not {board}'s"
    # dtlib resolves each &label against the base tree, as Zephyr's build does with the board's DTS;
    # here the base holds one node per real label of the board.
    base = "/dts-v1/;\n/ {\n\tboard-labels {\n" + "".join(
        f"\t\t{label}: {label.replace('_', '-')} {{ }};\n" for label in facts["labels"]) + "\t};\n};\n"
    (tmp_path / "board.dts").write_text(base + text)
    tree = dtlib.DT(str(tmp_path / "board.dts"))
    uart = tree.get_node("/chosen").props["utvm,uart"].to_path()
    assert uart is tree.label2node[facts["console"]], "utvm's UART must be the board's console UART"
    assert uart.props["current-speed"].to_num() == get_board(board).baud
    assert uart.props["status"].to_string() == "okay"


def test_dtlib_refuses_a_label_the_board_does_not_have(projects, tmp_path):
    overlay, _ = _overlay_and_conf(projects("nucleo_f746zg"), "nucleo_f746zg")
    base = "/dts-v1/;\n/ { labels { usart3: usart3 { }; }; };\n"
    (tmp_path / "bad.dts").write_text(base + overlay.read_text().replace("usart3", "usart9"))
    with pytest.raises(dtlib.DTError, match="usart9"):
        dtlib.DT(str(tmp_path / "bad.dts"))


def _kconfig(tmp_path: Path):
    """A Kconfig tree declaring the listed Zephyr symbols, for kconfiglib to check a fragment against."""
    lines = ['mainmenu "Zephyr 4.x symbols (tests/zephyr_facts.py)"']
    for name, kind in sorted(KCONFIG_SYMBOLS.items()):
        lines += [f"config {name}", f'\t{kind} "{name}"']
    (tmp_path / "Kconfig").write_text("\n".join(lines) + "\n")
    kconf = kconfiglib.Kconfig(str(tmp_path / "Kconfig"), warn_to_stderr=False)
    kconf.warn_assign_undef = True  # as Zephyr's build has it: assigning an unknown symbol is an error
    return kconf


def _set_symbols(path: Path) -> dict:
    return dict(re.findall(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$", path.read_text(), re.M))


@pytest.mark.parametrize("board", ZEPHYR_BOARDS)
def test_kconfig_fragments_set_only_real_zephyr_symbols(projects, board, tmp_path):
    project = projects(board)
    _, conf = _overlay_and_conf(project, board)
    fragments = [project / "prj.conf"] + ([conf] if conf.exists() else [])
    assert conf.exists() == bool(get_board(board).fpu), "boards with an FPU get CONFIG_FPU=y in boards/"
    kconf = _kconfig(tmp_path)
    for fragment in fragments:
        kconf.load_config(str(fragment), replace=False)
    assert kconf.warnings == [], "\n".join(kconf.warnings)
    for fragment in fragments:
        for name, value in _set_symbols(fragment).items():
            assert kconf.syms[name].str_value == value, f"{fragment.name}: CONFIG_{name}={value} did not take"
    settings = _set_symbols(project / "prj.conf")
    assert settings["UART_INTERRUPT_DRIVEN"] == "y" and settings["RING_BUFFER"] == "y"
    assert settings["UART_CONSOLE"] == "n" and settings["PRINTK"] == "n", "nothing else may use the link"


def test_kconfiglib_reports_an_unknown_symbol_and_a_bad_value(tmp_path):
    kconf = _kconfig(tmp_path)
    (tmp_path / "bad.conf").write_text("CONFIG_UART_INTERUPT_DRIVEN=y\nCONFIG_MAIN_STACK_SIZE=y\n")
    kconf.load_config(str(tmp_path / "bad.conf"))
    text = "\n".join(kconf.warnings)
    assert "UART_INTERUPT_DRIVEN" in text and "MAIN_STACK_SIZE" in text


@pytest.mark.parametrize("board", ["nucleo_f746zg", "nrf5340dk", "qemu_cortex_m3"])
def test_west_parses_the_manifest_and_init_takes_it(projects, board, tmp_path):
    project = projects(board)
    manifest = west_manifest.Manifest.from_data((project / "west.yml").read_text(),
                                                import_flags=west_manifest.ImportFlag.IGNORE)
    zephyr = next(p for p in manifest.projects if p.name == "zephyr")
    assert zephyr.url == "https://github.com/zephyrproject-rtos/zephyr" and zephyr.revision.startswith("v4.")
    hal = {"nucleo_f746zg": "hal_stm32", "nrf5340dk": "hal_nordic", "qemu_cortex_m3": "picolibc"}[board]
    assert hal in (project / "west.yml").read_text()
    # west's own command line: `west init -l` makes a workspace around the application.
    workspace = tmp_path / "ws"
    shutil.copytree(project, workspace / "app")
    run = subprocess.run([sys.executable, "-m", "west", "init", "-l", "app"], cwd=workspace,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "path = app" in (workspace / ".west" / "config").read_text()


def test_west_refuses_a_malformed_manifest():
    with pytest.raises(west_manifest.MalformedManifest):
        data = {"manifest": {"projects": [{"name": "zephyr", "revisio": "v4.4.0"}]}}
        west_manifest.Manifest.from_data(data, import_flags=west_manifest.ImportFlag.IGNORE)


def _cpu_flags(board: str) -> list:
    record = get_board(board)
    flags = [f"-mcpu={record.cpu}", "-mthumb", f"-mfloat-abi={record.float_abi}"]
    return flags + ([f"-mfpu={record.fpu}"] if record.fpu else [])


@pytest.mark.parametrize("board", ZEPHYR_BOARDS)
def test_portable_c_compiles_with_werror_for_the_boards_cpu(projects, board, tmp_path):
    gcc = require_tool("arm-none-eabi-gcc")
    project = projects(board)
    sources = sorted(project.rglob("*.c"))
    portable = [s for s in sources if not ZEPHYR_INCLUDE.search(s.read_text())]
    zephyr_side = {s.relative_to(project).as_posix() for s in sources} - {
        s.relative_to(project).as_posix() for s in portable}
    assert zephyr_side == {"src/main_host_driven.c", "src/utvm_zephyr_port.c"}
    assert any("runtime/src" in s.as_posix() for s in portable)
    assert any("model/codegen" in s.as_posix() for s in portable)
    for source in portable:
        run = subprocess.run([gcc, *_cpu_flags(board), "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror",
                              "-I", str(project / "runtime" / "include"),
                              "-I", str(project / "model" / "codegen" / "host" / "include"),
                              "-c", str(source), "-o", str(tmp_path / "out.o")],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"{source}:\n{run.stderr}"


def test_aot_standalone_project_bakes_inputs_as_portable_c(template, models, tmp_path):
    gcc = require_tool("arm-none-eabi-gcc")
    _, archive = models("qemu_cortex_m3")
    with template.generate_project(archive, tmp_path / "p", {"board": "qemu_cortex_m3",
                                                             "project_type": "aot_standalone"}):
        pass
    project = tmp_path / "p"
    inputs = project / "src" / "standalone_inputs.c"
    assert (project / "src" / "main_aot_standalone.c").exists()
    assert not (project / "src" / "main_host_driven.c").exists()
    assert "src/standalone_inputs.c" in (project / "CMakeLists.txt").read_text()
    assert "CONFIG_CBPRINTF_FULL_INTEGRAL=y" in (project / "prj.conf").read_text()
    run = subprocess.run([gcc, *_cpu_flags("qemu_cortex_m3"), "-std=c99", "-Wall", "-Wextra", "-Werror",
                          "-c", str(inputs), "-o", str(tmp_path / "in.o")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_project_records_the_clock_zephyr_runs_the_core_at(projects):
    record = read_record(projects("nucleo_l4r5zi"))
    assert record.board["zephyr_board"] == "nucleo_l4r5zi"
    assert record.board["clock_hz"] == 80_000_000 and get_board("nucleo_l4r5zi").clock_hz == 120_000_000
    assert "80 MHz" in record.board["notes"]
    assert read_record(projects("mimxrt1050_evk")).board["clock_hz"] == get_board("mimxrt1050_evk").clock_hz


# ---- the command line, as a user runs it ---------------------------------------------------------


def _utvm(*args, cwd, env=None):
    return subprocess.run([str(Path(sys.executable).parent / "utvm"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=env)


def test_cli_create_project_then_build_without_a_zephyr_tree(models, tmp_path):
    onnx, _ = models("nucleo_f746zg")
    env = {k: v for k, v in os.environ.items() if k not in ("ZEPHYR_BASE", "ZEPHYR_SDK_INSTALL_DIR")}
    made = _utvm("create-project", "zephyr", str(onnx), "p", "-o", "board=nucleo_f746zg",
                 "-o", "zephyr_base=/path", cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stderr
    fit = next(line for line in made.stderr.splitlines() if " fits nucleo_f746zg" in line)
    assert "the board has 320 KiB (327680 bytes)" in fit and "an estimate" in fit
    project = tmp_path / "p"
    for name in ("CMakeLists.txt", "prj.conf", "west.yml", "boards/nucleo_f746zg.overlay",
                 "src/utvm_zephyr_port.c", "runtime/src/session.c", "model.tar"):
        assert (project / name).is_file(), name
    assert "find_package(Zephyr" in (project / "CMakeLists.txt").read_text()

    built = _utvm("build", "p", cwd=tmp_path, env=env)
    assert built.returncode == 2, built.stderr
    assert "Traceback" not in built.stderr
    errors = [line for line in built.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: build: no Zephyr tree at /path (zephyr_base)"]
    assert "west init" in built.stderr and "-o zephyr_base=" in built.stderr

    # Neither the option nor ZEPHYR_BASE: the same kind of error, naming both.
    unset = _utvm("build", "p", "-o", "zephyr_base=", cwd=tmp_path, env=env)
    assert unset.returncode == 2 and "Traceback" not in unset.stderr
    assert "zephyr_base option is not set and ZEPHYR_BASE is empty" in unset.stderr


def _stand_in_tree(root: Path, version: str) -> Path:
    """A folder shaped like a Zephyr tree's top (VERSION, share/zephyr-package), for the checks
    that come before any Zephyr tool runs; it holds no Zephyr."""
    major, minor = version.split(".")
    (root / "share" / "zephyr-package").mkdir(parents=True)
    (root / "VERSION").write_text(f"VERSION_MAJOR = {major}\nVERSION_MINOR = {minor}\nPATCHLEVEL = 0\n")
    return root


def test_build_checks_the_zephyr_version_then_the_sdk(projects, tmp_path, monkeypatch):
    monkeypatch.delenv("ZEPHYR_SDK_INSTALL_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no SDK in the installer's places
    project = projects("qemu_cortex_m3")
    old = _stand_in_tree(tmp_path / "z37", "3.7")
    new = _stand_in_tree(tmp_path / "z44", "4.4")
    with GeneratedProject.from_directory(project, echo=False, env=dict(os.environ)) as generated:
        too_old = r"is Zephyr 3\.7\.0; this template is written for Zephyr 4\.x"
        with pytest.raises(UserError, match=too_old) as err:
            generated.build(options={"zephyr_base": str(old)})
        assert err.value.exit_code == 2
        with pytest.raises(UserError, match="no Zephyr SDK found") as err:
            generated.build(options={"zephyr_base": str(new)})
        assert "west sdk install" in str(err.value) and "toolchain=gnuarmemb" in str(err.value)
        with pytest.raises(UserError, match="gnuarmemb_path .* has no bin/arm-none-eabi-gcc"):
            generated.build(options={"zephyr_base": str(new), "toolchain": "gnuarmemb",
                                     "gnuarmemb_path": str(tmp_path)})


def test_fit_check_counts_zephyrs_share_and_gives_both_numbers(template, tmp_path):
    # An arena that fits nucleo_f746zg's 320 KiB with the runtime and main's stack, but not once
    # Zephyr's own share (the stated estimate) is counted too.
    arena = 310_000
    big = _write_mlf(tmp_path / "big.tar", _fixture_metadata(big_bytes=arena - 3024))
    with pytest.raises(UserError) as err:
        template.generate_project(big, tmp_path / "p", {"board": "nucleo_f746zg"})
    text = str(err.value)
    needed = arena + 1008 + 3 * 1024 + 8192 + 6 * 1024  # arena, workspace, runtime, main's stack, Zephyr
    assert f"does not fit nucleo_f746zg: needs 320.7 KiB ({needed} bytes) of RAM" in text
    assert "the board has 320 KiB (327680 bytes)" in text
    assert "Zephyr kernel and drivers (estimate) 6 KiB" in text
    assert not (tmp_path / "p").exists()


# ---- the transport to a QEMU board, with a stand-in image ---------------------------------------


def test_qemu_transport_runs_a_stand_in_image_and_stops_qemu(template, models, tmp_path):
    """open/read/write/close_transport of a Zephyr project on mps2_an385 drive QEMU for real. The
    image is the bare-metal template's build of the same archive for the same QEMU machine, standing
    in for build/zephyr/zephyr.elf (which needs a Zephyr tree); the transport does not depend on what
    the image was built with."""
    require_tool("arm-none-eabi-gcc")
    require_tool("make")
    require_tool("qemu-system-arm")
    onnx, archive = models("mps2_an385")
    inputs = onnx_input_arrays(onnx)
    with HostReference(load(archive)) as ref:
        for name, value in inputs.items():
            ref.set_input(name, value)
        ref.run()
        expected = {o["name"]: ref.get_output(o["name"]) for o in load(archive).outputs}
    with TemplateProject.from_directory(template_path("baremetal"), echo=False) as baremetal:
        with baremetal.generate_project(archive, tmp_path / "bm", {"board": "mps2_an385"}) as bm:
            bm.build()
    with template.generate_project(archive, tmp_path / "z", {"board": "mps2_an385"}) as project:
        with pytest.raises(Exception, match="build the project first"):
            project.open_transport()
        elf = tmp_path / "z" / "build" / "zephyr" / "zephyr.elf"
        elf.parent.mkdir(parents=True)
        shutil.copy2(tmp_path / "bm" / "build" / "firmware.elf", elf)
        project.flash()  # a QEMU board: checks the image and the emulator only
        with Session.from_project(project) as session:
            session.set_inputs(inputs)
            session.run()
            for name, value in expected.items():
                np.testing.assert_allclose(session.get_output(name), value, rtol=1e-5, atol=1e-5)
            qemu_pid = _qemu_child_of(project)
            assert qemu_pid is not None
        project.close_transport()
        assert not Path(f"/proc/{qemu_pid}").exists() or _is_zombie(qemu_pid)


def test_qemu_aot_standalone_report_with_a_stand_in_image(template, fixture_mlf_path, tmp_path):
    """utvm_run_standalone of a Zephyr aot_standalone project on mps2_an385: QEMU runs the image, the
    report is read and parsed, and QEMU is stopped after it. The image is again the bare-metal build
    of the same archive and the same baked inputs (both templates bake them the same way)."""
    require_tool("arm-none-eabi-gcc")
    require_tool("make")
    require_tool("qemu-system-arm")
    options = {"board": "mps2_an385", "project_type": "aot_standalone"}
    with TemplateProject.from_directory(template_path("baremetal"), echo=False) as baremetal:
        with baremetal.generate_project(fixture_mlf_path, tmp_path / "bm", options) as bm:
            bm.build()
            expected = bm.client.call("utvm_run_standalone", {"timeout_sec": 30})
            bm_inputs = bm.client.call("utvm_standalone_inputs", {})
    with template.generate_project(fixture_mlf_path, tmp_path / "z", options) as project:
        baked = project.client.call("utvm_standalone_inputs", {})
        assert baked["baked"] and baked["inputs"] == bm_inputs["inputs"]
        elf = tmp_path / "z" / "build" / "zephyr" / "zephyr.elf"
        elf.parent.mkdir(parents=True)
        shutil.copy2(tmp_path / "bm" / "build" / "firmware.elf", elf)
        report = project.client.call("utvm_run_standalone", {"timeout_sec": 30})
        assert _qemu_child_of(project) is None, "QEMU must be stopped after the report"
    assert (report["status"], report["error"], report["emulated"]) == (0, None, True)
    assert report["exit_status"] is None  # a Zephyr image stays up; QEMU is stopped instead
    assert report["outputs"] == expected["outputs"] and report["ticks"] == expected["ticks"]
    assert "not real-board timings" in report["note"] and report["instructions"] > 0


def _qemu_child_of(project) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"qemu-system-arm") and str(project.directory).encode() in \
                    b" ".join(cmdline):
                return int(entry.name)
    return None


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


# ---- what needs a Zephyr tree ------------------------------------------------------------------


def test_west_build_with_a_real_zephyr_tree(models, tmp_path):
    base = os.environ.get("ZEPHYR_BASE", "")
    if not base or not (Path(base) / "VERSION").is_file():
        pytest.skip("needs a Zephyr 4.x tree (set ZEPHYR_BASE) and its toolchain; no Zephyr tree can be had "
                    "on utvm's CI machines (docs/zephyr.md)")
    onnx, _ = models("qemu_cortex_m3")
    made = _utvm("create-project", "zephyr", str(onnx), "p", "-o", "board=qemu_cortex_m3", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    built = _utvm("build", "p", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "p" / "build" / "zephyr" / "zephyr.elf").is_file()
    assert "flash" in built.stderr and "RAM" in built.stderr


def test_west_flash_runners_cover_every_board_and_take_the_serial_number():
    """The runner classes build `west flash` command lines (no tool runs here: no board)."""
    script = template_path("zephyr") / "microtvm_api_server.py"
    spec = importlib.util.spec_from_file_location("zephyr_server", script)
    server = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(server)
    from utvm_zephyr.zephyr_boards import ZEPHYR_BOARDS

    for name, facts in ZEPHYR_BOARDS.items():
        assert set(facts.runners) <= set(server.WEST_RUNNERS), name
        assert bool(facts.runners) == (get_board(name).kind == "physical"), name
    config = server.flash_runners.RunnerConfig(board="nucleo_f746zg", image=Path("zephyr.elf"),
                                               serial_number="0670FF48")
    runner = server.WEST_RUNNERS["openocd"](config)
    runner.west, runner.build_dir = ("west",), Path("build")
    assert runner.command() == ["west", "flash", "-d", "build", "-r", "openocd", "--dev-id", "0670FF48"]
