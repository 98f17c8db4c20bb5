"""What every `utvm` command shares: the -v flag, the -o KEY=VALUE argument, progress lines, and
where the built-in templates are."""

from __future__ import annotations

import argparse
import pathlib
import sys

from utvm.project_api.errors import UserError
from utvm.project_api.wire import SERVER_SCRIPT
from utvm.templates import builtin_templates

VERBOSE_HELP = "show tracebacks and every server's log"
QUIET_HELP = ("print results and errors only: no progress lines, and no build output echoed from the "
              "template's server (for scripts; an error still quotes the end of that output)")
_quiet = False


def set_quiet(quiet: bool) -> None:
    """--quiet for the whole command: progress() prints nothing and servers' output is not echoed."""
    global _quiet
    _quiet = bool(quiet)


def is_quiet() -> bool:
    """Whether --quiet was given."""
    return _quiet


def progress(message: str) -> None:
    """A progress line for a long step, on stderr so that stdout stays clean for data."""
    if not _quiet:
        print(message, file=sys.stderr, flush=True)


def shows_live_progress() -> bool:
    """Whether a progress bar redrawn in place suits stderr: a terminal, and no --quiet. In a pipe or
    a log file the redraws would only be noise."""
    return not _quiet and sys.stderr.isatty()


class CommandParser(argparse.ArgumentParser):
    """Subcommand parser that accepts --verbose after the subcommand too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("conflict_handler", "resolve")
        super().__init__(*args, **kwargs)
        self.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                          help=VERBOSE_HELP)
        self.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=QUIET_HELP)


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
