"""libFuzzer + ASan + UBSan on the device runtime's parser (templates/runtime/fuzz).

A bounded fuzz run from the committed corpus must find nothing; the same harness, built against a
copy of the runtime with a bounds check removed, must find the planted overflow, so a clean run
means something. UTVM_FUZZ_SECONDS sets the run's length (default 20).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, require_tool

FUZZ_DIR = REPO_ROOT / "templates" / "runtime" / "fuzz"
RUNTIME_DIR = REPO_ROOT / "templates" / "runtime"
FUZZ_SECONDS = int(os.environ.get("UTVM_FUZZ_SECONDS", "20"))
BUILD_DEADLINE_S = 240
SANITIZER_REPORT = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:")

pytestmark = pytest.mark.timeout(BUILD_DEADLINE_S + FUZZ_SECONDS + 120)


def build_fuzzer(build_dir: Path, runtime_dir: Path = RUNTIME_DIR) -> Path:
    """`make` the harness into build_dir (against runtime_dir); skip when libFuzzer is unavailable."""
    require_tool("make")
    require_tool("clang")
    result = subprocess.run(
        ["make", "-C", str(FUZZ_DIR), f"BUILD={build_dir}", f"RUNTIME={runtime_dir}"],
        capture_output=True, text=True, timeout=BUILD_DEADLINE_S,
    )
    if result.returncode != 0 and "fuzzer" in result.stderr and "cannot find" in result.stderr:
        pytest.skip("clang's libFuzzer runtime not installed: apt-get install libclang-rt-14-dev")
    assert result.returncode == 0, f"fuzz harness build failed:\n{result.stdout}\n{result.stderr}"
    return build_dir / "fuzz_runtime"


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory) -> Path:
    return build_fuzzer(tmp_path_factory.mktemp("fuzz-build"))


def run_fuzzer(exe: Path, *args: str, workdir: Path, deadline: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    return subprocess.run([str(exe), f"-artifact_prefix={workdir}/", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=deadline)


def test_committed_corpus_matches_its_generator(tmp_path):
    """The seeds in the repo are exactly what make_corpus.py writes (regenerate with `make corpus`)."""
    subprocess.run([sys.executable, str(FUZZ_DIR / "make_corpus.py"), str(tmp_path)], check=True, timeout=60,
                   capture_output=True)
    generated = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    committed = {p.name: p.read_bytes() for p in (FUZZ_DIR / "corpus").iterdir()}
    stale = "templates/runtime/fuzz/corpus is stale: run `make -C templates/runtime/fuzz corpus`"
    assert committed == generated, stale
    # Every command of the protocol is seeded in each mode that reaches the dispatcher.
    for name in ("ping", "info", "write_input", "read_output", "run", "run_kernel_0", "time_model", "reset"):
        assert f"session_{name}" in committed and f"dispatch_{name}" in committed


def test_corpus_replays_clean(fuzzer, tmp_path):
    scratch = tmp_path / "corpus"
    scratch.mkdir()
    result = run_fuzzer(fuzzer, "-runs=0", str(scratch), str(FUZZ_DIR / "corpus"), workdir=tmp_path,
                        deadline=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and not SANITIZER_REPORT.search(output), output[-4000:]
    assert "INITED" in output


def test_bounded_fuzz_run_finds_nothing(fuzzer, tmp_path):
    new_corpus = tmp_path / "corpus"
    new_corpus.mkdir()
    result = run_fuzzer(fuzzer, f"-max_total_time={FUZZ_SECONDS}", "-timeout=10", "-rss_limit_mb=1024",
                        "-print_final_stats=1", str(new_corpus), str(FUZZ_DIR / "corpus"),
                        workdir=tmp_path, deadline=FUZZ_SECONDS + 120)
    output = result.stdout + result.stderr
    findings = ("crash-", "leak-", "timeout-", "oom-")
    crashes = [p.name for p in tmp_path.iterdir() if p.name.startswith(findings)]
    reproduce = (f"reproduce with: make -C templates/runtime/fuzz repro INPUT=<file> "
                 f"(the file is in {tmp_path})")
    assert result.returncode == 0 and not crashes, f"{crashes}\n{reproduce}\n{output[-6000:]}"
    assert not SANITIZER_REPORT.search(output), output[-6000:]
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    assert runs and int(runs.group(1)) > 1000, output[-2000:]


def test_the_documented_repro_command_takes_a_path_from_where_it_is_run(fuzzer):
    """`make -C templates/runtime/fuzz repro INPUT=...` from the repo root, as the README says."""
    seed = (FUZZ_DIR / "corpus" / "wire_bad_escape").relative_to(REPO_ROOT)
    env = dict(os.environ, PWD=str(REPO_ROOT))  # what a shell in the repo root would set
    command = ["make", "-C", str(FUZZ_DIR.relative_to(REPO_ROOT)), "repro", f"BUILD={fuzzer.parent}"]
    result = subprocess.run([*command, f"INPUT={seed}"], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=BUILD_DEADLINE_S)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Executed {REPO_ROOT / seed}" in result.stderr
    missing = subprocess.run([*command, "INPUT=no/such/crash-file"], cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True, timeout=BUILD_DEADLINE_S)
    assert missing.returncode != 0 and f"no such file: {REPO_ROOT}/no/such/crash-file" in missing.stdout


def test_fuzzer_finds_a_planted_overflow(tmp_path):
    """Remove the unescaper's buffer bound check in a copy of the runtime: the harness must crash on it."""
    runtime_copy = tmp_path / "runtime"
    shutil.copytree(RUNTIME_DIR / "src", runtime_copy / "src")
    shutil.copytree(RUNTIME_DIR / "include", runtime_copy / "include")
    # The unescaper's bound on the receive buffer (the framer hands it the room that is left).
    escape = runtime_copy / "src" / "escape.c"
    source = escape.read_text()
    bound_check = "o >= room"
    assert source.count(bound_check) == 1, f"escape.c no longer checks `{bound_check}` once: update this test"
    escape.write_text(source.replace(bound_check, "0 /* planted bug */"))
    exe = build_fuzzer(tmp_path / "build", runtime_copy)
    scratch = tmp_path / "corpus"  # libFuzzer adds new inputs to the first folder: never the repo's
    scratch.mkdir()
    result = run_fuzzer(exe, "-max_total_time=60", str(scratch), str(FUZZ_DIR / "corpus"), workdir=tmp_path,
                        deadline=180)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "buffer-overflow" in output, output[-4000:]
