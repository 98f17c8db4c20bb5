"""Templates and generated projects, each driven through its own Project API server.

    from utvm.project_api.project import TemplateProject

    with TemplateProject.from_directory("templates/host") as template:
        project = template.generate_project("model.tar", "out/proj", {"project_type": "host_driven"})
    with project:
        project.build()
        project.flash()

Any template works, utvm's or microTVM's: a server that keeps no record of the options it was
generated with (microTVM's templates) gets one kept by the client, so ``zephyr_base`` or
``arduino_cli_cmd`` need not be repeated on every later call.
"""

from __future__ import annotations

import pathlib
import shutil
from typing import Any, Dict, List, Mapping, Optional

from .client import ProjectAPIClient
from .errors import ProjectAPIError, UserError
from .options import ProjectOption
from .record import ProjectRecord, read_record, write_record
from .wire import SERVER_SCRIPT


def default_standalone_crt_dir() -> Optional[pathlib.Path]:
    """What ``generate_project`` sends as ``standalone_crt_dir`` when the caller names none: utvm's
    portable C runtime (``templates/runtime``: include/, src/, CMakeLists.txt), laid out as TVM's
    standalone CRT is, so that microTVM's templates, which copy those three items, get a real
    directory. utvm's own templates carry their runtime and ignore the param. None when utvm's
    runtime is not beside this package (a generated project's copy of the floor)."""
    runtime = pathlib.Path(__file__).resolve().parents[1] / "templates" / "runtime"
    return runtime if (runtime / "include").is_dir() else None


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

    @property
    def is_utvm_server(self) -> bool:
        """True when the server is built on utvm's server base (it lists utvm_extensions)."""
        return "utvm_extensions" in self.client.info

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
        standalone_crt_dir defaults to default_standalone_crt_dir().
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
        crt = pathlib.Path(standalone_crt_dir) if standalone_crt_dir else default_standalone_crt_dir()
        if crt is not None and not crt.is_dir():
            raise UserError(f"standalone CRT directory {crt} not found",
                            hint="name a TVM standalone CRT (include/, src/, CMakeLists.txt) that exists")
        options = self.prepare_options("generate_project", options)
        try:
            self.client.generate_project(mlf, crt, project_dir, options, timeout=timeout)
            if not (project_dir / SERVER_SCRIPT).is_file():
                raise ProjectAPIError(
                    f"template {self.directory} did not put a {SERVER_SCRIPT} into {project_dir}",
                    hint="a template's generate_project must copy its server into the project",
                )
            if read_record(project_dir) is None:
                # A server that keeps no record (microTVM's): keep the options for it.
                write_record(project_dir, ProjectRecord(
                    platform_name=str(self.info().get("platform_name")), options=dict(options),
                    written_by="client"))
        except KeyboardInterrupt:
            self.close()  # the server may still be writing into project_dir
            shutil.rmtree(project_dir, ignore_errors=True)
            raise
        except BaseException:
            shutil.rmtree(project_dir, ignore_errors=True)
            raise
        return GeneratedProject.from_directory(project_dir, **self.client_options)


class GeneratedProject(_ServedDirectory):
    """A generated project: it builds, flashes and opens the transport to the device.

    ``record`` is the project's record (None for a foreign project nobody recorded). When the
    client keeps the record (the server does not), the options saved there are added to each call
    that takes them, unless the call gives its own.
    """

    def __init__(self, client: ProjectAPIClient, client_options: Optional[Mapping[str, Any]] = None):
        super().__init__(client, client_options)
        self.record: Optional[ProjectRecord] = read_record(self.directory)

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

    @property
    def archive(self) -> Optional[pathlib.Path]:
        """The project's MLF archive, as its server reports it (server_info_query), else as its
        record names it."""
        reported = self.info().get("model_library_format_path")
        if reported:
            path = pathlib.Path(reported)
            return path if path.is_absolute() else self.directory / path
        return self.record.archive_path(self.directory) if self.record else None

    @property
    def platform_name(self) -> Optional[str]:
        return self.info().get("platform_name")

    @property
    def project_type(self) -> Optional[str]:
        """The project's type: the project_type it was generated with, when it has that option."""
        if self.record and self.record.project_type:
            return self.record.project_type
        for option in self.project_options:
            if option.name == "project_type" and option.default is not None:
                return str(option.default)  # a generated project reports its own value as default
        return None

    def prepare_options(self, method: str, options: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        """Validate and coerce options for method, with the client-kept saved options added."""
        return self.client.prepare_options(method, self._with_saved(method, options))

    def _with_saved(self, method: str, options: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        given = dict(options or {})
        if self.record is None or self.record.written_by != "client":
            return given  # our server base merges its own record
        takes = {o.name for o in self.project_options if method in o.methods}
        saved = {k: v for k, v in self.record.options.items() if k in takes and given.get(k) is None}
        return {**saved, **given}

    def build(self, options: Optional[Mapping[str, Any]] = None, timeout: Optional[float] = None) -> None:
        self.client.build(self.prepare_options("build", options), timeout=timeout)

    def flash(self, options: Optional[Mapping[str, Any]] = None, timeout: Optional[float] = None) -> None:
        self.client.flash(self.prepare_options("flash", options), timeout=timeout)

    def open_transport(
        self, options: Optional[Mapping[str, Any]] = None, timeout: Optional[float] = None
    ) -> Dict:
        """Open the device transport; returns ``{"timeouts": {...}}``."""
        return self.client.open_transport(self.prepare_options("open_transport", options), timeout=timeout)

    def close_transport(self, timeout: Optional[float] = None) -> None:
        self.client.close_transport(timeout=timeout)

    def read_transport(self, n: int, timeout_sec: Optional[float], timeout: Optional[float] = None) -> bytes:
        return self.client.read_transport(n, timeout_sec, timeout=timeout)

    def write_transport(
        self, data: bytes, timeout_sec: Optional[float], timeout: Optional[float] = None
    ) -> None:
        self.client.write_transport(data, timeout_sec, timeout=timeout)

    def call_extension(self, name: str, timeout: Optional[float] = None, **params) -> Any:
        """Call a utvm extension method the server declares; a clear error when it does not."""
        if not self.has_extension(name):
            raise UserError(f"{self.directory} ({self.platform_name}) does not offer {name}",
                            hint="its template does not support this; see `utvm info` for what it offers")
        return self.client.call(name, params, timeout)
