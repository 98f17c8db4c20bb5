"""What the Jetson template's tests stand on: a throwaway sshd on 127.0.0.1 (key login only, its own
host and client keys), the cached arm64 root with TVM's runtime, and a look at the processes a test
left behind.

The sshd is real OpenSSH (`/usr/sbin/sshd -D`), started and stopped by the fixture; "the board"
behind it is this machine, with `remote_prefix` naming qemu-aarch64 so the aarch64 programs run.
The arm64 root is built once per machine into ~/.cache/utvm-tests (outside the clone), keyed by
the TVM version and the recipe, by the template's own builder, the one docs/jetson.md tells users
to run; its first build prints its progress on the terminal.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest
from conftest import require_tool

CACHE_DIR = Path(os.environ.get("UTVM_TEST_CACHE", Path.home() / ".cache" / "utvm-tests"))
SSHD = "/usr/sbin/sshd"
START_TIMEOUT_SEC = 20.0
# How long the kernel and the children get to tear a killed tree down before the test looks.
GONE_WAIT_SEC = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def children_of(pid: int) -> List[int]:
    """Every live descendant of pid (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def processes_mentioning(marker: str) -> List[str]:
    """'pid: command line' of every live process whose command line or working directory holds
    marker (a path unique to the test)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if (marker in cmdline or marker in cwd) and _alive(int(entry.name)):
            found.append(f"{entry.name}: {cmdline.strip()[:200]}")
    return found


def wait_until_gone(marker: str, timeout: float = GONE_WAIT_SEC) -> List[str]:
    """The processes still mentioning marker after up to timeout seconds (empty once all are gone)."""
    deadline = time.monotonic() + timeout
    while True:
        left = processes_mentioning(marker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


class ThrowawaySshd:
    """OpenSSH's sshd on 127.0.0.1:port with its own host key, accepting one client key only."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.port = free_port()
        self.host_key = directory / "host_key"
        self.client_key = directory / "client_key"
        self.known_hosts = directory / "known_hosts"
        self.proc: Optional[subprocess.Popen] = None

    def _keygen(self, path: Path) -> None:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True,
                       stdin=subprocess.DEVNULL, timeout=30)

    def start(self) -> ThrowawaySshd:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._keygen(self.host_key)
        self._keygen(self.client_key)
        shutil.copy(f"{self.client_key}.pub", self.dir / "authorized_keys")
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {Path(f'{self.host_key}.pub').read_text()}")
        config = self.dir / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}", "PubkeyAuthentication yes",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "AllowTcpForwarding yes", "PermitRootLogin prohibit-password",
            f"PidFile {self.dir / 'sshd.pid'}", ""]))
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "sshd.log", "wb"),
                                     start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_SEC
        while not _port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "sshd.log").read_text(errors="replace")
                self.stop()
                pytest.fail(f"the throwaway sshd did not start: {log[-2000:]}")
            time.sleep(0.1)
        return self

    def options(self, remote_dir: Path) -> List[str]:
        """The -o arguments that reach this sshd as its one user."""
        known = f"-o UserKnownHostsFile={self.known_hosts} -o GlobalKnownHostsFile=/dev/null"
        return ["-o", "ssh_host=127.0.0.1", "-o", f"ssh_port={self.port}", "-o", f"ssh_key={self.client_key}",
                "-o", f"ssh_options={known}", "-o", f"remote_dir={remote_dir}"]

    def sessions(self) -> List[int]:
        """The live processes of its sessions (sshd's per-connection children and what they run)."""
        return [p for p in children_of(self.proc.pid) if _alive(p)] if self.proc else []

    def kill(self) -> None:
        """The board's sshd dies: the listener and every session it serves, by SIGKILL."""
        if self.proc is None:
            return
        tree = [self.proc.pid] + children_of(self.proc.pid)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        self.proc = None


@contextlib.contextmanager
def throwaway_sshd(directory: Path) -> Iterator[ThrowawaySshd]:
    """A started ThrowawaySshd, stopped (with its sessions) at the end; skips without OpenSSH."""
    for tool in ("ssh", "ssh-keygen"):
        require_tool(tool)
    if not Path(SSHD).is_file():
        pytest.skip(f"{SSHD} not installed (Debian: apt-get install openssh-server, as `make test` does)")
    sshd = ThrowawaySshd(directory).start()
    try:
        yield sshd
    finally:
        sshd.stop()


def arm64_root() -> Path:
    """The arm64 root with Python and TVM's runtime, built once per machine (see module docstring)."""
    from utvm.templates.jetson.utvm_jetson import arm64_root as builder

    for tool in ("mmdebstrap", "qemu-aarch64"):
        require_tool(tool)
    root = CACHE_DIR / builder.root_name()
    if not builder.is_ready(root):
        if os.geteuid() != 0:
            pytest.skip("building the arm64 root needs root (mmdebstrap); run `make test` as root")

        def say(line: str) -> None:  # past pytest's capture: a first build takes a minute or two
            print(line, file=sys.__stderr__, flush=True)

        try:
            builder.ensure_root(root, CACHE_DIR / f"arm64-wheels-{builder.TVM_VERSION}", progress=say)
        except builder.RootBuildError as err:
            pytest.fail(f"building the arm64 root failed: {err}")
    return root
