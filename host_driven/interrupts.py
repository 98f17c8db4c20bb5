"""Ending a session from a signal: the session and its transport close, so the device stops.

Every wait of a session wakes for signals (the C pipe call returns to Python on EINTR, the
transports wait in Python's own select), so a handler that raises ends the wait at once. Within
``closed_on_signals(session)``, the given signals do that: the handler raises
:class:`SessionInterrupted`, the block closes the session (and with it the transport: the
device's pipes, or the server's transport), and the error carries on to the caller, who reports
it (the `utvm` command as one line, with exit code 128 + the signal's number).

    with Session.from_project(project_dir) as session, closed_on_signals(session):
        session.run()

The `utvm` command wraps whole commands (``closed_on_signals(None, STOP_SIGNALS)``): the error
then unwinds through the command's own ``with`` blocks, which close its session and project.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, Sequence

from .errors import HostDrivenError

DEFAULT_SIGNALS = (signal.SIGTERM,)
# The signals that stop a command: a terminal's Ctrl-C, a supervisor's or `kill`'s SIGTERM, a
# closed terminal's SIGHUP. All close the session the same way.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


class SessionInterrupted(HostDrivenError):
    """A signal ended the session; ``signum`` is the signal."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}; the session and its device were closed")


@contextlib.contextmanager
def closed_on_signals(session, signals: Sequence[int] = DEFAULT_SIGNALS) -> Iterator[None]:
    """Within the block, each of ``signals`` closes ``session`` and raises SessionInterrupted.

    ``session`` is anything with ``close()`` (a ProtocolSession, an executor Session), or None
    when the block's own ``with`` statements close what it opened. Only the
    main thread receives signals in Python, so elsewhere this does nothing. The old handlers come
    back when the block ends. A second signal while the session closes is ignored, so the close
    itself (which stops the device) is never cut short.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = []

    def handler(signum, _frame):
        if fired:
            return
        fired.append(signum)
        raise SessionInterrupted(signum)

    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        try:
            if fired and session is not None:
                session.close()
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)
