"""Issue 16's reproducibility record: `utvm run --json` carries it, `--record` writes it, and
`--output OUT.npz` writes it beside the outputs (OUT.record.json). The same project and input give
the same hashes (also after a clean rebuild); a project generated with other `cflags` has another
firmware hash and the same archive. An aot_standalone project's run carries one too."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
from host_driven_helpers import cached_archive, run_cli, small_tflite_archive
from utvm.host_driven.run_record import without_time
from utvm.model_library import load


def cli(*args):
    result = run_cli(*args)
    assert result.returncode == 0, f"utvm {' '.join(map(str, args))}:\n{result.stdout}\n{result.stderr}"
    return result


def record_of(project, out):
    report = json.loads(cli("run", project, "--json", "--seed", "5", "--record", out).stdout)
    written = json.loads(out.read_text())
    assert written == report["record"]
    return written


def test_record_reproduces_and_follows_cflags(tmp_path_factory, tmp_path):
    from model_builders import make_small_tflite

    model = {}

    def build_model(workdir):
        model["path"] = make_small_tflite(workdir / "small.tflite", quantized=True)
        return model["path"]

    archive = cached_archive(tmp_path_factory, "small_int8_record", build_model)
    project = tmp_path / "proj"
    cli("create-project", "host", archive, project)
    cli("build", project)
    first = record_of(project, tmp_path / "r1.json")
    again = record_of(project, tmp_path / "r2.json")
    assert without_time(first) == without_time(again)

    assert first["firmware"]["path"] == "build/model_device"
    image = (project / "build/model_device").read_bytes()
    assert first["firmware"]["sha256"] == hashlib.sha256(image).hexdigest()
    assert first["archive"]["sha256"] == hashlib.sha256((project / "model.tar").read_bytes()).hexdigest()
    assert first["archive"]["model_hash"] == load(archive).model_hash
    assert first["model"]["sha256"] == hashlib.sha256(model["path"].read_bytes()).hexdigest()
    assert first["model"]["format"] == "tflite"
    assert first["versions"]["tvm"] and first["versions"]["utvm"]
    assert first["versions"]["compiler"]["version"], first["versions"]
    assert first["board"] == {"name": "host", "kind": "host", "emulated": False, "emulator": None}
    assert first["template"]["platform"] == "host" and first["template"]["options"]["cflags"] == ""
    assert first["seed"] == 5 and first["time"].endswith("+00:00")

    # A clean rebuild of the same project: the same image.
    shutil.rmtree(project / "build")
    cli("build", project)
    assert without_time(record_of(project, tmp_path / "r3.json")) == without_time(first)

    # The same project generated elsewhere: the same image (the debug info names no directory).
    elsewhere = tmp_path / "another" / "place"
    cli("create-project", "host", archive, elsewhere)
    cli("build", elsewhere)
    moved = record_of(elsewhere, tmp_path / "r5.json")
    assert moved["firmware"]["sha256"] == first["firmware"]["sha256"]
    assert str(tmp_path) not in (elsewhere / "build/model_device").read_bytes().decode("latin-1")

    # Another cflags: another image, the same archive and model.
    other = tmp_path / "proj_o1"
    cli("create-project", "host", archive, other, "-o", "cflags=-O1")
    cli("build", other)
    changed = record_of(other, tmp_path / "r4.json")
    assert changed["firmware"]["sha256"] != first["firmware"]["sha256"]
    assert changed["archive"] == first["archive"] and changed["model"] == first["model"]
    assert changed["template"]["options"]["cflags"] == "-O1"
    assert "-O1" in changed["versions"]["compiler"]["flags"]


def test_saved_outputs_carry_the_record_beside_them(tmp_path_factory, tmp_path):
    """--output OUT.npz writes OUT.record.json, the same record as --json's and --record's; the .npz
    holds the outputs alone, so a reader that takes every member for an output is not misled."""
    archive = small_tflite_archive(tmp_path_factory)
    project = tmp_path / "proj"
    cli("-q", "create-project", "host", archive, project)
    cli("-q", "build", project)
    out = tmp_path / "saved" / "out.npz"
    ran = cli("run", project, "--json", "--seed", "3", "--output", out, "--record", tmp_path / "r.json")
    report = json.loads(ran.stdout)
    sidecar = tmp_path / "saved" / "out.record.json"
    assert report["output_record"] == str(sidecar.resolve())
    written = json.loads((tmp_path / "r.json").read_text())
    assert json.loads(sidecar.read_text()) == report["record"] == written
    with np.load(out) as saved:
        assert sorted(saved.files) == sorted(report["outputs"])
    image = (project / "build/model_device").read_bytes()
    assert report["record"]["firmware"]["sha256"] == hashlib.sha256(image).hexdigest()
    assert report["record"]["seed"] == 3

    # Without --json the record is written all the same, and the line says where.
    plain = cli("run", project, "--seed", "3", "--output", tmp_path / "plain.npz")
    assert f"their record to {tmp_path / 'plain.record.json'}" in plain.stdout
    again = json.loads((tmp_path / "plain.record.json").read_text())
    assert without_time(again) == without_time(report["record"])


def test_an_aot_standalone_run_carries_a_record(tmp_path_factory, tmp_path):
    archive = small_tflite_archive(tmp_path_factory)
    project = tmp_path / "standalone"
    cli("-q", "create-project", "host", archive, project, "-o", "project_type=aot_standalone")
    cli("-q", "build", project)
    ran = cli("run", project, "--json", "--output", tmp_path / "o.npz", "--record", tmp_path / "r.json")
    report = json.loads(ran.stdout)
    record = report["record"]
    image = (project / "build/model_standalone").read_bytes()
    assert record["firmware"] == {"path": "build/model_standalone",
                                  "sha256": hashlib.sha256(image).hexdigest()}
    assert record["template"]["options"]["project_type"] == "aot_standalone"
    assert record["archive"]["sha256"] == hashlib.sha256((project / "model.tar").read_bytes()).hexdigest()
    assert json.loads((tmp_path / "o.record.json").read_text()) == record
    assert json.loads((tmp_path / "r.json").read_text()) == record
