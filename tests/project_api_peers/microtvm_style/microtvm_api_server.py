"""A template that behaves as microTVM's own templates (TVM v0.18) do, written from what was seen when
utvm's client drove them; none of their code is here. It imports nothing from utvm.

What it does as they do:
- generate_project turns standalone_crt_dir into a path and copies the CRT's `include`, `src` and
  `CMakeLists.txt` from it (TVM's CRT host template does this, so a null dir breaks it);
- it keeps no record of its options: `build`, `flash` and `open_transport` need `sdk_dir` again
  (as TVM's Zephyr template needs `zephyr_base`, and Arduino's `arduino_cli_cmd`);
- it is launched through launch_microtvm_api_server.sh, which passes on only its first five
  arguments (as TVM's Zephyr and Arduino launch scripts do).
Every call is logged to calls.log beside this file.
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
IS_PROJECT = (HERE / "model.tar").exists()
NEEDS_SDK = ["build", "flash", "open_transport"]

OPTIONS = [
    {"name": "sdk_dir", "type": "str", "required": ["generate_project"] + NEEDS_SDK, "optional": [],
     "choices": None, "default": None, "help": "where the SDK is"},
    {"name": "project_type", "type": "str", "choices": ["host_driven"], "default": None,
     "required": ["generate_project"], "optional": [], "help": "kind of project"},
    {"name": "verbose", "type": "bool", "choices": None, "default": False, "required": [],
     "optional": ["build"], "help": "chatty"},
]


def log_call(method, params):
    with open(HERE / "calls.log", "a") as f:
        f.write(json.dumps({"method": method, "params": params}) + "\n")


def _need_sdk(options):
    if not options.get("sdk_dir"):
        raise ValueError("sdk_dir was not given")  # TVM's servers fail like this, with a KeyError or so


def server_info_query(tvm_version):
    return {"platform_name": "microtvm_style", "is_template": not IS_PROJECT,
            "model_library_format_path": "" if not IS_PROJECT else str(HERE / "model.tar"),
            "project_options": OPTIONS, "protocol_version": 1}


def generate_project(model_library_format_path, standalone_crt_dir, project_dir, options):
    crt = pathlib.Path(standalone_crt_dir)  # TypeError on None, as in TVM's templates
    project_dir = pathlib.Path(project_dir)
    project_dir.mkdir()
    for name in ("microtvm_api_server.py", "launch_microtvm_api_server.sh"):
        shutil.copy2(HERE / name, project_dir / name)
    shutil.copy2(model_library_format_path, project_dir / "model.tar")
    (project_dir / "crt").mkdir()
    for item in ("include", "CMakeLists.txt", "src"):
        if (crt / item).is_dir():
            shutil.copytree(crt / item, project_dir / "crt" / item)
        else:
            shutil.copy2(crt / item, project_dir / "crt" / item)


def build(options):
    _need_sdk(options)
    (HERE / "built.marker").write_text(json.dumps(options))


def flash(options):
    _need_sdk(options)


def open_transport(options):
    _need_sdk(options)
    return {"timeouts": None}


def close_transport():
    return None


def read_transport(n, timeout_sec):
    raise OSError("no device")


def write_transport(data, timeout_sec):
    base64.b85decode(data)


METHODS = {f.__name__: f for f in (server_info_query, generate_project, build, flash, open_transport,
                                   close_transport, read_transport, write_transport)}


def serve(inp, out):
    for line in inp:
        request = json.loads(line)
        method, params = request["method"], request.get("params", {})
        log_call(method, params)
        try:
            result = METHODS[method](**params)
            body = {"result": result}
        except Exception as e:
            body = {"error": {"code": -32000, "message": type(e).__name__,
                              "data": {"traceback": traceback.format_exc()}}}
        out.write((json.dumps(dict(jsonrpc="2.0", id=request["id"], **body)) + "\n").encode())
        out.flush()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--read-fd", type=int, required=True)
    parser.add_argument("--write-fd", type=int, required=True)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args()
    with open(HERE / "argv.log", "a") as f:
        f.write(json.dumps(sys.argv[1:]) + "\n")
    serve(os.fdopen(args.read_fd, "rb"), os.fdopen(args.write_fd, "wb"))
