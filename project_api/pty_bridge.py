"""A pseudo-terminal in front of a device's byte link, for serial tools that open a device path.

Some tools only open a serial device by its path (pyserial's ``serial.Serial``, as the MLPerf Tiny
runner does), so neither a device process's pipes nor an emulator's TCP socket reach them. A
:class:`PtyBridge` makes a pseudo-terminal in raw mode, gives out its path, and copies bytes both
ways between it and the device, in two threads, until it is closed or the device's link ends.

The bridge keeps the terminal's own side open as well, so a tool may open and close the path as
often as it likes (each ``serial.Serial`` open flushes what the device said while nobody listened).

Standard library only (POSIX): generated projects carry this module.
"""

from __future__ import annotations

import os
import select
import threading
import tty
from typing import Any, Callable, Dict, Optional

from .errors import IoTimeoutError

# How long each thread waits for bytes before it looks at the stop flag again.
POLL_SEC = 0.05
CHUNK_BYTES = 4096
JOIN_SEC = 2.0


class PtyBridge:
    """Bridge a device link to a new pseudo-terminal.

    ``read(n, timeout)`` returns 1..n bytes from the device, raises ``IoTimeoutError`` when none
    came within timeout seconds, and raises anything else when the link has ended;
    ``write(data, timeout)`` writes all of data to the device. These are a Project API handler's
    ``read_transport`` and ``write_transport``. ``name`` says what the device is in messages.
    """

    def __init__(self, read: Callable[[int, float], bytes], write: Callable[[bytes, float], None],
                 name: str = "device"):
        self._read = read
        self._write = write
        self.name = name
        self._master: Optional[int] = None
        self._slave: Optional[int] = None
        self._stop = threading.Event()
        self._threads = []
        self._lock = threading.Lock()
        self.path: Optional[str] = None
        self.error: Optional[str] = None

    def start(self) -> str:
        """Make the pseudo-terminal and start copying; returns its path (e.g. /dev/pts/3)."""
        self._master, self._slave = os.openpty()
        # Raw, no echo: a byte the device sends must never come back to it as input.
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        for target, label in ((self._device_to_pty, "out"), (self._pty_to_device, "in")):
            thread = threading.Thread(target=target, name=f"utvm-pty-{label}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self.path

    @property
    def alive(self) -> bool:
        """Whether both directions are still copying."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def _fail(self, text: str) -> None:
        with self._lock:
            if self.error is None and not self._stop.is_set():
                self.error = text
        self._stop.set()

    def _device_to_pty(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._read(CHUNK_BYTES, POLL_SEC)
            except IoTimeoutError:
                continue
            except Exception as err:  # noqa: BLE001 - any end of the link ends the bridge, said once
                self._fail(f"the {self.name}'s link ended: {err}")
                return
            view = memoryview(data)
            while view and not self._stop.is_set():
                _, writable, _ = select.select([], [self._master], [], POLL_SEC)
                if writable:
                    try:
                        view = view[os.write(self._master, view):]
                    except BlockingIOError:
                        pass

    def _pty_to_device(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._master], [], [], POLL_SEC)
            if not readable:
                continue
            try:
                data = os.read(self._master, CHUNK_BYTES)
            except BlockingIOError:
                continue
            except OSError as err:
                self._fail(f"the pseudo-terminal {self.path} failed: {err}")
                return
            try:
                self._write(data, 10.0)
            except Exception as err:  # noqa: BLE001 - as above
                self._fail(f"cannot write to the {self.name}: {err}")
                return

    def close(self) -> None:
        """Stop copying and close the pseudo-terminal. Safe to call more than once."""
        self._stop.set()
        for thread in self._threads:
            thread.join(JOIN_SEC)
        self._threads = []
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None

    def __enter__(self) -> PtyBridge:
        if self.path is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bridge_status(bridge: Optional[PtyBridge], device_ended: Optional[str] = None) -> Dict[str, Any]:
    """A server's report on its bridge: {path, open, error}. ``device_ended`` says why the device
    behind it has gone, when the server knows before the bridge does (QEMU's exit status)."""
    if bridge is None:
        return {"path": None, "open": False, "error": "no pseudo-terminal is open"}
    error = bridge.error
    if device_ended:
        error = device_ended + (f" ({error})" if error else "")
    return {"path": bridge.path, "open": bridge.alive and not device_ended, "error": error}
