"""A server that misbehaves on purpose, as chosen by UTVM_TEST_MODE. Standalone, spec-level.

Modes: hang-at-start, die-at-start, and for the build call: hang (ignoring SIGTERM), die,
garbage (a line that is not JSON), wrong-id, die-leaking-channel (exits while a child process
keeps the reply pipe open).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

MODE = os.environ.get("UTVM_TEST_MODE", "")


def info():
    return {
        "platform_name": "misbehaving",
        "is_template": False,
        "model_library_format_path": None,
        "project_options": [],
        "protocol_version": 1,
    }


def misbehave_in_build(out, request_id, write_fd):
    print(f"misbehaving server: mode {MODE}", file=sys.stderr, flush=True)
    if MODE == "hang":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("hanging in build now", file=sys.stderr, flush=True)
        time.sleep(3600)
    elif MODE == "die":
        print("fatal: simulated crash in build", file=sys.stderr, flush=True)
        os._exit(3)
    elif MODE == "garbage":
        out.write(b"this is not JSON at all\n")
        out.flush()
    elif MODE == "wrong-id":
        out.write((json.dumps({"jsonrpc": "2.0", "id": request_id + 100, "result": None}) + "\n").encode())
        out.flush()
    elif MODE == "die-leaking-channel":
        os.set_inheritable(write_fd, True)
        subprocess.Popen(
            ["sleep", "30"], close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        print("fatal: exiting with a child holding the channel", file=sys.stderr, flush=True)
        os._exit(4)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--read-fd", type=int, required=True)
    parser.add_argument("--write-fd", type=int, required=True)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args()
    if MODE == "hang-at-start":
        time.sleep(3600)
    if MODE == "die-at-start":
        print("ImportError: simulated missing dependency", file=sys.stderr, flush=True)
        sys.exit(5)
    inp = os.fdopen(args.read_fd, "rb")
    out = os.fdopen(args.write_fd, "wb")
    for line in inp:
        request = json.loads(line)
        if request["method"] == "build":
            misbehave_in_build(out, request["id"], args.write_fd)
            continue
        result = info() if request["method"] == "server_info_query" else None
        out.write((json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}) + "\n").encode())
        out.flush()


if __name__ == "__main__":
    main()
