"""The open/closed bookkeeping every transport of this package shares: calls after close() fail
with TransportClosedError naming the link, and close() runs its release step only once.
"""

from __future__ import annotations

from .errors import TransportClosedError
from .transport import Transport


class ClosableTransport(Transport):
    """A Transport with a ``link`` description; subclasses implement ``_release()``."""

    link = "transport"
    _closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError(f"{self.link} is closed")

    def _release(self) -> None:
        """Free what the transport holds (called once, by the first close())."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._release()
