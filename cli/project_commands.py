"""`utvm templates`, `utvm info`, `utvm create-project`, `utvm build` and `utvm flash`."""

from __future__ import annotations

import argparse
import ast
import pathlib
import sys
import tarfile
import tempfile
from typing import Optional

from utvm.project_api.client import DEFAULT_TIMEOUTS
from utvm.project_api.errors import UserError
from utvm.project_api.options import describe_options, parse_option_args
from utvm.project_api.project import GeneratedProject, TemplateProject, open_directory
from utvm.project_api.wire import SERVER_SCRIPT

from .common import add_option_argument, builtin_templates, is_quiet, progress, resolve_template

# The Project API method behind each project command, for its deadline and its options.
COMMAND_METHODS = {"create-project": "generate_project", "build": "build", "flash": "flash"}
# The template extension that resolves a board option into its record (and its TVM target).
RESOLVE_BOARD = "utvm_resolve_board"
# The template extension that says what to compile a model file into for the project: the MLF's C
# target and, for a project that runs TVM's own runtime, the runtime library to add.
MODEL_TARGETS = "utvm_model_targets"


def _add_option_args(parser: argparse.ArgumentParser, method: str) -> None:
    add_option_argument(parser, "a project option (repeatable); `--help` after the target lists them")
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS", help=f"deadline for {method} (default: the client's)"
    )
    parser.add_argument("-h", "--help", action="store_true",
                        help="show this help, and the options of the target")


def client_options(args, echo: bool = True) -> dict:
    """ProjectAPIClient settings from the command line: debug with -v, a deadline with --timeout."""
    options = {"debug": args.verbose, "echo": echo and not is_quiet()}
    method = COMMAND_METHODS.get(args.command)
    timeout = getattr(args, "timeout", None)
    if method and timeout is not None:
        if timeout <= 0:
            raise UserError(f"--timeout {timeout:g}: a deadline must be a positive number of seconds")
        # The server's first answer (server_info_query) comes under the same deadline.
        first = min(timeout, DEFAULT_TIMEOUTS["server_info_query"])
        options["timeouts"] = {method: timeout, "server_info_query": first}
    return options


def _print_command_help(args, target: Optional[str]) -> int:
    """argparse's help, then the options of the template or project named on the line."""
    args.parser.print_help()
    if not target:
        return 0
    path = resolve_template(target) if args.command == "create-project" else target
    with open_directory(path, **client_options(args, echo=args.verbose)) as served:
        kind = "template" if served.info().get("is_template") else "project"
        print(f"\noptions of {kind} {served.directory} (give them as -o NAME=VALUE):")
        print(describe_options(served.project_options, first=COMMAND_METHODS[args.command]))
    return 0


def _summary(script: pathlib.Path) -> str:
    # The first line of the server's docstring, read without running it (fast and side-effect free).
    try:
        doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8")))
    except (OSError, SyntaxError, UnicodeDecodeError):
        doc = None
    return doc.strip().splitlines()[0] if doc else str(script.parent)


def cmd_templates(args) -> int:
    templates = builtin_templates()
    if not templates:
        print("no built-in templates installed")
        return 0
    width = max(len(name) for name in templates)
    for name, path in templates.items():
        print(f"{name:<{width}}  {_summary(path / SERVER_SCRIPT)}")
    print("\nany directory with a microtvm_api_server.py also works as TEMPLATE", file=sys.stderr)
    return 0


def cmd_info(args) -> int:
    target = pathlib.Path(args.target)
    path = target if (target / SERVER_SCRIPT).is_file() else resolve_template(args.target)
    with open_directory(path, **client_options(args, echo=args.verbose)) as served:
        info = served.info()
        generated = not info.get("is_template")
        print(f"{served.directory}")
        print(f"  platform:   {info.get('platform_name')}")
        print(f"  kind:       {'generated project' if generated else 'template'}")
        if generated and info.get("model_library_format_path"):
            print(f"  model:      {info['model_library_format_path']}")
        if generated and served.record and served.record.board_name:
            print(f"  board:      {served.record.board_name}")
        print(f"  protocol:   {info.get('protocol_version')}")
        if info.get("utvm_extensions"):
            print(f"  extensions: {', '.join(info['utvm_extensions'])}")
        note = " (defaults are the values the project was generated with)" if generated else ""
        print(f"options by method, give them as -o NAME=VALUE{note}:")
        print(describe_options(served.project_options))
    return 0


def _is_mlf(path: pathlib.Path) -> bool:
    return path.suffix == ".tar" or tarfile.is_tarfile(path)


def _model_targets(template: TemplateProject, options: dict) -> dict:
    """What to compile a model file into: {"mlf_target": the C target of the archive,
    "runtime_library": None or how to build TVM's runtime library too}. The template says so
    (utvm_model_targets), else the target of the board it resolves; portable C when the template
    does not resolve boards (microTVM's templates) or takes no board."""
    if template.has_extension(MODEL_TARGETS):
        return template.client.call(MODEL_TARGETS, {"options": options})
    if not template.has_extension(RESOLVE_BOARD):
        return {"mlf_target": "c", "runtime_library": None}
    record = template.client.call(RESOLVE_BOARD, {"options": options})
    return {"mlf_target": (record or {}).get("target") or "c", "runtime_library": None}


def _compile_model(model: pathlib.Path, workdir: pathlib.Path, targets: dict, keep_inputs: bool = False
                   ) -> pathlib.Path:
    from utvm.model_library import add_runtime_library
    from utvm.model_library import compile as compile_model

    target = targets.get("mlf_target") or "c"
    progress(f"compiling {model} for target {target} (this can take a minute)...")
    # The compile-time check runs the archive's C against TVM's own build before anything is generated.
    archive = pathlib.Path(compile_model(model, workdir / "model.tar", target=target, check=True,
                                         preserve_inputs=keep_inputs, progress=progress))
    library = targets.get("runtime_library")
    if library:
        add_runtime_library(model, archive, library["target"], device=library.get("device") or "cpu",
                            gpu_tag=library.get("gpu_tag"), cc=library.get("cc") or "aarch64-linux-gnu-gcc",
                            progress=progress)
    return archive


def cmd_create_project(args) -> int:
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
    with TemplateProject.from_directory(resolve_template(args.template), **client_options(args)) as template:
        # Checked before any compile or call, so a typo costs nothing.
        options = template.prepare_options("generate_project", parse_option_args(args.options))
        with tempfile.TemporaryDirectory(prefix="utvm-compile-") as workdir:
            if _is_mlf(model):
                mlf = model
            else:
                # The MLPerf Tiny runner times N inferences on one loaded input: it needs it kept.
                keep_inputs = options.get("project_type") == "mlperftiny"
                targets = _model_targets(template, options)
                mlf = _compile_model(model, pathlib.Path(workdir), targets, keep_inputs)
            progress(f"generating {project_dir} from template {template.directory}...")
            project = template.generate_project(mlf, project_dir, options,
                                                standalone_crt_dir=args.standalone_crt)
        project.close()
    progress(f"created {project_dir}; next: utvm build {project_dir}")
    return 0


def _project_command(args, method: str, doing: str, note: str = "") -> int:
    if args.help:
        return _print_command_help(args, args.project)
    if not args.project:
        args.parser.error(f"{args.command} needs PROJECT_DIR")
    with GeneratedProject.from_directory(args.project, **client_options(args)) as project:
        options = project.prepare_options(method, parse_option_args(args.options))
        progress(f"{doing} {project.directory}{note}...")
        getattr(project, method)(options)
    progress(f"{method} done: {project.directory}")
    return 0


def cmd_build(args) -> int:
    return _project_command(args, "build", "building", " (this can take minutes)")


def cmd_flash(args) -> int:
    return _project_command(args, "flash", "flashing")


def register(subparsers) -> None:
    """Add the project commands to the `utvm` parser."""
    p = subparsers.add_parser("templates", help="list the built-in templates")
    p.set_defaults(func=cmd_templates)

    p = subparsers.add_parser("info", help="describe a template or a generated project and its options")
    p.add_argument("target", metavar="TEMPLATE_OR_PROJECT", help="template name, template dir or project dir")
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser(
        "create-project",
        help="generate a project from a template and a model",
        usage="utvm create-project TEMPLATE MODEL PROJECT_DIR [-o KEY=VALUE ...] [--timeout SECONDS] "
        "[--standalone-crt DIR]",
        add_help=False,
    )
    p.add_argument("template", metavar="TEMPLATE", help="template name (see `utvm templates`) or directory")
    p.add_argument("model", metavar="MODEL", nargs="?", help="MLF archive (.tar), or a model file to compile")
    p.add_argument("project_dir", metavar="PROJECT_DIR", nargs="?", help="new directory for the project")
    _add_option_args(p, "generate_project")
    p.add_argument(
        "--standalone-crt", metavar="DIR",
        help="the standalone_crt_dir sent to the template (microTVM's templates copy TVM's C runtime "
        "from it); default: utvm's runtime, which utvm's own templates carry anyway",
    )
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
