"""Templates and generated projects, each driven through its own Project API server.

with TemplateProject.from_name("host") as template:
    project = template.generate_project("model.tar", "out/proj", {"board": "host"})
with project:
    project.build()
    project.flash()
"""

from __future__ import annotations

import pathlib
import shutil
from typing import Any, Dict, List, Mapping, Optional

from .client import SERVER_SCRIPT, ProjectAPIClient
from .errors import ProjectAPIError, UserError
from .server import ProjectOption


def templates_dir() -> pathlib.Path:
    """The directory of the built-in templates (the ``utvm.templates`` package)."""
    import utvm.templates

    return pathlib.Path(utvm.templates.__file__).resolve().parent


def builtin_templates() -> Dict[str, pathlib.Path]:
    """Built-in template names and directories: the subdirectories holding a microtvm_api_server.py."""
    root = templates_dir()
    return {p.name: p for p in sorted(root.iterdir()) if (p / SERVER_SCRIPT).is_file()}


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


class _ServedDirectory:
    """A directory with a running Project API server; shared by templates and projects."""

    def __init__(self, client: ProjectAPIClient, client_options: Optional[Mapping[str, Any]] = None):
        self.client = client
        # Kept so that a template hands the same settings to the projects it generates.
        self.client_options = dict(client_options or {})

    @classmethod
    def _launch(cls, path, **client_options) -> ProjectAPIClient:
        client = ProjectAPIClient(path, **client_options)
        try:
            client.server_info_query()
        except BaseException:
            client.close()
            raise
        return client

    @property
    def directory(self) -> pathlib.Path:
        return self.client.directory

    def info(self) -> Dict[str, Any]:
        """The server_info_query reply: platform_name, is_template, project_options, ..."""
        return self.client.info

    @property
    def project_options(self) -> List[ProjectOption]:
        return self.client.project_options

    def prepare_options(self, method: str, options: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        """Validate and coerce options for method without calling the server."""
        return self.client.prepare_options(method, options)

    def has_extension(self, name: str) -> bool:
        return self.client.has_extension(name)

    def close(self) -> None:
        """Stop the server."""
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_directory(path, **client_options):
    """A TemplateProject or a GeneratedProject, whichever the server in path says it is."""
    client = _ServedDirectory._launch(path, **client_options)
    cls = TemplateProject if client.info.get("is_template") else GeneratedProject
    return cls(client, client_options)


class TemplateProject(_ServedDirectory):
    """A template: it generates projects."""

    @classmethod
    def from_directory(cls, path, **client_options) -> TemplateProject:
        """Launch the template server in path; client_options go to ProjectAPIClient (debug, echo...)."""
        client = cls._launch(path, **client_options)
        if not client.info.get("is_template"):
            client.close()
            raise UserError(
                f"{client.directory} is a generated project, not a template",
                hint=f"build it with `utvm build {client.directory}`",
            )
        return cls(client, client_options)

    @classmethod
    def from_name(cls, name: str, **client_options) -> TemplateProject:
        """A built-in template by name, or a template directory."""
        return cls.from_directory(resolve_template(name), **client_options)

    def generate_project(
        self,
        model_library_format_path,
        project_dir,
        options: Optional[Mapping[str, Any]] = None,
        *,
        standalone_crt_dir=None,
        timeout: Optional[float] = None,
    ) -> GeneratedProject:
        """Create project_dir from an MLF archive and return it as a GeneratedProject.

        project_dir must not exist. If the server fails, nothing is left at project_dir.
        """
        mlf = pathlib.Path(model_library_format_path)
        project_dir = pathlib.Path(project_dir).resolve()
        if not mlf.is_file():
            raise UserError(
                f"model archive {mlf} not found", hint="make one with `utvm compile MODEL -o model.tar`"
            )
        if project_dir.exists():
            raise UserError(
                f"{project_dir} already exists",
                hint="generate_project creates the directory: give a new path, or remove the old project",
            )
        options = self.prepare_options("generate_project", options)
        try:
            self.client.generate_project(mlf, standalone_crt_dir, project_dir, options, timeout=timeout)
            if not (project_dir / SERVER_SCRIPT).is_file():
                raise ProjectAPIError(
                    f"template {self.directory} did not put a {SERVER_SCRIPT} into {project_dir}",
                    hint="a template's generate_project must copy its server into the project",
                )
        except KeyboardInterrupt:
            self.close()  # the server may still be writing into project_dir
            shutil.rmtree(project_dir, ignore_errors=True)
            raise
        except BaseException:
            shutil.rmtree(project_dir, ignore_errors=True)
            raise
        return GeneratedProject.from_directory(project_dir, **self.client_options)


class GeneratedProject(_ServedDirectory):
    """A generated project: it builds, flashes and opens the transport to the device."""

    @classmethod
    def from_directory(cls, path, **client_options) -> GeneratedProject:
        """Launch the project's own server. client_options go to ProjectAPIClient."""
        client = cls._launch(path, **client_options)
        if client.info.get("is_template"):
            client.close()
            raise UserError(
                f"{client.directory} is a template, not a generated project",
                hint=f"make a project with `utvm create-project {client.directory} MODEL PROJECT_DIR`",
            )
        return cls(client, client_options)

    def build(self, options: Optional[Mapping[str, Any]] = None, timeout: Optional[float] = None) -> None:
        self.client.build(options, timeout=timeout)

    def flash(self, options: Optional[Mapping[str, Any]] = None, timeout: Optional[float] = None) -> None:
        self.client.flash(options, timeout=timeout)

    def open_transport(
        self, options: Optional[Mapping[str, Any]] = None, timeout: Optional[float] = None
    ) -> Dict:
        """Open the device transport; returns ``{"timeouts": {...}}``."""
        return self.client.open_transport(options, timeout=timeout)

    def close_transport(self, timeout: Optional[float] = None) -> None:
        self.client.close_transport(timeout=timeout)

    def read_transport(self, n: int, timeout_sec: Optional[float], timeout: Optional[float] = None) -> bytes:
        return self.client.read_transport(n, timeout_sec, timeout=timeout)

    def write_transport(
        self, data: bytes, timeout_sec: Optional[float], timeout: Optional[float] = None
    ) -> None:
        self.client.write_transport(data, timeout_sec, timeout=timeout)
