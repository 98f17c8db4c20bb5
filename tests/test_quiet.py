"""Progress lines on a terminal, not in a pipe (unless --progress or UTVM_PROGRESS=1 forces them);
`utvm --quiet` for scripts: no progress lines and no echoed build output, results still printed,
and a failed build still quotes the compiler's last lines in its one error.

The terminal is a real pseudo-terminal (the pty module) on the command's stderr; its stdout stays a
pipe, as in `utvm run ... > out.txt` typed at a terminal.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import time

import pytest
from host_driven_helpers import CLI, run_cli, small_tflite_archive

PTY_DEADLINE_SEC = 300


def run_on_terminal(*args, env=None):
    """`utvm ARGS...` with stderr on a pseudo-terminal; (exit code, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen([*CLI, *map(str, args)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=slave, env=env)
    finally:
        os.close(slave)
    shown = bytearray()
    deadline = time.monotonic() + PTY_DEADLINE_SEC
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not chunk:
                break
            shown += chunk
        stdout = process.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    text = shown.decode(errors="replace").replace("\r\n", "\n")
    return process.returncode, stdout.decode(errors="replace"), text


def forced(value="1"):
    return dict(os.environ, UTVM_PROGRESS=value)


def unforced():
    env = dict(os.environ)
    env.pop("UTVM_PROGRESS", None)
    return env


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("the host template builds with make and cc, which are not on PATH")
    return small_tflite_archive(tmp_path_factory)


def test_progress_lines_show_on_a_terminal_and_not_in_a_pipe_unless_forced(archive, tmp_path):
    code, _, terminal = run_on_terminal("create-project", "host", archive, tmp_path / "tty", env=unforced())
    assert code == 0, terminal
    assert "generating " in terminal and "created " in terminal, terminal
    piped = subprocess.run([*CLI, "create-project", "host", archive, tmp_path / "pipe"], capture_output=True,
                           text=True, timeout=PTY_DEADLINE_SEC, env=unforced())
    assert piped.returncode == 0, piped.stderr
    assert "generating " not in piped.stderr and "created " not in piped.stderr, piped.stderr
    for n, (argv, env) in enumerate(((("--progress", "create-project"), unforced()),
                                     (("create-project", "--progress"), unforced()),
                                     (("create-project",), forced()))):
        made = subprocess.run([*CLI, *argv, "host", archive, tmp_path / f"forced{n}"], capture_output=True,
                              text=True, timeout=PTY_DEADLINE_SEC, env=env)
        assert made.returncode == 0, made.stderr
        assert "generating " in made.stderr and "created " in made.stderr, (argv, made.stderr)
    code, _, terminal = run_on_terminal("--quiet", "create-project", "host", archive, tmp_path / "q",
                                        env=forced())
    assert code == 0 and terminal == "", terminal  # --quiet wins over a forced progress


def test_a_build_in_a_pipe_still_echoes_the_server_but_shows_no_steps(archive, tmp_path):
    project = tmp_path / "p"
    assert run_cli("-q", "create-project", "host", archive, project).returncode == 0
    piped = subprocess.run([*CLI, "build", project], capture_output=True, text=True,
                           timeout=PTY_DEADLINE_SEC, env=unforced())
    assert piped.returncode == 0, piped.stderr
    assert "building " not in piped.stderr and "build done" not in piped.stderr, piped.stderr
    assert "host: built build/model_device" in piped.stderr, piped.stderr  # the server's echo
    code, _, terminal = run_on_terminal("build", project, env=unforced())
    assert code == 0 and "building " in terminal and "build done" in terminal, terminal


def test_validation_steps_show_on_a_terminal_and_results_in_a_pipe(archive, tmp_path):
    project = tmp_path / "p"
    assert run_cli("-q", "create-project", "host", archive, project).returncode == 0
    assert run_cli("-q", "build", project).returncode == 0
    code, stdout, terminal = run_on_terminal("run", project, "--validate", env=unforced())
    assert code == 0, terminal
    assert "validating layer by layer against the host reference..." in terminal, terminal
    assert "validation: PASS" in stdout and "validating" not in stdout
    piped = subprocess.run([*CLI, "run", project, "--validate"], capture_output=True, text=True,
                           timeout=PTY_DEADLINE_SEC, env=unforced())
    assert piped.returncode == 0, piped.stderr
    assert "validating" not in piped.stdout + piped.stderr
    assert "validation: PASS" in piped.stdout and "output " in piped.stdout


def test_quiet_prints_results_only(archive, tmp_path):
    project = tmp_path / "p"
    loud = run_cli("--progress", "create-project", "host", archive, tmp_path / "loud")
    assert loud.returncode == 0 and "created" in loud.stderr  # the progress lines --quiet removes
    for argv in (("-q", "create-project", "host", archive, project), ("build", project, "--quiet")):
        done = run_cli(*argv)
        assert done.returncode == 0, done.stderr
        assert done.stderr == "" and done.stdout == "", (argv, done.stdout, done.stderr)
    ran = run_cli("--quiet", "run", project, "--validate")
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr == ""
    assert "validation: PASS" in ran.stdout and "output " in ran.stdout


def test_a_quiet_build_that_fails_quotes_the_compiler(archive, tmp_path):
    project = tmp_path / "p"
    assert run_cli("-q", "create-project", "host", archive, project).returncode == 0
    with open(project / "runtime" / "src" / "backend.c", "a", encoding="utf-8") as source:
        source.write("\nthis is not C\n")
    built = run_cli("-q", "build", project)
    assert built.returncode == 1
    lines = built.stderr.splitlines()
    assert lines[0].startswith("error: build failed"), built.stderr
    assert any("backend.c" in line and "error" in line for line in lines[1:]), built.stderr
    assert lines[-1].startswith("hint: the server's last lines above say why")


def test_a_note_on_the_progress_channel_prints_in_a_pipe(tmp_path):
    """The compile-time check skipped for want of a C compiler is a note, not progress: a script
    reading a pipe is told; --quiet silences it with the rest."""
    from model_builders import make_small_tflite

    model = make_small_tflite(tmp_path / "small.tflite", True)
    env = dict(unforced(), CC="no-such-cc")
    piped = subprocess.run([*CLI, "compile", model, "-o", tmp_path / "a.tar"], capture_output=True, text=True,
                           timeout=PTY_DEADLINE_SEC, env=env)
    assert piped.returncode == 0, piped.stderr
    assert "note: check skipped: no C compiler" in piped.stderr, piped.stderr
    assert "importing the model" not in piped.stderr  # the steps around it stay quiet
    quiet = subprocess.run([*CLI, "-q", "compile", model, "-o", tmp_path / "b.tar"], capture_output=True,
                           text=True, timeout=PTY_DEADLINE_SEC, env=env)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
