"""The `utvm` command line: core project commands, plus subcommands that plug-in modules add.

A plug-in module exposes ``register(subparsers)``; each parser it adds calls
``set_defaults(func=handler)`` with ``handler(args) -> int``. Every subcommand accepts
``-v/--verbose`` (read it as ``args.verbose``). Plug-ins must import quickly: no TVM at module level.

Exit codes: 0 success, 2 a usage or input problem (bad option, missing file), 1 a failure of the
work itself (a build error, a server that died or hung), 130 interrupted.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import pathlib
import sys
import tarfile
import tempfile
import traceback
from typing import List, Optional

from .client import SERVER_SCRIPT
from .errors import UserError
from .options import describe_options, parse_option_args
from .server import ServerError

PLUGIN_MODULES = ("utvm.model_library.cli", "utvm.host_driven.cli", "utvm.boards.cli")

# The Project API method behind each project command, for its deadline and its options.
_COMMAND_METHODS = {"create-project": "generate_project", "build": "build", "flash": "flash"}
_VERBOSE_HELP = "show tracebacks and every server's log"


def progress(message: str) -> None:
    """A progress line for a long step, on stderr so that stdout stays clean for data."""
    print(message, file=sys.stderr, flush=True)


class _CommandParser(argparse.ArgumentParser):
    """Subcommand parser that accepts --verbose after the subcommand too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("conflict_handler", "resolve")
        super().__init__(*args, **kwargs)
        self.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP
        )


def add_option_argument(parser: argparse.ArgumentParser, help: str = "a project option (repeatable)") -> None:
    """Add the repeatable ``-o KEY=VALUE`` argument (into ``args.options``; parse it with
    options.parse_option_args). For plug-in commands that take project options too."""
    parser.add_argument(
        "-o", "--option", dest="options", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def _add_option_args(parser: argparse.ArgumentParser, method: str) -> None:
    add_option_argument(parser, "a project option (repeatable); `--help` after the target lists them")
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS", help=f"deadline for {method} (default: the client's)"
    )
    parser.add_argument(
        "-h", "--help", action="store_true", help="show this help, and the options of the target"
    )


def _client_options(args, echo: bool = True) -> dict:
    options = {"debug": args.verbose, "echo": echo}
    method = _COMMAND_METHODS.get(args.command)
    if method and getattr(args, "timeout", None):
        options["timeouts"] = {method: args.timeout}
    return options


def _print_command_help(args, target: Optional[str]) -> int:
    """argparse's help, then the options of the template or project named on the line."""
    from .project import open_directory, resolve_template

    args.parser.print_help()
    if not target:
        return 0
    path = resolve_template(target) if args.command == "create-project" else target
    with open_directory(path, **_client_options(args, echo=args.verbose)) as served:
        kind = "template" if served.info().get("is_template") else "project"
        print(f"\noptions of {kind} {served.directory} (give them as -o NAME=VALUE):")
        print(describe_options(served.project_options, first=_COMMAND_METHODS[args.command]))
    return 0


def cmd_templates(args) -> int:
    from .project import builtin_templates

    templates = builtin_templates()
    if not templates:
        print("no built-in templates installed")
        return 0
    width = max(len(name) for name in templates)
    for name, path in templates.items():
        print(f"{name:<{width}}  {_summary(path / SERVER_SCRIPT)}")
    print("\nany directory with a microtvm_api_server.py also works as TEMPLATE", file=sys.stderr)
    return 0


def _summary(script: pathlib.Path) -> str:
    # The first line of the server's docstring, read without running it (fast and side-effect free).
    try:
        doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8")))
    except (OSError, SyntaxError, UnicodeDecodeError):
        doc = None
    return doc.strip().splitlines()[0] if doc else str(script.parent)


def cmd_info(args) -> int:
    from .project import open_directory, resolve_template

    target = pathlib.Path(args.target)
    path = target if (target / SERVER_SCRIPT).is_file() else resolve_template(args.target)
    with open_directory(path, **_client_options(args, echo=args.verbose)) as served:
        info = served.info()
        generated = not info.get("is_template")
        print(f"{served.directory}")
        print(f"  platform:   {info.get('platform_name')}")
        print(f"  kind:       {'generated project' if generated else 'template'}")
        if generated and info.get("model_library_format_path"):
            print(f"  model:      {info['model_library_format_path']}")
        print(f"  protocol:   {info.get('protocol_version')}")
        if info.get("utvm_extensions"):
            print(f"  extensions: {', '.join(info['utvm_extensions'])}")
        note = " (defaults are the values the project was generated with)" if generated else ""
        print(f"options by method, give them as -o NAME=VALUE{note}:")
        print(describe_options(served.project_options))
    return 0


def _is_mlf(path: pathlib.Path) -> bool:
    return path.suffix == ".tar" or tarfile.is_tarfile(path)


def _board_target(options: dict):
    """The TVM target of ``-o board=NAME`` from the board database, or plain C for other boards."""
    name = options.get("board")
    if not name:
        return "c"
    from utvm.boards import get_board

    try:
        return get_board(str(name)).target
    except UserError:  # a board this database does not know (e.g. a foreign template's): portable C
        return "c"


def _compile_model(model: pathlib.Path, workdir: pathlib.Path, target) -> pathlib.Path:
    try:
        from utvm.model_library import compile as compile_model
    except ImportError as e:
        raise UserError(
            f"cannot compile {model}: the model compiler is not available ({e})",
            hint="give a Model Library Format archive (.tar) made with `utvm compile`",
        ) from e
    progress(f"compiling {model} for target {target} (this can take a minute)...")
    archive = compile_model(model, workdir / "model.tar", target=target, check=True, progress=progress)
    return pathlib.Path(archive)


def cmd_create_project(args) -> int:
    from .project import TemplateProject, resolve_template

    if args.help:
        return _print_command_help(args, args.template)
    if not args.model or not args.project_dir:
        args.parser.error("create-project needs TEMPLATE MODEL PROJECT_DIR")
    model = pathlib.Path(args.model)
    project_dir = pathlib.Path(args.project_dir)
    if not model.is_file():
        raise UserError(f"model {model} not found", hint="give an MLF archive (.tar) or a model file")
    if project_dir.exists():
        raise UserError(f"{project_dir} already exists", hint="give a new directory for the project")
    options = parse_option_args(args.options)
    with TemplateProject.from_directory(resolve_template(args.template), **_client_options(args)) as template:
        # Checked before any compile or call, so a typo costs nothing.
        template.prepare_options("generate_project", options)
        with tempfile.TemporaryDirectory(prefix="utvm-compile-") as workdir:
            if _is_mlf(model):
                mlf = model
            else:
                mlf = _compile_model(model, pathlib.Path(workdir), _board_target(options))
            progress(f"generating {project_dir} from template {template.directory}...")
            project = template.generate_project(mlf, project_dir, options)
        project.close()
    progress(f"created {project_dir}; next: utvm build {project_dir}")
    return 0


def _project_command(args, method: str, doing: str, note: str = "") -> int:
    from .project import GeneratedProject

    if args.help:
        return _print_command_help(args, args.project)
    if not args.project:
        args.parser.error(f"{args.command} needs PROJECT_DIR")
    options = parse_option_args(args.options)
    with GeneratedProject.from_directory(args.project, **_client_options(args)) as project:
        project.prepare_options(method, options)
        progress(f"{doing} {project.directory}{note}...")
        getattr(project, method)(options)
    progress(f"{method} done: {project.directory}")
    return 0


def cmd_build(args) -> int:
    return _project_command(args, "build", "building", " (this can take minutes)")


def cmd_flash(args) -> int:
    return _project_command(args, "flash", "flashing")


def build_parser() -> argparse.ArgumentParser:
    """The `utvm` parser with the core commands and every plug-in that is installed."""
    parser = argparse.ArgumentParser(
        prog="utvm",
        description="microTVM's workflow on current Apache TVM: compile, generate, build, flash, run.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)

    p = subparsers.add_parser("templates", help="list the built-in templates")
    p.set_defaults(func=cmd_templates)

    p = subparsers.add_parser("info", help="describe a template or a generated project and its options")
    p.add_argument("target", metavar="TEMPLATE_OR_PROJECT", help="template name, template dir or project dir")
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser(
        "create-project",
        help="generate a project from a template and a model",
        usage="utvm create-project TEMPLATE MODEL PROJECT_DIR [-o KEY=VALUE ...] [--timeout SECONDS]",
        add_help=False,
    )
    p.add_argument("template", metavar="TEMPLATE", help="template name (see `utvm templates`) or directory")
    p.add_argument("model", metavar="MODEL", nargs="?", help="MLF archive (.tar), or a model file to compile")
    p.add_argument("project_dir", metavar="PROJECT_DIR", nargs="?", help="new directory for the project")
    _add_option_args(p, "generate_project")
    p.set_defaults(func=cmd_create_project, parser=p)

    for name, func, what in (("build", cmd_build, "build"), ("flash", cmd_flash, "flash")):
        p = subparsers.add_parser(
            name,
            help=f"{what} a generated project",
            usage=f"utvm {name} PROJECT_DIR [-o KEY=VALUE ...] [--timeout SECONDS]",
            add_help=False,
        )
        p.add_argument("project", metavar="PROJECT_DIR", nargs="?", help="a generated project")
        _add_option_args(p, name)
        p.set_defaults(func=func, parser=p)

    for module_name in PLUGIN_MODULES:
        _register_plugin(module_name, subparsers)
    return parser


def _register_plugin(module_name: str, subparsers) -> None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        # Only a plug-in that is not there is skipped; a plug-in that fails to import is a bug to show.
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            return
        raise
    module.register(subparsers)


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
