"""The relay half of a template whose device is a process on pipes (a PipeChild): its server's
close_transport, read_transport and write_transport. The POSIX host template's device is a local
program; the Jetson template's is ssh to the board, or qemu-aarch64 here.

A handler mixes this in before ProjectAPIHandler, keeps its running device in ``self._device``
(started by its open_transport), and gets the rest. Standard library only: generated projects
carry this module.
"""

from __future__ import annotations

from typing import Optional

from .child_process import PipeChild
from .errors import TransportClosedError

# read_transport and write_transport with no timeout_sec wait at most this long: a call never hangs.
DEFAULT_IO_TIMEOUT_SEC = 300.0


class DeviceProcessRelay:
    """close/read/write_transport over the handler's device process (``self._device``)."""

    _device: Optional[PipeChild] = None

    def close_transport(self):
        if self._device is not None:
            device, self._device = self._device, None
            device.close()

    def _open_device(self) -> PipeChild:
        if self._device is None:
            raise TransportClosedError("the transport is not open; call open_transport first")
        return self._device

    def read_transport(self, n, timeout_sec):
        return self._open_device().read(n, DEFAULT_IO_TIMEOUT_SEC if timeout_sec is None else timeout_sec)

    def write_transport(self, data, timeout_sec):
        self._open_device().write(data, DEFAULT_IO_TIMEOUT_SEC if timeout_sec is None else timeout_sec)
