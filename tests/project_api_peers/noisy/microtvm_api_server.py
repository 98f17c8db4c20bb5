"""A server on utvm's server base that prints junk to stdout everywhere, and whose build spawns
processes that print, and one that tries to write into the reply channel."""

import json
import os
import shlex
import subprocess
import sys

from utvm.project_api import server

print('{"jsonrpc": "2.0", "id": 1, "result": "junk printed at import"}')
print("plain junk on stdout", flush=True)


def channel_fd():
    return int(sys.argv[sys.argv.index("--write-fd") + 1])


# A child told the channel's fd number tries to write a fake reply into it.
INTRUDER = """
import os, sys
try:
    os.write(int(sys.argv[1]), b'{"jsonrpc": "2.0", "id": 2, "result": "forged"}\\n')
    outcome = "wrote into the channel"
except OSError as e:
    outcome = "channel fd unusable: " + e.strerror
print("intruder:", outcome)
with open("intruder.log", "a") as f:
    f.write(outcome + "\\n")
"""


class NoisyHandler(server.ProjectAPIHandler):
    def server_info_query(self, tvm_version):
        print('{"jsonrpc": "2.0", "id": 1, "result": null}')
        return server.ServerInfo(
            "noisy", False, None, [server.ProjectOption("n", "int", default=1, optional=["build"])]
        )

    def generate_project(self, model_library_format_path, standalone_crt_dir, project_dir, options):
        raise NotImplementedError

    def build(self, options):
        print("build: junk on stdout\n" * 50, flush=True)
        subprocess.run(["sh", "-c", 'echo "{\\"jsonrpc\\": \\"2.0\\"}"; echo child stderr >&2'], check=True)
        os.system(f"{shlex.quote(sys.executable)} -c {shlex.quote(INTRUDER)} {channel_fd()}")
        subprocess.run([sys.executable, "-c", INTRUDER, str(channel_fd())], close_fds=False, check=True)
        with open("build.json", "w") as f:
            json.dump(options, f)

    def flash(self, options):
        print("flash junk")

    def open_transport(self, options):
        return server.TransportTimeouts(0, 1, 1)

    def close_transport(self):
        pass

    def read_transport(self, n, timeout_sec):
        print("read junk")
        return b"x" * n

    def write_transport(self, data, timeout_sec):
        print("write junk")

    def utvm_bad_result(self):
        """An extension whose result cannot be sent as JSON."""
        return {1, 2}

    def utvm_echo(self, value, times=1):
        print("echo junk")
        return [value] * times


if __name__ == "__main__":
    server.main(NoisyHandler())
