"""TVM's RPC server for a utvm board, run on the board by the board's own Python with TVM installed.

    python3 utvm_rpc_server.py [--host 127.0.0.1] [--port 9091] [--port-end 9199]
                               [--tracker HOST:PORT --key KEY] [--custom-addr ADDR]

This file is not part of the template's server: the Jetson template copies it to the board (over
SSH) or runs it under qemu-aarch64 (the emulated board), and it imports TVM there.

- The server runs in this process, from TVM's own code (tvm.rpc.server), without `python -m
  tvm.exec.rpc_server`: that one starts a worker by re-running its interpreter, which an emulated
  board cannot do where binfmt_misc is not mounted. Each client session is still served in a forked
  child, as TVM does it.
- Once it listens it prints one line on stdout, ``utvm-rpc-server listening on PORT``.
- It exits, with its session children, when its stdin reaches end of file: the process or SSH
  connection that started it is gone. A session child also dies with this process (Linux).
- Only TVM's runtime library is loaded (TVM_USE_RUNTIME_LIB=1), as a deployed board needs.
- It registers ``utvm.board_info`` (JSON: TVM version, machine, Python) for the client to report,
  and ``utvm.vm_profile``, the time of each kernel call of a Relax VM run, measured on the board.
"""

import argparse
import ctypes
import json
import multiprocessing
import multiprocessing.util
import os
import platform
import signal
import sys

os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
READY = "utvm-rpc-server listening on"
_PR_SET_PDEATHSIG = 1


def _die_with_parent(_owner) -> None:
    """Run in each forked session child: the kernel kills it when this server dies."""
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _board_info() -> str:
    import tvm

    return json.dumps({"tvm_version": tvm.__version__, "machine": platform.machine(),
                       "python": platform.python_version(), "system": platform.platform()})


def _vm_profile(vm_module, func_name: str, number: int) -> str:
    """Time every call the Relax VM makes while it runs func_name `number` times, here on the board
    (TVM's VM has no profiler of its own): JSON [[symbol, [ns per run...]], ...] in call order.
    The VM's own builtins (memory, shapes) are left out. Each time includes the instrument's few
    microseconds around the call."""
    import time

    runs = []

    def instrument(func, symbol, before_run, ret_value, *args):
        if before_run:
            runs[-1].append([symbol, time.perf_counter_ns()])
        else:
            for entry in reversed(runs[-1]):
                if entry[0] == symbol and len(entry) == 2:
                    entry.append(time.perf_counter_ns() - entry[1])
                    break
        return 0

    vm_module["set_instrument"](instrument)
    try:
        for _ in range(max(1, int(number))):
            runs.append([])
            vm_module["invoke_stateful"](func_name)
    finally:
        vm_module["set_instrument"](None)
    calls = [[e[0], []] for e in runs[0] if len(e) == 3 and not e[0].startswith("vm.builtin.")]
    for run in runs:
        timed = [e for e in run if len(e) == 3 and not e[0].startswith("vm.builtin.")]
        for call, entry in zip(calls, timed):
            call[1].append(entry[2])
    return json.dumps(calls)


def _parse_args(argv):
    parser = argparse.ArgumentParser(description="TVM's RPC server, in this process, for a utvm board")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9091, help="first port to try (default 9091)")
    parser.add_argument("--port-end", type=int, default=9199, help="end of the port range (exclusive)")
    parser.add_argument("--tracker", help="HOST:PORT of TVM's RPC tracker to register with")
    parser.add_argument("--key", default="", help="the key to register under at the tracker")
    parser.add_argument("--custom-addr", help="the address the tracker gives clients for this server")
    parser.add_argument("--cuda", action="store_true", help="register TVM's CUDA compiler callback")
    parser.add_argument("--verbose", action="store_true", help="TVM's server logs on stderr")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _parse_args(argv)
    import tvm_ffi
    from tvm.rpc import server as rpc_server

    tvm_ffi.register_global_func("utvm.board_info", _board_info, override=True)
    tvm_ffi.register_global_func("utvm.vm_profile", _vm_profile, override=True)
    if args.cuda:
        # TVM 0.27 compiles a library's CUDA kernels when it is loaded, through this callback
        # (NVRTC from the cuda-bindings package, or nvcc with TVM_CUDA_COMPILE_MODE=nvcc).
        import tvm.support.nvcc  # noqa: F401
    multiprocessing.util.register_after_fork(_die_with_parent, _die_with_parent)
    tracker = None
    if args.tracker:
        host, _, port = args.tracker.rpartition(":")
        tracker = (host, int(port))
    # TVM's server state, started here instead of in a re-launched interpreter (see the docstring).
    port = rpc_server._popen_start_rpc_server(
        args.host, args.port, args.port_end, tracker_addr=tracker, key=args.key,
        custom_addr=args.custom_addr, silent=not args.verbose)
    print(f"{READY} {port}", flush=True)
    # The raw descriptor, not sys.stdin: a forked session child must not inherit the lock a
    # buffered reader holds while it waits (multiprocessing closes sys.stdin in the child).
    try:
        while os.read(0, 65536):
            pass
    except OSError:
        pass
    for child in multiprocessing.active_children():
        child.kill()
    os._exit(0)  # TVM's listening thread never returns


if __name__ == "__main__":
    sys.exit(main())
