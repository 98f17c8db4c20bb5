"""A host-driven session on a board of the farm: ``Session.from_tracker(...)``.

    from utvm.farm import Session
    with Session.from_tracker("127.0.0.1:9190", "mps2_an386", "model.tar", token_file="farm.token") as s:
        s.set_input(0, x); s.run(); y = s.get_output(0)
        print(s.benchmark().summary(), s.validate().verdict())

It is the ordinary host-driven Session (set_input, run, get_output, benchmark, profile, validate) over
a FarmTransport: the tracker hands out a node of the key (waiting in its queue, with progress, up to
a deadline), the client presents the token, compiles the model for the node's board if it is not an
archive yet, uploads the archive, and the node generates, builds and flashes the project and opens
the device. Closing the session ends it on the node and frees the board for the next client.
"""

from __future__ import annotations

import pathlib
import shutil
import tarfile
import tempfile
import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from utvm.host_driven.device_clock import DeviceClock, device_clock
from utvm.host_driven.executor import Session as HostDrivenSession
from utvm.host_driven.run_record import assemble_record
from utvm.project_api.errors import UserError

from . import wire
from .errors import FarmError
from .remote import FarmTransport, RemoteBoard, error_line
from .tracker_client import wait_for_board

DEFAULT_QUEUE_TIMEOUT = 600.0
# The node ends a session that lasts longer (TVM's session timeout); 0 would mean never.
DEFAULT_SESSION_TIMEOUT = 3600.0

Say = Callable[[str], None]


def _quiet(_text: str) -> None:
    pass


def is_model_archive(path: pathlib.Path) -> bool:
    """Whether a model path is an MLF archive already (else it is a model file to compile)."""
    return path.suffix == ".tar" or tarfile.is_tarfile(path)


def connect_board(tracker: Union[str, Tuple[str, int]], key: str, *,
                  queue_timeout: float = DEFAULT_QUEUE_TIMEOUT,
                  session_timeout: float = DEFAULT_SESSION_TIMEOUT, say: Say = _quiet) -> RemoteBoard:
    """Wait in the tracker's queue for a node of key (at most queue_timeout seconds) and connect to it."""
    address = wire.parse_address(tracker) if isinstance(tracker, str) else tracker
    from tvm import rpc  # before queueing: importing TVM can take seconds, better not while holding a board

    deadline = time.monotonic() + queue_timeout
    while True:
        host, port, match_key = wait_for_board(address, key, deadline, say)
        try:
            session = rpc.connect(host, port, match_key, session_timeout=session_timeout)
        except Exception as err:  # noqa: BLE001 - TVM's error when the node changed its key or just died
            if time.monotonic() >= deadline:
                raise FarmError(f"the node for key {key!r} at {host}:{port} did not take the session: "
                                f"{error_line(err)}", hint="see `utvm farm status`; try again") from None
            say(f"the node at {host}:{port} did not take the session ({error_line(err)}); asking again")
            continue
        return RemoteBoard(session, key, f"{host}:{port}")


class FarmSession(HostDrivenSession):
    """A host-driven Session whose device is a board of the farm (see the module docstring).

    ``board`` is the RemoteBoard (also ``project``, so closing the session ends the board's session).
    """

    _workdir: Optional[pathlib.Path] = None
    _options: Optional[Dict[str, Any]] = None  # the client's project options, added to the node's
    archive: Optional[pathlib.Path] = None  # the MLF archive the node built (compiled here if need be)

    @classmethod
    def from_tracker(
        cls,
        tracker: Union[str, Tuple[str, int]],
        key: str,
        model,
        *,
        options: Optional[Mapping[str, Any]] = None,
        token: Optional[str] = None,
        token_file=None,
        queue_timeout: float = DEFAULT_QUEUE_TIMEOUT,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
        say: Optional[Say] = None,
        **kwargs,
    ) -> FarmSession:
        """A session on a board of key from the tracker at ``tracker`` ("HOST:PORT"), running ``model``
        (an MLF archive, or a model file compiled here for the node's board). Not yet opened: use
        ``with`` or ``open()``.

        ``options`` are project options added to the node's (it refuses a change of its own, such as
        the board); ``token`` (or ``token_file``, else $UTVM_FARM_TOKEN) is the node's token;
        ``queue_timeout`` bounds the wait for a board; ``say`` receives progress lines. Other
        keyword arguments go to the host-driven Session (timeout, run_timeout, progress...).
        """
        say = say or _quiet
        model = pathlib.Path(model)
        if not model.is_file():
            raise UserError(f"model {model} not found", hint="give an MLF archive (.tar) or a model file")
        token = token if token is not None else wire.client_token(token_file)
        options = dict(options or {})
        board = connect_board(tracker, key, queue_timeout=queue_timeout, session_timeout=session_timeout,
                              say=say)
        workdir = None
        try:
            facts = board.hello(token)
            record = facts.get("board") or {}
            say(f"got {board.where}: template {facts.get('template')}"
                + (f", board {record.get('name')}" if record.get("name") else ""))
            archive = model
            if not is_model_archive(model):
                workdir = pathlib.Path(tempfile.mkdtemp(prefix="utvm-farm-"))
                archive = _compile_for(model, workdir, record.get("target") or "c", say)
            say(f"uploading {archive.name} ({archive.stat().st_size:,} bytes)")
            board.upload(archive)
            for step, call in (("generating", board.generate), ("building", board.build),
                               ("flashing", board.flash)):
                say(f"{step} on the node...")
                call(options)
            board.open_transport(options)
            transport = FarmTransport(board)
        except BaseException:
            board.close()
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
            raise
        try:
            session = cls(transport, archive, project=board, owns_project=True, **kwargs)
        except BaseException:  # the session closed the board on its way out
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
            raise
        session._workdir, session._options, session.archive = workdir, options, archive
        return session

    @property
    def board(self) -> Optional[RemoteBoard]:
        return self.project

    def device_clock(self, options: Optional[Mapping[str, Any]] = None) -> DeviceClock:
        """How the board's timings read (cycles, instructions under QEMU -icount, or seconds), as for a
        local project: from the board record and options the node reported, with ``options`` on top."""
        board = self.project
        merged: Dict[str, Any] = dict(board.options) if board else {}
        merged.update(self._options or {})
        merged.update(options or {})
        name = self.info.board if self.info else None
        return device_clock(board.board if board else None, merged, name)

    def run_record(self, seed: int, inputs: Mapping[str, str],
                   options: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """The run's reproducibility record (host_driven.run_record) as far as the client and the
        node can tell: the archive and model hashes from here; the firmware hash, compiler and
        template options as the node reported them after its build; the board record the node
        serves (emulated or not), with ``key`` and ``node`` (its address) added. ``inputs`` says
        where each input came from."""
        board = self.project
        record = assemble_record(board.built if board else {}, self.archive, self.device_clock(options),
                                 board.board if board else None, seed, inputs)
        if board is not None:
            record["board"].update(key=board.key, node=board.address)
        return record

    def close(self) -> None:
        try:
            super().close()
        finally:
            workdir, self._workdir = self._workdir, None
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)


def _compile_for(model: pathlib.Path, workdir: pathlib.Path, target, say: Say) -> pathlib.Path:
    from utvm.model_library import compile as compile_model

    say(f"compiling {model} for the node's board (target {target})...")
    # The compile-time check runs here too (as for a local project); its steps are shown.
    return pathlib.Path(compile_model(model, workdir / "model.tar", target=target, check=True,
                                      progress=say))
