"""A Project API version-1 server written only from the wire spec in DESIGN.md.

It imports nothing from utvm, so it stands for a template written for microTVM. It records
every method it is called with in calls.log (next to this file) so tests can see what arrived.
"""

import argparse
import base64
import json
import os
import pathlib
import shutil
import sys
import traceback

HERE = pathlib.Path(__file__).resolve().parent
IS_PROJECT = (HERE / "generated.marker").exists()

OPTIONS = [
    {
        "name": "board",
        "type": "str",
        "choices": ["alpha", "beta", "broken"],
        "default": None,
        "required": ["generate_project"],
        "optional": [],
        "help": "target board",
    },
    {
        "name": "jobs",
        "type": "int",
        "choices": None,
        "default": 1,
        "required": [],
        "optional": ["build"],
        "help": "parallel jobs",
    },
    {
        "name": "verbose",
        "type": "bool",
        "choices": None,
        "default": False,
        "required": [],
        "optional": ["build", "flash"],
        "help": "chatty",
    },
]


class IoTimeoutError(Exception):
    pass


class TransportClosedError(Exception):
    pass


class State:
    loopback = None


def log_call(method, params):
    with open(HERE / "calls.log", "a") as f:
        f.write(json.dumps({"method": method, "params": params}) + "\n")


def server_info_query(tvm_version):
    return {
        "platform_name": "spec",
        "is_template": not IS_PROJECT,
        "model_library_format_path": str(HERE / "model.tar") if IS_PROJECT else None,
        "project_options": OPTIONS,
        "protocol_version": 1,
    }


def generate_project(model_library_format_path, standalone_crt_dir, project_dir, options):
    project_dir = pathlib.Path(project_dir)
    project_dir.mkdir()
    shutil.copy(__file__, project_dir / "microtvm_api_server.py")
    shutil.copy(model_library_format_path, project_dir / "model.tar")
    if options.get("board") == "broken":
        raise RuntimeError("board 'broken' fails half-way through generate_project")
    (project_dir / "generated.marker").write_text(json.dumps(options))


def build(options):
    (HERE / "built.marker").write_text(json.dumps(options))


def flash(options):
    if not (HERE / "built.marker").exists():
        raise RuntimeError("not built")


def open_transport(options):
    State.loopback = bytearray()
    return {
        "timeouts": {
            "session_start_retry_timeout_sec": 2.0,
            "session_start_timeout_sec": 10.0,
            "session_established_timeout_sec": 20.0,
        }
    }


def close_transport():
    State.loopback = None


def read_transport(n, timeout_sec):
    if State.loopback is None:
        raise TransportClosedError("not open")
    if not State.loopback:
        raise IoTimeoutError("nothing to read")
    data = bytes(State.loopback[:n])
    del State.loopback[:n]
    return {"data": base64.b85encode(data).decode("ascii")}


def write_transport(data, timeout_sec):
    if State.loopback is None:
        raise TransportClosedError("not open")
    State.loopback += base64.b85decode(data)


METHODS = {
    f.__name__: f
    for f in (
        server_info_query,
        generate_project,
        build,
        flash,
        open_transport,
        close_transport,
        read_transport,
        write_transport,
    )
}


def reply(out, request_id, **body):
    out.write((json.dumps(dict(jsonrpc="2.0", id=request_id, **body)) + "\n").encode("utf-8"))
    out.flush()


def serve(read_fd, write_fd):
    inp = os.fdopen(read_fd, "rb")
    out = os.fdopen(write_fd, "wb")
    for line in inp:
        try:
            request = json.loads(line)
        except ValueError:
            reply(out, None, error={"code": -32700, "message": "parse error"})
            continue
        method = request.get("method")
        if method not in METHODS:
            reply(out, request.get("id"), error={"code": -32601, "message": "method not found"})
            continue
        log_call(method, request.get("params"))
        try:
            result = METHODS[method](**request.get("params", {}))
        except TypeError as e:
            reply(out, request.get("id"), error={"code": -32602, "message": str(e)})
        except Exception as e:
            # The spec: message is the exception class name, data.traceback the traceback.
            reply(
                out,
                request.get("id"),
                error={
                    "code": -32000,
                    "message": type(e).__name__,
                    "data": {"traceback": traceback.format_exc()},
                },
            )
        else:
            reply(out, request.get("id"), result=result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--read-fd", type=int, required=True)
    parser.add_argument("--write-fd", type=int, required=True)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args()
    print("spec server started", file=sys.stderr)
    serve(args.read_fd, args.write_fd)
