"""`utvm pty`: put a generated project's device on a serial device path, for tools that open one
(the MLPerf Tiny runner opens its device under test with pyserial's ``serial.Serial``).

    utvm pty PROJECT_DIR [-o KEY=VALUE ...] [--for SECONDS] [-- COMMAND ...]

The path goes to stdout, one line; notes go to stderr. For an emulated board or the POSIX host the
device starts behind a new pseudo-terminal; a physical board's own serial port is printed as it is.
The device runs until Ctrl-C, until --for seconds have passed, or until COMMAND (run with the path
in the environment variable UTVM_PTY) exits, whose exit code is then ours. If the device's link
ends first, the command says so and exits 1.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

from utvm.project_api.errors import UserError
from utvm.project_api.options import parse_option_args
from utvm.project_api.project import GeneratedProject

from .common import add_option_argument, notice, progress

OPEN_PTY = "utvm_open_pty"
PTY_STATUS = "utvm_pty_status"
ENV_VAR = "UTVM_PTY"
POLL_SEC = 0.5


def register(subparsers) -> None:
    """Add `pty` to the `utvm` command line."""
    p = subparsers.add_parser(
        "pty",
        help="put a project's device on a serial device path (the MLPerf Tiny runner's way in)",
        description="Start the device of a generated project (an mlperftiny project) behind a "
        "pseudo-terminal, or name a physical board's serial port, and print the path. The device "
        "runs until Ctrl-C, --for SECONDS, or the end of COMMAND, which gets the path in $UTVM_PTY.",
        usage="utvm pty PROJECT_DIR [-o KEY=VALUE ...] [--for SECONDS] [-- COMMAND ...]",
    )
    p.add_argument("project", metavar="PROJECT_DIR", help="a generated, built project")
    add_option_argument(p, help="a project option for opening the device (repeatable)")
    p.add_argument("--for", dest="duration", type=float, metavar="SECONDS",
                   help="stop the device after this many seconds")
    p.add_argument("command", nargs="*", metavar="COMMAND",
                   help="after --: a command to run with the path in $UTVM_PTY; the device stops when it "
                   "ends")
    p.set_defaults(func=cmd_pty)


def _link_problem(project) -> str:
    status = project.call_extension(PTY_STATUS)
    return "" if status.get("open") else (status.get("error") or "the device's link ended")


def cmd_pty(args) -> int:
    if args.duration is not None and not args.duration > 0:
        raise UserError(f"--for {args.duration:g}: give a positive number of seconds")
    project_dir = pathlib.Path(args.project)
    if not project_dir.is_dir():
        raise UserError(f"project {project_dir} not found", hint="make one with `utvm create-project ... "
                        "-o project_type=mlperftiny` and `utvm build`")
    options = parse_option_args(args.options)
    with GeneratedProject.from_directory(project_dir, debug=args.verbose) as project:
        if not project.has_extension(OPEN_PTY):
            raise UserError(f"{project.directory} cannot put its device on a serial device path",
                            hint="generate it from utvm's host or baremetal template with "
                            "-o project_type=mlperftiny")
        opened = project.call_extension(OPEN_PTY, options=project.prepare_options("open_transport", options))
        try:
            return _serve(args, project, opened)
        finally:
            project.close_transport()


def _serve(args, project, opened) -> int:
    path = opened["path"]
    if opened.get("note"):
        notice(f"note: {opened['note']}")
    print(path, flush=True)
    if opened.get("bridged"):
        progress(f"the device is on {path} until "
                 + ("the command ends" if args.command else "Ctrl-C" if args.duration is None else
                    f"{args.duration:g} s have passed"))
    deadline = None if args.duration is None else time.monotonic() + args.duration
    child = None
    if args.command:
        try:
            child = subprocess.Popen(args.command, env=dict(os.environ, **{ENV_VAR: path}))
        except OSError as err:
            raise UserError(f"cannot run {args.command[0]}: {err}") from None
    try:
        while True:
            if child is not None and child.poll() is not None:
                return child.returncode
            if deadline is not None and time.monotonic() >= deadline:
                return 0
            if opened.get("bridged"):
                problem = _link_problem(project)
                if problem:
                    print(f"error: {problem}", file=sys.stderr)
                    return 1
            time.sleep(POLL_SEC)
    finally:
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(5.0)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
