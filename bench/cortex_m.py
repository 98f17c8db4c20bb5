"""The Cortex-M section: instructions per inference and per layer under QEMU (`-icount shift=0`)
on mps2_an385 (Cortex-M3), mps2_an386 (M4F) and mps2_an500 (M7), at -Os and -O2, with
CMSIS-NN's count for the same layers beside utvm's when the user passes `--cmsis-nn DIR`.

utvm's figures come through the user's path: the model compiled by model_library, a project
generated and built from the `baremetal` template (build option `cflags`), the device's own
clock read by the host-driven executor (profile: every kernel on its own; run: the whole model).
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path
from typing import Optional

BOARDS = ("mps2_an385", "mps2_an386", "mps2_an500")
OPTIMIZATIONS = ("-Os", "-O2")
# Issue 14's goals: utvm / CMSIS-NN instructions on the layers both run.
GOALS = {"cortex-m3": 1.2, "cortex-m4": 1.0, "cortex-m7": 1.0}


def _compile(model: Path, board: str, workdir: Path) -> Path:
    """The archive for the board's CPU (as `utvm create-project` compiles a model file)."""
    from utvm.boards.database import get_board
    from utvm.model_library import compile_model

    target = get_board(board).target
    return Path(compile_model(model, workdir / f"{model.stem}-{board}.tar", target, model_name=model.stem))


def utvm_counts(archive: Path, board: str, cflags: str, workdir: Path, inputs: list) -> dict:
    """{"total": instructions per inference, "layers": {kernel index: (name, instructions)}}."""
    from utvm.host_driven.device_clock import project_device_clock
    from utvm.host_driven.executor import Session
    from utvm.project_api.project import TemplateProject
    from utvm.templates import template_path

    project_dir = workdir / f"{archive.stem}-{board}{cflags}"
    with TemplateProject.from_directory(template_path("baremetal"), echo=False) as template:
        with template.generate_project(archive, project_dir, {"board": board}) as project:
            project.build({"cflags": cflags})
            project.flash({})
    clock = project_device_clock(project_dir)
    with Session.from_project(project_dir, model=archive, run_timeout=600.0, timeout=30.0) as session:
        for index, array in enumerate(inputs):
            session.set_input(index, array)
        total = clock.count(session.run())
        report = session.profile(number=1, repeat=1, warmup=0)
    return {"total": total, "layers": {r.index: (r.name, clock.count(r.mean)) for r in report.rows}}


def measure(models: list, cmsis_dir: Optional[Path], errors: dict, run_section, progress=print) -> dict:
    """{model: {board: {cflags: {"cpu", "utvm": ..., "cmsis_nn": {index: instructions}}}}}."""
    from . import cmsis_nn_peer

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="utvm-bench-cortex-m-") as tmp:
        workdir = Path(tmp)
        for model in models:
            name = model.stem
            layers = None
            if cmsis_dir is not None:
                layers = run_section(f"{name} CMSIS-NN layers", partial(cmsis_nn_peer.model_layers, model),
                                     errors)
            for board_name in BOARDS:
                archive = run_section(f"{name} compile for {board_name}",
                                      partial(_compile, model, board_name, workdir), errors)
                if archive is None:
                    continue
                for cflags in OPTIMIZATIONS:
                    progress(f"  cortex-m: {name} on {board_name} {cflags}")
                    build = (model, archive, layers, board_name, cflags)
                    row = _measure_build(build, cmsis_dir, workdir, errors, run_section)
                    results.setdefault(name, {}).setdefault(board_name, {})[cflags] = row
    return results


def _measure_build(build: tuple, cmsis_dir, workdir: Path, errors: dict, run_section) -> dict:
    """utvm's and CMSIS-NN's counts for one (model, archive, layers, board, cflags)."""
    from utvm.boards.database import get_board

    from . import cmsis_nn_peer, model_peers

    model, archive, layers, board_name, cflags = build
    board = get_board(board_name)
    inputs = model_peers.random_inputs(model, seed=0)
    label = f"{model.stem} {board_name} {cflags}"
    row = {"cpu": board.cpu}
    row["utvm"] = run_section(f"utvm {label}",
                              partial(utvm_counts, archive, board_name, cflags, workdir, inputs), errors)

    def peer():
        library = cmsis_nn_peer.build_library(cmsis_dir, board, cflags, workdir)
        peer_dir = workdir / f"peer-{model.stem}-{board_name}{cflags}"
        elf = cmsis_nn_peer.build_peer(layers, library, cmsis_dir, board, cflags, peer_dir)
        return cmsis_nn_peer.run_peer(elf, board)

    if layers:
        row["cmsis_nn"] = run_section(f"CMSIS-NN {label}", peer, errors)
    return row


def summarize(results: dict) -> dict:
    """Per model, board and flags: utvm's total, utvm and CMSIS-NN on the layers both run, the ratio."""
    out: dict = {}
    for name, boards in results.items():
        for board, flags in boards.items():
            for cflags, row in flags.items():
                utvm = row.get("utvm")
                peer = row.get("cmsis_nn")
                entry = {"cpu": row["cpu"], "utvm_total": utvm["total"] if utvm else None}
                if utvm and peer:
                    ours = sum(utvm["layers"][i][1] for i in peer if i in utvm["layers"])
                    theirs = sum(peer.values())
                    entry.update(utvm_layers=ours, cmsis_nn_layers=theirs, goal=GOALS.get(row["cpu"]),
                                 ratio=ours / theirs if theirs else None)
                out.setdefault(name, {}).setdefault(board, {})[cflags] = entry
    return out


def layer_rows(results: dict, model: str, board: str, cflags: str) -> list:
    """(index, name, utvm instructions, CMSIS-NN instructions or None) per layer of one build."""
    row = results[model][board][cflags]
    utvm, peer = row.get("utvm") or {"layers": {}}, row.get("cmsis_nn") or {}
    return [(i, name, count, peer.get(i)) for i, (name, count) in sorted(utvm["layers"].items())]
