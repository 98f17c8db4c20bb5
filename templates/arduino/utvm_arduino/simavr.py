"""Run a sketch's image under simavr, the cycle-exact AVR simulator, with its UART on a pty.

simavr's own program has no way to put a UART on a terminal, so a small bridge
(`simavr_bridge.c`, beside this file) is built on this machine from Debian's libsimavr-dev, once per
project, into build/. It prints the terminal's path; a host opens that with pyserial, as it would a
board's USB serial port. Bytes the firmware sends while no host has the terminal open are lost, as
on a real serial line. For a client that opens the terminal itself (`launch()`), the firmware starts
once the terminal is open, and what it sends before the client's open has flushed the line may be
lost too (a host-driven session survives that: the host repeats HELLO until the device answers).
`start()` opens the terminal here and only then tells the bridge to start the firmware, so every
byte reaches the host (an aot_standalone report is printed once, from the first cycles).

`SimavrProcess` has the interface of the floor's QemuProcess that a UartFirmwareHandler drives
(launch, start, poll, wait, stop), so the template's handler runs simavr where the others run QEMU.
The bridge is stopped by `stop()`, on every error path of `launch()` and `start()`, at interpreter
exit, and by the kernel when its parent dies, even by SIGKILL (it sets PR_SET_PDEATHSIG itself, and
we ask again when we start it). Standard library only, and pyserial when a connection is made.
"""

from __future__ import annotations

import atexit
import os
import select
import shutil
import subprocess
import time
import weakref
from pathlib import Path
from typing import Optional

from project_api.child_process import die_with_parent, stop_process_group

BRIDGE_SOURCE = Path(__file__).resolve().with_name("simavr_bridge.c")
BRIDGE_NAME = "utvm-simavr-bridge"
SIMAVR_INCLUDE = "/usr/include/simavr"
START_TIMEOUT_SEC = 10.0
STOP_TIMEOUT_SEC = 5.0
_LIVE: weakref.WeakSet[SimavrProcess] = weakref.WeakSet()


class SimavrError(RuntimeError):
    """The bridge cannot be built, or the simulation did not start."""


def is_avr_elf(path) -> bool:
    """Whether path is an ELF image for AVR (libsimavr's loader crashes on anything else)."""
    with open(path, "rb") as f:
        header = f.read(20)
    return header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 83  # EM_AVR


def build_bridge(build_dir: Path) -> Path:
    """The bridge program in build_dir, compiled from its source when missing or older."""
    build_dir = Path(build_dir)
    program = build_dir / BRIDGE_NAME
    if program.is_file() and program.stat().st_mtime >= BRIDGE_SOURCE.stat().st_mtime:
        return program
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SimavrError("no C compiler (cc) to build the simavr bridge; install one "
                          "(Debian/Ubuntu: `sudo apt-get install build-essential`)")
    if not Path(SIMAVR_INCLUDE, "sim_avr.h").is_file():
        raise SimavrError("simavr's headers are missing; install them (Debian/Ubuntu: "
                          "`sudo apt-get install simavr libsimavr-dev`)")
    build_dir.mkdir(parents=True, exist_ok=True)
    partial = program.with_suffix(".partial")
    cmd = [cc, "-O2", "-I", SIMAVR_INCLUDE, str(BRIDGE_SOURCE), "-o", str(partial), "-lsimavr"]
    result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise SimavrError(f"building the simavr bridge failed: {' '.join(cmd)}\n{result.stderr[-2000:]}")
    os.replace(partial, program)
    return program


class SimavrProcess:
    """One simulated run of one image. `launch()` returns the terminal's path, `start()` opens it too;
    `stop()` ends the run."""

    system = "simavr"

    def __init__(self, elf, mcu: str, clock_hz: int, baudrate: int, build_dir,
                 log_path: Optional[Path] = None):
        self.elf = Path(elf)
        self.mcu = mcu
        self.clock_hz = int(clock_hz)
        self.baudrate = int(baudrate)
        self.build_dir = Path(build_dir)
        self.log_path = Path(log_path) if log_path else self.build_dir / "simavr.log"
        self.pty: Optional[str] = None
        self.serial = None
        self._proc: Optional[subprocess.Popen] = None

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc else None

    def poll(self) -> Optional[int]:
        """The bridge's exit status (0: the firmware stopped itself), or None while it runs."""
        return self._proc.poll() if self._proc else None

    def log_tail(self, max_chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-max_chars:]
        except OSError:
            return ""

    def launch(self, timeout: float = START_TIMEOUT_SEC, held: bool = False) -> str:
        """Start the simulation; returns the terminal's path. The firmware runs once a host opens the
        terminal, or when `held`, once `_release()` says so."""
        if not self.elf.is_file():
            raise SimavrError(f"firmware image {self.elf} does not exist; build the project first")
        if not is_avr_elf(self.elf):
            raise SimavrError(f"{self.elf.name} is not an AVR image; build the project again (`utvm build`)")
        bridge = build_bridge(self.build_dir)
        cmd = [str(bridge), "--mcu", self.mcu, "--freq", str(self.clock_hz)]
        cmd += ["--start-on-stdin", str(self.elf)] if held else [str(self.elf)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE if held else subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # a terminal's Ctrl-C goes to us, which stops it in order
                preexec_fn=die_with_parent(os.getpid()),
            )
        _LIVE.add(self)
        try:
            self.pty = self._read_pty_line(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self.pty

    def _read_pty_line(self, deadline: float) -> str:
        out = self._proc.stdout
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([out], [], [], remaining)[0]:
                raise SimavrError(f"the simavr bridge did not start within the deadline:\n{self.log_tail()}")
            chunk = os.read(out.fileno(), 256)
            if not chunk:
                self._proc.wait(2.0)
                raise SimavrError(f"the simavr bridge exited with status {self._proc.returncode} before "
                                  f"the simulation started:\n{self.log_tail()}")
            line += chunk
        word, _, path = line.decode().strip().partition(" ")
        if word != "pty" or not path:
            raise SimavrError(f"unexpected first line from the simavr bridge: {line!r}")
        return path

    def connect(self):
        """Open the terminal with pyserial; returns the port."""
        import serial

        try:
            self.serial = serial.Serial(self.pty, baudrate=self.baudrate, timeout=1.0, write_timeout=10.0)
        except serial.SerialException as err:
            raise SimavrError(f"could not open the simulated board's terminal {self.pty}: {err}") from None
        return self.serial

    def start(self, timeout: float = START_TIMEOUT_SEC):
        """Launch, open the terminal, then start the firmware; returns the open pyserial port. Any
        failure stops the simulation before the error is raised."""
        self.launch(timeout, held=True)
        try:
            port = self.connect()
            self._release()
            return port
        except BaseException:
            self.stop()
            raise

    def _release(self) -> None:
        """Start the firmware of a held simulation (the bridge waits for a byte on its stdin)."""
        try:
            self._proc.stdin.write(b"\n")
            self._proc.stdin.flush()
        except OSError as err:
            raise SimavrError(f"the simavr bridge exited before the firmware started ({err}):\n"
                              f"{self.log_tail()}") from None

    def wait(self, timeout: float) -> int:
        """Wait for the firmware to stop itself; returns the bridge's status. Our end of the terminal
        is closed first: the bridge of a stopped firmware waits for that (see simavr_bridge.c), so
        read what it printed before. On timeout the simulation is stopped and SimavrError raised."""
        self._close_terminal()
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise SimavrError(f"the simulated firmware did not stop within {timeout} s; stopped it") from None

    def _close_terminal(self) -> None:
        if self.serial is not None:
            try:
                self.serial.close()
            except Exception:  # noqa: BLE001 - closing a dead terminal must not hide the real error
                pass
            self.serial = None

    def stop(self) -> Optional[int]:
        """Close the terminal and end the simulation (SIGTERM, then SIGKILL after a deadline).
        Returns the bridge's status, or None if it was not running. Safe to call more than once."""
        self._close_terminal()
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is None:
            return None
        if proc.poll() is None:
            stop_process_group(proc, STOP_TIMEOUT_SEC)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:  # a pipe to a dead bridge: nothing left to say
                    pass
        return proc.returncode

    def __enter__(self) -> SimavrProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for process in list(_LIVE):
        process.stop()
