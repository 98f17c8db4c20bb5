"""The `utvm` command: the parser, and one line plus an exit code for every error.

Exit codes: 0 success, 2 a usage or input problem (bad option, missing file), 1 a failure of the
work itself (a build error, a server that died or hung), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import List, Optional

from utvm.project_api.errors import ServerError, UserError

from . import boards_command, compile_command, farm_command, project_commands, pty_command, run_command
from .common import PROGRESS_HELP, QUIET_HELP, VERBOSE_HELP, CommandParser, set_progress, set_quiet

COMMAND_MODULES = (compile_command, project_commands, run_command, pty_command, boards_command, farm_command)


def build_parser() -> argparse.ArgumentParser:
    """The `utvm` parser with every command."""
    parser = argparse.ArgumentParser(
        prog="utvm",
        description="microTVM's workflow on current Apache TVM: compile, generate, build, flash, run.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    parser.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    parser.add_argument("--progress", action="store_true", help=PROGRESS_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def _report(error: BaseException, verbose: bool) -> None:
    if verbose:
        traceback.print_exc()
        remote = getattr(error, "remote_traceback", None)
        if remote:
            print("server-side traceback:\n" + remote.rstrip(), file=sys.stderr)
    message = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
    print(f"error: {message}", file=sys.stderr)
    details = getattr(error, "details", None)
    if details:
        print("\n".join("  " + line for line in details.splitlines()), file=sys.stderr)
    hint = getattr(error, "hint", None)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    elif not verbose:
        print("hint: run with --verbose for the traceback", file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `utvm` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    args.verbose = bool(getattr(args, "verbose", False))
    args.quiet = bool(getattr(args, "quiet", False)) and not args.verbose
    set_quiet(args.quiet)
    set_progress(bool(getattr(args, "progress", False)))
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        _report(e, args.verbose)
        return e.exit_code
    except ServerError as e:  # transport errors from a server, outside any project command
        _report(e, args.verbose)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`utvm boards | head`): not an error. Point stdout at devnull so
        # the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
