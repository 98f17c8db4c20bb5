"""What a farm node and its clients agree on: the names of utvm's functions on a node, how a reply is
encoded, the address and token formats.

Every utvm function on a node returns bytes: a status byte, then the payload. Status 0 is success
(the payload is the function's raw bytes or a JSON document, as the function defines); status 1 is
an error, whose payload is JSON ``{"type", "message", "hint", "details"}``, re-raised on the client
as the matching utvm error. Errors travel in the reply rather than as exceptions through TVM's RPC,
which would flatten them into one string.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Optional, Tuple

from utvm.project_api.errors import UserError

# Raised when a node and a client disagree on these functions.
PROTOCOL_VERSION = 1
PREFIX = "utvm.farm."
HELLO, GENERATE, BUILD, FLASH = (PREFIX + name for name in ("hello", "generate", "build", "flash"))
OPEN, READ, WRITE, CLOSE, END = (PREFIX + name for name in ("open", "read", "write", "close", "end"))
FUNCTIONS = (HELLO, GENERATE, BUILD, FLASH, OPEN, READ, WRITE, CLOSE, END)

OK, ERROR = b"\x00", b"\x01"
# The archive a client uploads (TVM's upload) into the session's work directory.
ARCHIVE_NAME = "model.tar"
TOKEN_ENV = "UTVM_FARM_TOKEN"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def ok(payload: bytes = b"") -> bytes:
    return OK + payload


def ok_json(value: Any) -> bytes:
    return OK + json.dumps(value).encode("utf-8")


def error_reply(kind: str, message: str, hint: Optional[str] = None, details: Optional[str] = None,
                exit_code: Optional[int] = None) -> bytes:
    body = {"type": kind, "message": message, "hint": hint, "details": details, "exit_code": exit_code}
    return ERROR + json.dumps(body).encode("utf-8")


def split_reply(reply: bytes) -> Tuple[bool, bytes]:
    """(succeeded, payload) of a node's reply."""
    reply = bytes(reply)
    if not reply or reply[:1] not in (OK, ERROR):
        raise ValueError(f"not a utvm farm reply: {reply[:16]!r}")
    return reply[:1] == OK, reply[1:]


def parse_address(text: str, what: str = "--tracker") -> Tuple[str, int]:
    """(host, port) from 'HOST:PORT'."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"bad {what} address {text!r}", hint=f"write {what} HOST:PORT, e.g. 127.0.0.1:9190")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def read_token_file(path) -> str:
    """The token in a file: its first line, stripped; an empty or missing file is an error."""
    path = pathlib.Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot read the token file {path}: {err.strerror or err}",
                        hint="make one, e.g. `python3 -c 'import secrets; print(secrets.token_hex(32))' > "
                        "farm.token && chmod 600 farm.token`") from None
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise UserError(f"the token file {path} is empty", hint="put the shared token on its first line")
    return token


def client_token(token_file=None) -> str:
    """The token a client sends: from token_file, else the UTVM_FARM_TOKEN variable, else none ("")."""
    if token_file:
        return read_token_file(token_file)
    return os.environ.get(TOKEN_ENV, "")


