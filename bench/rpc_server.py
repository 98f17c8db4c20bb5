"""Child process for the TVM RPC peer: start `tvm.rpc.Server` on 127.0.0.1, print its port.

Run as ``python -m bench.rpc_server``. It serves until its stdin closes (the parent closed it or
died), then ends its whole process group. The parent starts it in its own session, so that group
is exactly the server and the workers it forks (`Server.terminate` needs psutil, which the TVM
wheel does not depend on).
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    from tvm import rpc

    server = rpc.Server(host="127.0.0.1", port=9091, port_end=9399, silent=True)
    print(server.port, flush=True)
    sys.stdin.read()
    os.killpg(os.getpgrp(), signal.SIGKILL)


if __name__ == "__main__":
    main()
