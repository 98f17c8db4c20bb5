"""TemplateProject / GeneratedProject on the example template: the whole flow, persisted options,
and the guarantees around generate_project."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from project_api_peers import EXAMPLE_TEMPLATE, copy_peer, make_mlf, read_calls
from utvm.cli.common import resolve_template
from utvm.project_api.client import RemoteServerError
from utvm.project_api.errors import UserError
from utvm.project_api.project import GeneratedProject, TemplateProject, open_directory
from utvm.project_api.record import RECORD_FILE
from utvm.templates import builtin_templates, template_path

pytestmark = pytest.mark.timeout(180)


def require_cc():
    if shutil.which("cc") is None:
        pytest.skip("cc not installed: the example template's build runs the host C compiler")


def generate(tmp_path, options=None, name="proj"):
    with TemplateProject.from_directory(template_path("example"), echo=False) as template:
        return template.generate_project(
            make_mlf(tmp_path / "model.tar"), tmp_path / name, options or {"app_name": "demo"}
        )


def test_example_is_a_builtin_template():
    assert builtin_templates()["example"].samefile(EXAMPLE_TEMPLATE)
    assert resolve_template("example").samefile(EXAMPLE_TEMPLATE)
    assert resolve_template(str(EXAMPLE_TEMPLATE)).samefile(EXAMPLE_TEMPLATE)


def test_resolve_template_errors_say_what_to_do(tmp_path):
    with pytest.raises(UserError, match="no template named 'nosuch'") as error:
        resolve_template("nosuch")
    assert "example" in error.value.hint
    with pytest.raises(UserError, match="not a template"):
        resolve_template(tmp_path)


def test_generate_build_flash_and_run(tmp_path):
    require_cc()
    project = generate(tmp_path, {"app_name": "demo", "verbose": "yes"})
    with project:
        info = project.info()
        assert info["is_template"] is False and info["platform_name"] == "example"
        assert info["model_library_format_path"] == str(tmp_path / "proj" / "model.tar")
        saved = json.loads((tmp_path / "proj" / RECORD_FILE).read_text())
        assert saved["platform_name"] == "example"
        assert saved["options"]["app_name"] == "demo" and saved["options"]["verbose"] is True
        # Built without repeating app_name: the project remembers it.
        project.build({"opt_level": "0"})
        project.flash()
    program = tmp_path / "proj" / "build" / "demo"
    output = subprocess.run([str(program)], capture_output=True, text=True, check=True).stdout
    assert "model tiny: 3 files in model.tar" in output
    assert "codegen/host/src/tiny.c" in output


def test_saved_options_are_the_defaults_and_can_be_overridden(tmp_path):
    require_cc()
    with generate(tmp_path, {"app_name": "first"}) as project:
        defaults = {o.name: o.default for o in project.project_options}
        assert defaults["app_name"] == "first" and defaults["opt_level"] == 2
        project.build({"app_name": "second", "compiler": "cc"})
    assert (tmp_path / "proj" / "build" / "second").is_file()
    assert not (tmp_path / "proj" / "build" / "first").exists()


def test_a_build_failure_is_a_remote_error_with_the_reason(tmp_path):
    require_cc()
    with generate(tmp_path) as project:
        with pytest.raises(RemoteServerError) as error:
            project.build({"extra_cflags": "-include no_such_header.h"})
        assert error.value.remote_type == "BuildError"
        assert "exited with code" in error.value.message and error.value.exit_code == 1
        project.build()  # the server is still serving


def test_generate_project_refuses_an_existing_directory(tmp_path):
    template_dir = copy_peer("spec_server", tmp_path)
    (tmp_path / "proj").mkdir()
    with TemplateProject.from_directory(template_dir, echo=False) as template:
        with pytest.raises(UserError, match="already exists"):
            template.generate_project(make_mlf(tmp_path / "m.tar"), tmp_path / "proj", {"board": "alpha"})
        with pytest.raises(UserError, match="not found"):
            template.generate_project(tmp_path / "missing.tar", tmp_path / "new", {"board": "alpha"})
    assert read_calls(template_dir) == ["server_info_query"]


def test_a_failed_generate_project_leaves_nothing_behind(tmp_path):
    template_dir = copy_peer("spec_server", tmp_path)
    with TemplateProject.from_directory(template_dir, echo=False) as template:
        with pytest.raises(RemoteServerError) as error:
            # This board makes the server fail after it has created the directory and copied into it.
            template.generate_project(make_mlf(tmp_path / "m.tar"), tmp_path / "proj", {"board": "broken"})
        assert error.value.remote_type == "RuntimeError"
    assert not (tmp_path / "proj").exists()


def test_a_malformed_archive_is_refused_before_anything_is_written(tmp_path):
    not_a_tar = tmp_path / "model.tar"
    not_a_tar.write_bytes(b"this is not a tar archive" * 100)
    with TemplateProject.from_directory(EXAMPLE_TEMPLATE, echo=False) as template:
        with pytest.raises(RemoteServerError) as error:
            template.generate_project(not_a_tar, tmp_path / "proj", {"app_name": "demo"})
        assert error.value.remote_type == "ArchiveError"
        assert "not a readable tar archive" in error.value.message
    assert not (tmp_path / "proj").exists()


def test_template_and_project_are_told_apart(tmp_path):
    generate(tmp_path).close()
    with pytest.raises(UserError, match="is a generated project, not a template"):
        TemplateProject.from_directory(tmp_path / "proj", echo=False)
    with pytest.raises(UserError, match="is a template, not a generated project"):
        GeneratedProject.from_directory(EXAMPLE_TEMPLATE, echo=False)
    with open_directory(tmp_path / "proj", echo=False) as served:
        assert isinstance(served, GeneratedProject)
    with open_directory(EXAMPLE_TEMPLATE, echo=False) as served:
        assert isinstance(served, TemplateProject)


def test_generated_project_is_self_contained(tmp_path):
    """A moved project keeps working: it carries its server, the server base and its options."""
    generate(tmp_path).close()
    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(tmp_path / "proj", moved)
    shutil.rmtree(tmp_path / "proj")
    with GeneratedProject.from_directory(moved, echo=False) as project:
        assert {o.name: o.default for o in project.project_options}["app_name"] == "demo"
        assert project.has_extension("utvm_loopback_stats")
        project.open_transport()
        project.write_transport(b"ping", 1.0)
        assert project.client.call("utvm_loopback_stats") == {"buffered": 4}
        assert project.read_transport(10, 1.0) == b"ping"
        client = project.client
    assert client.exit_code == 0  # closing hung up and the server exited by itself
