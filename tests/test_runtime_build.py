"""The device runtime builds cleanly with every compiler it targets, and stays small.

Real compilers only: gcc and clang for the POSIX build, arm-none-eabi-gcc for Cortex-M. Each test
skips, saying which, when its compiler is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from runtime_fixtures.build import (
    FAST_LINK_DEFINES,
    FIXTURE_DIR,
    RUNTIME_DIR,
    STRICT_FLAGS,
    build_device,
    compile_c,
    include_flags,
    require_compiler,
    runtime_files,
    runtime_sources,
)

# DESIGN.md's goal for the runtime without a model on a Cortex-M.
CORTEX_M_TEXT_GOAL = 8 * 1024
ARM_FLAGS = ["-mthumb", "-Os", "-ffunction-sections", "-fdata-sections"]
EMPTY_MODEL_DIR = FIXTURE_DIR / "empty"


@pytest.mark.parametrize("cc", ["gcc", "clang"])
@pytest.mark.parametrize("crc_table", ["0", "1"])
def test_posix_device_builds_strict(tmp_path, cc, crc_table):
    exe = build_device(tmp_path, cc=cc, defines=[f"UTVM_CRC_TABLE={crc_table}"])
    assert exe.is_file()


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_fast_link_configuration_builds(tmp_path, cc):
    assert build_device(tmp_path, cc=cc, defines=FAST_LINK_DEFINES).is_file()


def _sanitizer_flags(cc: str, tmp_path) -> list:
    """ASan/UBSan flags when this compiler can link them, else none."""
    probe = tmp_path / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-g"]
    result = subprocess.run([cc, *flags, str(probe), "-o", str(tmp_path / "probe")], capture_output=True)
    return flags if result.returncode == 0 else []


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_backend_and_framer_checks_pass(tmp_path, cc):
    """Workspace allocator, error text and C framer behave, under ASan/UBSan where available."""
    require_compiler(cc)
    sources = [FIXTURE_DIR / "runtime_checks.c", FIXTURE_DIR / "stub_port.c",
               *(RUNTIME_DIR / "src" / name for name in ("backend.c", "framing.c", "escape.c", "crc16.c"))]
    exe = compile_c(cc, sources, tmp_path / "checks", [*include_flags(posix=False),
                                                       *_sanitizer_flags(cc, tmp_path)])
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout


def test_backend_compiles_alone(tmp_path):
    """model_library's host reference runner links backend.c with nothing else from the runtime."""
    obj = tmp_path / "backend.o"
    compile_c("gcc", [RUNTIME_DIR / "src" / "backend.c"], obj, ["-c", f"-I{RUNTIME_DIR / 'include'}"])
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm not installed (binutils)")
    symbols = subprocess.run([nm, str(obj)], capture_output=True, text=True, check=True).stdout
    defined = set(re.findall(r" T (\w+)", symbols))
    assert {"TVMBackendAllocWorkspace", "TVMBackendFreeWorkspace", "TVMFFIErrorSetRaisedFromCStr",
            "TVMFFIErrorSetRaisedFromCStrParts", "utvm_backend_init"} <= defined
    undefined = set(re.findall(r" U (\w+)", symbols))
    assert not {s for s in undefined if s.startswith("utvm_port")}, undefined


def _make_list(text: str, name: str) -> list:
    match = re.search(rf"^{name} := ((?:.*\\\n)*.*)$", text, re.M)
    assert match, f"{name} missing from runtime.mk"
    return [w.replace("$(UTVM_RUNTIME_DIR)/", "") for w in match.group(1).replace("\\\n", " ").split()]


def test_source_lists_agree_and_are_complete():
    files = runtime_files()
    mk = (RUNTIME_DIR / "runtime.mk").read_text()
    assert _make_list(mk, "UTVM_RUNTIME_SRCS") == files["sources"]
    assert _make_list(mk, "UTVM_RUNTIME_INCLUDES") == files["includes"]
    assert _make_list(mk, "UTVM_RUNTIME_POSIX_SRCS") == files["posix_sources"]
    assert _make_list(mk, "UTVM_RUNTIME_POSIX_INCLUDES") == files["posix_includes"]
    on_disk = sorted(str(p.relative_to(RUNTIME_DIR)) for p in (RUNTIME_DIR / "src").glob("*.c"))
    assert sorted(files["sources"]) == on_disk
    for path in runtime_sources():
        assert path.is_file(), path


@pytest.mark.parametrize("cpu", ["cortex-m0plus", "cortex-m3", "cortex-m4", "cortex-m7"])
def test_runtime_compiles_for_cortex_m(tmp_path, cpu):
    cc = require_compiler("arm-none-eabi-gcc")
    for src in runtime_sources(posix=False):
        compile_c(cc, [src], tmp_path / (src.stem + ".o"),
                  ["-c", f"-mcpu={cpu}", *ARM_FLAGS, *include_flags(False, EMPTY_MODEL_DIR)])


def test_runtime_code_size_on_cortex_m3(tmp_path):
    """The runtime without a model, linked with --gc-sections, fits DESIGN.md's 8 KB goal."""
    cc = require_compiler("arm-none-eabi-gcc")
    size_tool = require_compiler("arm-none-eabi-size")
    flags = ["-mcpu=cortex-m3", *ARM_FLAGS, *include_flags(False, EMPTY_MODEL_DIR)]
    objects = []
    for src in runtime_sources(posix=False):
        objects.append(compile_c(cc, [src], tmp_path / (src.stem + ".o"), ["-c", *flags]))
    # Linking proves nothing is missing (no hidden libgcc/libc needs beyond memcpy/memset).
    link_flags = [*flags, f"-I{FIXTURE_DIR}", "--specs=nosys.specs", "-Wl,--gc-sections"]
    compile_c(cc, [*objects, EMPTY_MODEL_DIR / "empty_model.c", FIXTURE_DIR / "stub_port.c"],
              tmp_path / "empty.elf", link_flags)
    out = subprocess.run([size_tool, *map(str, objects)], capture_output=True, text=True, check=True).stdout
    text = sum(int(line.split()[0]) for line in out.splitlines()[1:])
    print(f"runtime .text on Cortex-M3 -Os: {text} bytes")
    assert text < CORTEX_M_TEXT_GOAL, out


def test_runtime_compiles_for_aarch64(tmp_path):
    cc = require_compiler("aarch64-linux-gnu-gcc")
    build_device(tmp_path, cc=cc)


def test_a_packet_limit_beyond_the_crc_guarantee_does_not_compile(tmp_path):
    """UTVM_MAX_PACKET above 4093 would let two bit flips 32767 bits apart pass the CRC."""
    cmd = [require_compiler("gcc"), *STRICT_FLAGS, *include_flags(), "-DUTVM_MAX_PACKET=4094", "-c",
           str(RUNTIME_DIR / "src" / "session.c"), "-o", str(tmp_path / "session.o")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "at most 4093" in result.stderr
