"""Run a firmware image under QEMU with its UART on a TCP socket, and never leave QEMU behind.

Every template with an emulated board uses this: bare-metal Cortex-M (qemu-system-arm), Zephyr's
QEMU boards, and Arduino's AVR fallback (qemu-system-avr).

QEMU is started with the UART on a socket chardev with ``server=on,wait=on``, so the guest does not
run until a client is connected and no early byte is lost. We bind and listen on the socket
ourselves and hand QEMU the descriptor (``fd=N``): the port is never free for someone else to take,
and a client can connect as soon as QEMU is launched (the kernel queues the connection until QEMU
accepts it). We connect with pyserial's ``socket://``, or give the URL to a client that will.
QEMU is stopped by `stop()`, on every error path of `start()`, at interpreter exit, and (on Linux)
by the kernel when the Python process dies, even by SIGKILL (``PR_SET_PDEATHSIG``).

Timings under QEMU are not real-board timings: with ``icount_shift`` set, the guest's clock advances
per instruction, so timer ticks count instructions, not the wall time of the host.

Standard library only, and pyserial when a connection is made: generated projects carry this file.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import List, Optional, Sequence

from .child_process import die_with_parent, stop_process_group

START_TIMEOUT_SEC = 10.0
# What QEMU prints once it waits for the UART's client (since QEMU 2.x).
READY_MESSAGE = "waiting for connection"
STOP_TIMEOUT_SEC = 5.0
# Every runner still alive, so interpreter exit can stop them all.
_LIVE: weakref.WeakSet[QemuProcess] = weakref.WeakSet()


class QemuError(RuntimeError):
    """QEMU is missing, did not start, or could not be reached."""


def find_qemu(system: str = "qemu-system-arm") -> str:
    """Path of the QEMU binary, or a QemuError saying how to install it."""
    path = shutil.which(system)
    if path is None:
        raise QemuError(f"{system} not found on PATH; install it (Debian/Ubuntu: "
                        f"`sudo apt-get install {system if system == 'qemu-system-arm' else 'qemu-system'}`)")
    return path


def qemu_command(qemu: str, elf: Path, machine: str, listen_fd: int, cpu: Optional[str] = None,
                 icount_shift: Optional[int] = None, extra_args: Sequence[str] = ()) -> List[str]:
    """The QEMU command line: UART0 on the listening socket listen_fd (QEMU waits for a client
    before the guest runs), semihosting for the exit status."""
    cmd = [qemu, "-M", machine]
    if cpu:
        cmd += ["-cpu", cpu]
    cmd += [
        "-nographic", "-monitor", "none",
        "-kernel", str(elf),
        "-chardev", f"socket,id=uart0,fd={listen_fd},server=on,wait=on",
        "-serial", "chardev:uart0",
        "-semihosting-config", "enable=on,target=native",
    ]
    if icount_shift is not None:
        # sleep=on keeps an idle guest (WFI) from spinning through virtual time.
        cmd += ["-icount", f"shift={int(icount_shift)},sleep=on"]
    return cmd + list(extra_args)


class QemuProcess:
    """One QEMU run of one image. `start()` returns the connected pyserial port; `stop()` ends it.

    Use as a context manager, or call `stop()` yourself; either way QEMU does not outlive us.
    Note that PR_SET_PDEATHSIG fires when the *thread* that started QEMU exits: start it from a
    thread that lives as long as the run (the Project API server's main thread does).
    """

    def __init__(self, elf, machine: str, cpu: Optional[str] = None, system: str = "qemu-system-arm",
                 icount_shift: Optional[int] = None, extra_args: Sequence[str] = (),
                 log_path: Optional[Path] = None):
        self.elf = Path(elf)
        self.machine = machine
        self.cpu = cpu
        self.system = system
        self.icount_shift = icount_shift
        self.extra_args = list(extra_args)
        self.log_path = Path(log_path) if log_path else None
        self.port: Optional[int] = None
        self.serial = None
        self._proc: Optional[subprocess.Popen] = None
        self._log = None

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc else None

    @property
    def url(self) -> Optional[str]:
        """pyserial URL of the UART while running."""
        return f"socket://127.0.0.1:{self.port}" if self.port else None

    def poll(self) -> Optional[int]:
        """QEMU's exit status (the guest's semihosting status), or None while it runs."""
        return self._proc.poll() if self._proc else None

    def log_tail(self, max_chars: int = 2000) -> str:
        """The end of QEMU's stdout/stderr, for error messages."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-max_chars:]

    def launch(self, timeout: float = START_TIMEOUT_SEC) -> str:
        """Start QEMU without connecting, and wait until it waits for its UART client; returns the
        UART's URL for whoever connects (the guest starts then). Stop it with `stop()`."""
        if not self.elf.is_file():
            raise QemuError(f"firmware image {self.elf} does not exist; build the project first")
        with open(self.elf, "rb") as f:
            if f.read(4) != b"\x7fELF":
                # QEMU would load it as a raw binary and run garbage.
                raise QemuError(f"{self.elf} is not an ELF image")
        qemu = find_qemu(self.system)
        try:
            self._spawn(qemu)
            self._wait_ready(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _spawn(self, qemu: str) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            self.port = listener.getsockname()[1]
            cmd = qemu_command(qemu, self.elf, self.machine, listener.fileno(), self.cpu, self.icount_shift,
                               self.extra_args)
            self._log = open(self.log_path, "w+b") if self.log_path else tempfile.TemporaryFile()  # noqa: SIM115
            parent = os.getpid()
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),),
                start_new_session=True,  # its own process group: a terminal's Ctrl-C goes to us, not it
                preexec_fn=die_with_parent(parent),
            )
        _LIVE.add(self)

    def _wait_ready(self, deadline: float) -> None:
        """Wait for QEMU to say it waits for the UART client, or to exit (bad machine, bad option)."""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise QemuError(f"QEMU exited with status {self._proc.returncode} before its UART could be "
                                f"reached:\n{self.log_tail()}")
            if READY_MESSAGE in self.log_tail():
                return
            time.sleep(0.02)
        # A QEMU that words the message differently still works; connecting will tell.

    def start(self, timeout: float = START_TIMEOUT_SEC):
        """Start QEMU and connect to its UART; returns the open pyserial port (also `self.serial`).
        Any failure stops QEMU before the error is raised."""
        self.launch(timeout)
        try:
            return self.connect(timeout)
        except BaseException:
            self.stop()
            raise

    def connect(self, timeout: float = START_TIMEOUT_SEC):
        """Open the UART with pyserial (the guest starts running now); returns the port."""
        import serial  # pyserial; imported late so building a command line needs only the stdlib

        try:
            self.serial = serial.serial_for_url(self.url, timeout=1.0, write_timeout=timeout)
        except serial.SerialException as err:
            raise QemuError(f"could not connect to QEMU's UART at {self.url}: {err}\n"
                            f"{self.log_tail()}") from None
        return self.serial

    def wait(self, timeout: float) -> int:
        """Wait for the guest to exit (semihosting) and return QEMU's exit status; on timeout QEMU is
        stopped and QemuError raised."""
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise QemuError(f"QEMU did not exit within {timeout} s; stopped it") from None

    def _reap(self) -> None:
        if self.serial is not None:
            try:
                self.serial.close()
            except Exception:  # noqa: BLE001 - closing a dead socket must not hide the real error
                pass
            self.serial = None
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        stop_process_group(proc, STOP_TIMEOUT_SEC)

    def stop(self) -> Optional[int]:
        """Close the UART and end QEMU (SIGTERM, then SIGKILL after a deadline). Returns its exit
        status, or None if it was not running. Safe to call more than once."""
        proc = self._proc
        self._reap()
        _LIVE.discard(self)
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode if proc is not None else None

    def __enter__(self) -> QemuProcess:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for runner in list(_LIVE):
        runner.stop()
