"""Bad models get clear errors naming the model and the problem; nothing is left half-written.
Also `utvm compile` (the CLI plug-in) prints the memory figures."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
from model_builders import build_onnx_model, make_small_tflite
from utvm import model_library as ml
from utvm.cli import compile_command as cli


def _compile_fails(model, tmp_path, pattern: str, **kwargs):
    output = tmp_path / "out" / "model.tar"
    with pytest.raises(ml.ModelError, match=pattern) as info:
        ml.compile(model, output, **kwargs)
    # nothing half-written: no archive, no temporary file beside it
    assert not output.exists()
    assert not output.parent.exists() or list(output.parent.iterdir()) == []
    return str(info.value)


def test_truncated_tflite(tmp_path):
    good = make_small_tflite(tmp_path / "good.tflite").read_bytes()
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(good[: len(good) // 2])
    message = _compile_fails(bad, tmp_path, "corrupt or truncated")
    assert str(bad) in message


def test_corrupt_tflite_and_empty_file(tmp_path):
    bad = tmp_path / "noise.tflite"
    bad.write_bytes(b"\x00\x01garbage that is no flatbuffer" * 3)
    assert str(bad) in _compile_fails(bad, tmp_path, "not a TFLite flatbuffer")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert str(empty) in _compile_fails(empty, tmp_path, "empty")


def test_truncated_onnx(tmp_path):
    good = build_onnx_model("conv", tmp_path / "conv.onnx").read_bytes()
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(good[: len(good) - 100])
    assert str(bad) in _compile_fails(bad, tmp_path, "corrupt or truncated ONNX")


def test_unknown_format(tmp_path):
    weird = tmp_path / "model.weights"
    weird.write_bytes(b"\x89HDF\r\n\x1a\n not a model utvm reads")
    message = _compile_fails(weird, tmp_path, "unknown model format")
    assert str(weird) in message
    with pytest.raises(ml.ModelError, match="unknown model format 'keras'"):
        ml.compile(weird, tmp_path / "x.tar", fmt="keras")


def test_unsupported_operator_is_named(tmp_path):
    model = build_onnx_model("unsupported_op", tmp_path / "celu.onnx")
    message = _compile_fails(model, tmp_path, "operator not supported")
    assert "Celu" in message and str(model) in message


def test_dynamic_shape(tmp_path):
    model = build_onnx_model("dynamic_shape", tmp_path / "dynamic.onnx")
    message = _compile_fails(model, tmp_path, "dynamic shape")
    assert "'x'" in message and str(model) in message
    # pinning the shape makes it compile
    library = ml.load(ml.compile(model, tmp_path / "pinned.tar", input_shapes={"x": [2, 8]}))
    assert library.inputs[0]["shape"] == [2, 8]


def test_model_without_inputs(tmp_path):
    model = build_onnx_model("no_inputs", tmp_path / "constant.onnx")
    assert str(model) in _compile_fails(model, tmp_path, "no inputs")


def test_missing_file_and_bad_option(tmp_path):
    _compile_fails(tmp_path / "absent.onnx", tmp_path, "no such model file")
    model = build_onnx_model("softmax", tmp_path / "softmax.onnx")
    _compile_fails(model, tmp_path, "unknown compile option", colour="blue")
    _compile_fails(model, tmp_path, "power of two", alignment=12)


def test_model_error_is_a_user_error():
    assert issubclass(ml.ModelError, ml.UserError) and issubclass(ml.ArchiveError, ml.UserError)
    err = ml.ModelError("m.onnx: broken", hint="fix it")
    assert err.hint == "fix it"


def _parser():
    parser = argparse.ArgumentParser(prog="utvm")
    cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_compile_prints_memory_figures(tmp_path, capsys, monkeypatch):
    from utvm.cli.common import PROGRESS_ENV, set_progress

    model = build_onnx_model("cnn", tmp_path / "cnn.onnx")
    output = tmp_path / "cnn.tar"
    args = _parser().parse_args(["compile", str(model), "-o", str(output), "--target", "cortex-m4"])
    set_progress(False)  # whatever an earlier command in this process asked for
    monkeypatch.setenv(PROGRESS_ENV, "1")  # captured stderr is no terminal: ask for the progress lines
    assert args.func(args) == 0
    captured = capsys.readouterr()
    library = ml.load(output)
    memory = library.memory
    for label, key in (
        ("arena", "arena_bytes"),
        ("workspace", "workspace_bytes"),
        ("constants", "constant_bytes"),
        ("I/O", "io_bytes"),
    ):
        assert f"{label}" in captured.out and f"{memory[key]:,} bytes" in captured.out
    assert f"arena/lower bound {memory['arena_to_lower_bound']:.3f}" in captured.out
    assert "lowering" in captured.err  # progress lines go to stderr
    assert library.metadata["target"] == {"kind": "c", "mcpu": "cortex-m4"}


def test_cli_json_and_user_errors(tmp_path, capsys):
    model = build_onnx_model("dynamic_shape", tmp_path / "dyn.onnx")
    output = tmp_path / "dyn.tar"
    args = _parser().parse_args(
        ["compile", str(model), "-o", str(output), "--input-shape", "x=1,8", "--json"]
    )
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["memory"]["arena_bytes"] == ml.load(output).memory["arena_bytes"]
    args = _parser().parse_args(["compile", str(model), "-o", str(tmp_path / "no.tar")])
    with pytest.raises(ml.UserError, match="dynamic shape"):
        args.func(args)
    args = _parser().parse_args(["compile", str(model), "-o", str(output), "--input-shape", "x"])
    with pytest.raises(ml.UserError, match="--input-shape"):
        args.func(args)


def test_a_missing_model_file_fails_before_tvm_is_imported(tmp_path):
    """A typo in the path costs nothing: no multi-second TVM import before the error."""
    code = (
        "import sys\n"
        "from utvm.model_library import compile as c\n"
        "from utvm.project_api.errors import UserError\n"
        "try:\n"
        "    c(sys.argv[1], sys.argv[2])\n"
        "except UserError as e:\n"
        "    print(e.hint)\n"
        "print('tvm' in sys.modules)\n"
    )
    args = [sys.executable, "-c", code, str(tmp_path / "typo.tflite"), str(tmp_path / "x.tar")]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    hint, tvm_imported = result.stdout.splitlines()
    assert "check the path" in hint
    assert tvm_imported == "False"
