"""The `utvm` command line, run as a user runs it: a real process, real servers, real compilers."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile

import pytest
from project_api_peers import REPO_ROOT, make_mlf

pytestmark = pytest.mark.timeout(300)


def utvm(*args, cwd=REPO_ROOT):
    """Run `utvm ARGS...` and return the finished process (text stdout/stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "utvm.cli.main", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )


def require_cc():
    if shutil.which("cc") is None:
        pytest.skip("cc not installed: the example template's build runs the host C compiler")


def test_help_lists_the_core_commands():
    result = utvm("--help")
    assert result.returncode == 0
    for command in ("templates", "info", "create-project", "build", "flash"):
        assert command in result.stdout


def test_templates_lists_the_example():
    result = utvm("templates")
    assert result.returncode == 0
    assert any(line.startswith("example ") for line in result.stdout.splitlines())


@pytest.mark.parametrize("target", ["templates/example", "example"])
def test_info_on_a_template(target):
    result = utvm("info", target)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "platform:   example" in out and "kind:       template" in out
    assert "extensions: utvm_loopback_stats" in out
    assert "  generate_project:\n    app_name (str; required)\n        name of the program" in out
    assert "    opt_level (int; choices: 0, 1, 2, 3; default: 2)" in out
    assert "    warnings_as_errors (bool; default: True)" in out


def test_unknown_option_fails_before_the_server_sees_the_call(tmp_path):
    make_mlf(tmp_path / "model.tar")
    result = utvm(
        "--verbose",
        "create-project",
        REPO_ROOT / "templates/example",
        "model.tar",
        "proj",
        "-o",
        "app_name=x",
        "-o",
        "nosuch=1",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "error: unknown option 'nosuch'" in result.stderr
    assert "hint: valid options: app_name, compiler, extra_cflags, opt_level," in result.stderr
    assert not (tmp_path / "proj").exists()
    # With --verbose the server logs every request it receives: the query came, generate_project did not.
    assert "request server_info_query" in result.stderr
    assert "request generate_project" not in result.stderr


def test_errors_are_one_line_and_a_hint_without_traceback(tmp_path):
    make_mlf(tmp_path / "model.tar")
    cases = [
        (("create-project", "example", "model.tar", "proj", "-o", "opt_level=fast"), "expected an integer"),
        (("create-project", "example", "model.tar", "proj"), "generate_project needs option app_name"),
        (("create-project", "example", "missing.tar", "proj"), "model missing.tar not found"),
        (("create-project", "nosuch", "model.tar", "proj"), "no template named 'nosuch'"),
        (("info", "nosuch"), "no template named 'nosuch'"),
        (("build", "."), "has no microtvm_api_server.py"),
    ]
    for args, message in cases:
        result = utvm(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("error: ") and message in result.stderr, (args, result.stderr)
        assert "\nhint: " in result.stderr, args
        assert "Traceback" not in result.stderr, args
    assert not (tmp_path / "proj").exists()


def test_create_project_help_shows_the_templates_options():
    result = utvm("create-project", "example", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: utvm create-project TEMPLATE MODEL PROJECT_DIR")
    assert "options of template" in result.stdout
    assert "    app_name (str; required)" in result.stdout
    assert "    compiler (str; choices: cc, gcc, clang; default: cc)" in result.stdout


def test_the_whole_flow_as_a_new_user_runs_it(tmp_path):
    require_cc()
    make_mlf(tmp_path / "model.tar")
    # The progress lines show on a terminal; captured here through a pipe, --progress asks for them.
    result = utvm("--progress", "create-project", "example", "model.tar", "proj", "-o", "app_name=hello",
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "generating proj" in result.stderr and "next: utvm build proj" in result.stderr

    info = utvm("info", "proj", cwd=tmp_path)
    assert "kind:       generated project" in info.stdout
    assert "app_name (str; required; default: hello)" in info.stdout

    help_text = utvm("build", "proj", "--help", cwd=tmp_path).stdout
    assert help_text.index("  build:") < help_text.index("  generate_project:")

    # No -o app_name: the project remembers it. The compiler's command line is passed through.
    result = utvm("build", "proj", "-o", "verbose=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # In a pipe: no progress line, but the server's echoed build output still shows (no --quiet).
    assert "building" not in result.stderr and "-Werror src/main.c -o build/hello" in result.stderr
    ran = subprocess.run([str(tmp_path / "proj/build/hello")], capture_output=True, text=True, check=True)
    assert "model tiny: 3 files" in ran.stdout

    result = utvm("flash", "proj", cwd=tmp_path)
    assert result.returncode == 0 and "nothing to flash" in result.stderr

    result = utvm("build", "proj", "-o", "extra_cflags=-include no_such_header.h", cwd=tmp_path)
    assert result.returncode == 1
    assert "error: build failed: BuildError:" in result.stderr
    assert "no_such_header.h" in result.stderr  # the compiler's own message reached the user
    assert "Traceback" not in result.stderr

    verbose = utvm("--verbose", "build", "proj", "-o", "extra_cflags=-include no_such_header.h", cwd=tmp_path)
    assert "server-side traceback:" in verbose.stderr and "BuildError" in verbose.stderr

    result = utvm("create-project", "example", "model.tar", "proj", "-o", "app_name=x", cwd=tmp_path)
    assert result.returncode == 2 and "already exists" in result.stderr


def test_create_project_compiles_a_model_file_first(tmp_path):
    model = REPO_ROOT.parent / "shared" / "models" / "ad01_int8.tflite"
    if not model.is_file():
        pytest.skip(f"reference model {model.name} not found (../shared/models is absent)")
    result = utvm("create-project", "example", model, "proj", "-o", "app_name=ad01", "--progress",
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "compiling" in result.stderr
    with tarfile.open(tmp_path / "proj" / "model.tar") as tar:
        assert "metadata.json" in [m.name.lstrip("./") for m in tar.getmembers()]
    assert "ad01" in (tmp_path / "proj" / "src" / "main.c").read_text()


def test_output_cut_short_by_a_closed_pipe_is_not_an_error():
    """`utvm boards | head -1` must not print a BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "utvm.cli.main", "boards"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader goes away before the table is written out
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()
