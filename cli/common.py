"""What every `utvm` command shares: the -v, -q and --progress flags, the -o KEY=VALUE argument,
progress lines (on a terminal, or forced), and where the built-in templates are."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from utvm.project_api.errors import UserError
from utvm.project_api.wire import SERVER_SCRIPT
from utvm.templates import builtin_templates

VERBOSE_HELP = "show tracebacks and every server's log"
QUIET_HELP = ("print results and errors only: no progress lines, and no build output echoed from the "
              "template's server (for scripts; an error still quotes the end of that output)")
PROGRESS_ENV = "UTVM_PROGRESS"
PROGRESS_HELP = ("show the progress lines (steps such as compiling, building, flashing, validating) even "
                 "when stderr is not a terminal, as in a CI log; also " + PROGRESS_ENV + "=1. Without it "
                 "they show on a terminal only; --quiet wins over it")
# A line on the progress channel that starts so is a note or a warning: it prints in a pipe too.
NOTICE_PREFIXES = ("note:", "warning:")
_quiet = False
_forced_progress = False


def set_quiet(quiet: bool) -> None:
    """--quiet for the whole command: progress() prints nothing and servers' output is not echoed."""
    global _quiet
    _quiet = bool(quiet)


def set_progress(forced: bool) -> None:
    """--progress for the whole command: progress lines even when stderr is a pipe or a file."""
    global _forced_progress
    _forced_progress = bool(forced)


def is_quiet() -> bool:
    """Whether --quiet was given."""
    return _quiet


def progress_forced() -> bool:
    """Whether --progress (or UTVM_PROGRESS=1) asks for progress lines wherever stderr goes."""
    return _forced_progress or os.environ.get(PROGRESS_ENV, "").strip().lower() in ("1", "yes", "true")


def shows_progress() -> bool:
    """Whether progress lines print: not with --quiet; on a terminal; elsewhere (a pipe, a log file)
    only when forced, so that a script reading the output sees results, warnings and errors alone."""
    return not _quiet and (sys.stderr.isatty() or progress_forced())


def shows_line(message: str) -> bool:
    """Whether a line of the progress channel prints: a note or warning (NOTICE_PREFIXES) unless
    --quiet, any other line when shows_progress()."""
    return not _quiet if message.startswith(NOTICE_PREFIXES) else shows_progress()


def progress(message: str) -> None:
    """A progress line for a long step, on stderr so that stdout stays clean for data; printed only
    when shows_line() (a note or warning among them prints in a pipe too)."""
    if shows_line(message):
        print(message, file=sys.stderr, flush=True)


def notice(message: str) -> None:
    """A warning or a note the user must read (a terminal or not), on stderr; --quiet silences it."""
    if not _quiet:
        print(message, file=sys.stderr, flush=True)


def shows_live_progress() -> bool:
    """Whether a progress bar redrawn in place suits stderr: a terminal, and no --quiet. In a pipe or
    a log file the redraws would only be noise (a forced progress prints the finished line only)."""
    return not _quiet and sys.stderr.isatty()


class CommandParser(argparse.ArgumentParser):
    """Subcommand parser that accepts --verbose after the subcommand too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("conflict_handler", "resolve")
        super().__init__(*args, **kwargs)
        self.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                          help=VERBOSE_HELP)
        self.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=QUIET_HELP)
        self.add_argument("--progress", action="store_true", default=argparse.SUPPRESS, help=PROGRESS_HELP)


def add_option_argument(parser: argparse.ArgumentParser, help: str = "a project option (repeatable)") -> None:
    """Add the repeatable ``-o KEY=VALUE`` argument (into ``args.options``; parse it with
    options.parse_option_args)."""
    parser.add_argument(
        "-o", "--option", dest="options", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def resolve_template(name_or_path) -> pathlib.Path:
    """A template directory from a built-in name or a path to a directory with a microtvm_api_server.py."""
    path = pathlib.Path(name_or_path).expanduser()
    if (path / SERVER_SCRIPT).is_file():
        return path.resolve()
    templates = builtin_templates()
    if str(name_or_path) in templates:
        return templates[str(name_or_path)]
    names = ", ".join(templates) or "(none installed)"
    if path.is_dir():
        raise UserError(
            f"{path} has no {SERVER_SCRIPT}, so it is not a template",
            hint=f"give a built-in template ({names}) or a directory holding a {SERVER_SCRIPT}",
        )
    raise UserError(
        f"no template named {name_or_path!r}, and no such directory",
        hint=f"built-in templates: {names}; a path to any directory with a {SERVER_SCRIPT} also works",
    )
