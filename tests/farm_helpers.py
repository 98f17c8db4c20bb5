"""Real farm processes for the tests: TVM's tracker and proxy, `utvm farm node`, and client processes,
all on 127.0.0.1, each in its own process group with its output in a log file, and stopped with all
they started when the test is done.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "utvm.cli.main"]
START_TIMEOUT = 180.0  # importing TVM takes seconds, more on a loaded machine


def free_port(low: int = 0, high: int = 0) -> int:
    """A port nobody listens on: any, or one in [low, high) (TVM's tracker and proxy search ports
    only up to 9199 unless told otherwise)."""
    candidates = random.sample(range(low, high), high - low) if high else [0]
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise AssertionError(f"no free port in [{low}, {high})")


# Every process started here, so that a test's teardown stops what a failure left running.
STARTED: List[Proc] = []


@contextlib.contextmanager
def stopping_what_starts() -> Iterator[None]:
    """Stop, on the way out, every process started inside that is still running, newest first."""
    before = list(STARTED)
    try:
        yield
    finally:
        for proc in [p for p in reversed(STARTED) if p not in before]:
            proc.stop()


class Proc:
    """A child process in its own process group, its stdout and stderr in ``log``."""

    def __init__(self, argv: Sequence[str], log: Path, cwd: Optional[Path] = None, env=None):
        STARTED.append(self)
        self.argv = [str(a) for a in argv]
        self.log = log
        self._file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv, stdout=self._file, stderr=subprocess.STDOUT, cwd=cwd,
                                     stdin=subprocess.DEVNULL, start_new_session=True, env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> str:
        """Wait until the output matches the regular expression; the match. Fails with the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found.group(0)
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{self.argv[:4]} never printed {pattern!r} (exit {self.proc.poll()}):\n"
                             + self.text()[-4000:])

    def wait(self, timeout: float = START_TIMEOUT) -> int:
        return self.proc.wait(timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process alone (not its group): as when it is killed from outside."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def interrupt(self) -> None:
        """SIGINT to the process group, as Ctrl-C in its terminal sends it."""
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL what is left of it."""
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its group's stragglers (TVM's worker processes)
        except ProcessLookupError:
            pass
        self._file.close()
        if self in STARTED:
            STARTED.remove(self)


def start_tracker(tmp: Path, port: int) -> Proc:
    proc = Proc([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", port,
                 "--port-end", port + 1], tmp / f"tracker-{port}.log")
    proc.wait_for(r"bind to 127\.0\.0\.1:\d+")
    return proc


def start_proxy(tmp: Path, port: int, tracker_port: int) -> Proc:
    proc = Proc([sys.executable, "-m", "tvm.exec.rpc_proxy", "--host", "127.0.0.1", "--port", port,
                 "--port-end", port + 1, "--web-port", free_port(), "--tracker", f"127.0.0.1:{tracker_port}"],
                tmp / f"proxy-{port}.log")
    proc.wait_for(r"Websock port bind")
    return proc


def start_node(tmp: Path, tracker_port: int, key: str, template: str, *options: str,
               extra: Sequence[str] = (), name: Optional[str] = None) -> Proc:
    argv = [*CLI, "farm", "node", "--tracker", f"127.0.0.1:{tracker_port}", "--key", key,
            "--port", free_port(), *extra, template]
    for option in options:
        argv += ["-o", option]
    proc = Proc(argv, tmp / f"node-{name or key}-{time.monotonic_ns()}.log")
    proc.wait_for(r"serving (on|through)")
    return proc


def wait_for_free(tracker_port: int, key: str, count: int = 1, timeout: float = START_TIMEOUT) -> None:
    """Wait until the tracker counts ``count`` free nodes of ``key``."""
    from utvm.farm.tracker_client import TrackerClient, key_counts

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with TrackerClient(("127.0.0.1", tracker_port)) as tracker:
            if key_counts(tracker.summary(), key)["free"] >= count:
                return
        time.sleep(0.2)
    raise AssertionError(f"the tracker never counted {count} free node(s) of {key!r}")


def start_client(tmp: Path, tracker_port: int, key: str, archive: Path, inputs: Path, name: str,
                 *extra: str) -> Proc:
    output = tmp / f"{name}.npz"
    return Proc([sys.executable, HERE / "farm_client.py", "--tracker", f"127.0.0.1:{tracker_port}",
                 "--key", key, "--archive", archive, "--inputs", inputs, "--output", output, *extra],
                tmp / f"{name}.log")


def processes_mentioning(text: str) -> List[str]:
    """Command lines of live processes that mention ``text`` (a node's directory: its sessions'
    project servers and QEMUs have it in their arguments)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def node_dir(node: Proc) -> str:
    """The node's temporary directory prefix (its sessions' files, projects and images live there)."""
    return f"utvm-farm-node-{node.pid}-"


def wait_until_gone(text: str, timeout: float = 30.0) -> List[str]:
    """Wait until no live process mentions ``text``; returns what is left (empty when all are gone)."""
    deadline = time.monotonic() + timeout
    left = processes_mentioning(text)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = processes_mentioning(text)
    return left
