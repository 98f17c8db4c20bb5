"""What template servers share beyond the protocol: their server_info reply, step logs, and the
small text renderer that fills in generated build files.

The renderer is deliberately tiny, so that generation needs only the standard library: a template
file holds ``@name@`` placeholders, each replaced by a string the template computed (lists joined,
numbers formatted, values checked). Every placeholder must be given a value, so a typo fails at
generation instead of leaving ``@board@`` in a Makefile.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import shutil
import subprocess
from typing import Any, Dict, List, Mapping, Sequence

from .errors import BuildError
from .options import ProjectOption
from .record import read_record
from .server import ServerInfo

_PLACEHOLDER = re.compile(r"@([a-z][a-z0-9_]*)@")


def template_server_info(server_dir, platform_name: str, project_options: List[ProjectOption]) -> ServerInfo:
    """The server_info_query reply of a template that copies itself into the projects it makes: a
    template until a project record is beside the server, then a project whose MLF copy is the
    record's archive."""
    record = read_record(server_dir)
    archive = record.archive_path(server_dir) if record else None
    return ServerInfo(
        platform_name=platform_name,
        is_template=record is None,
        model_library_format_path=str(archive) if archive else None,
        project_options=project_options,
    )


def log_step(options: Mapping[str, Any], platform_name: str, text: str) -> None:
    """Print one step of a handler's work on the server's stdout (a log, not the channel) when the
    call's ``verbose`` option is set."""
    if options.get("verbose"):
        print(f"{platform_name}: {text}", flush=True)


def run_make(project_dir: pathlib.Path, variables: Sequence[str], options: Mapping[str, Any],
             platform_name: str) -> None:
    """Run the project's make with ``variables`` (``NAME=value`` arguments) on up to 8 jobs; a
    missing make or a failed build is a BuildError. make's output goes to the server's own stdout
    and stderr, which the client shows to the user."""
    make = shutil.which("make")
    if make is None:
        raise BuildError("make not found on PATH; install it (Debian: apt-get install make)")
    command = [make, *variables, "-j", str(min(os.cpu_count() or 1, 8))]
    log_step(options, platform_name, " ".join(shlex.quote(c) for c in command))
    result = subprocess.run(command, cwd=project_dir, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise BuildError(f"make exited with code {result.returncode}; the compiler's output is above")


def io_lines(entries) -> str:
    """A README's list of an archive's inputs or outputs: one line per tensor, name, dtype and shape."""
    return "".join(f"- `{t['name']}`: {t['dtype']} {t['shape']}\n" for t in entries)


def render_text(text: str, values: Mapping[str, str], source: str = "template", multiline=()) -> str:
    """text with every ``@name@`` replaced by values[name]; a placeholder without a value is a
    ValueError naming it. A value may span lines only when its name is in ``multiline``: a newline
    that reached a Makefile, a linker script or a C line would start a line of its own."""
    missing = sorted(set(_PLACEHOLDER.findall(text)) - set(values))
    if missing:
        raise ValueError(f"{source}: placeholders without values: {', '.join(missing)}")
    for name, value in values.items():
        if name not in multiline and any(c in str(value) for c in "\r\n\0"):
            raise ValueError(f"{source}: the value of @{name}@ holds a line break: {str(value)[:80]!r}")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


def render_file(template: pathlib.Path, dest: pathlib.Path, values: Dict[str, str],
                multiline=()) -> pathlib.Path:
    """Render the template file into dest (parents created); returns dest."""
    text = render_text(pathlib.Path(template).read_text(encoding="utf-8"), values, str(template), multiline)
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text, encoding="utf-8")
    return dest


def runtime_files(runtime_dir: pathlib.Path) -> Dict[str, Any]:
    """The device runtime's file lists (runtime_files.json in the runtime directory)."""
    import json

    return json.loads((pathlib.Path(runtime_dir) / "runtime_files.json").read_text(encoding="utf-8"))


def copy_runtime(runtime_dir: pathlib.Path, dest: pathlib.Path, ports=()) -> Dict[str, Any]:
    """Copy the device runtime's sources and headers, and those of the named ports ("posix"),
    from runtime_dir into dest; returns the file lists (paths relative to dest)."""
    runtime_dir, dest = pathlib.Path(runtime_dir), pathlib.Path(dest)
    files = runtime_files(runtime_dir)
    sources = list(files["sources"]) + [s for port in ports for s in files[f"{port}_sources"]]
    includes = list(files["includes"]) + [i for port in ports for i in files[f"{port}_includes"]]
    for rel in sources:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(runtime_dir / rel, dest / rel)
    for rel in includes:
        shutil.copytree(runtime_dir / rel, dest / rel, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.c"))
    return dict(files, copied_sources=sources, copied_includes=includes)
