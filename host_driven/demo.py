"""`utvm demo` (and `make demo`): the whole flow on the POSIX host, with a model it builds itself.

Relax model -> model_library.compile -> host template project -> build -> host-driven session:
run, compare with the host reference and with TVM's Relax VM, benchmark, profile, validate
layer by layer, and print the figures with a final verdict line. Exits non-zero when a
comparison fails.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

from .compare import compare, tolerance_text
from .demo_model import DEFAULT_SEED, INPUT_NAME, build_demo_module, demo_input, run_relax_vm

MODEL_NAME = "utvm_demo"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _step(text: str) -> None:
    print(f"==> {text}", flush=True)


def _kib(nbytes: int) -> str:
    return f"{nbytes} B ({nbytes / 1024:.1f} KiB)"


def code_sizes(project_dir: pathlib.Path) -> Optional[Dict[str, int]]:
    """text+data bytes of the runtime's and the model's objects in a built host project (`size`)."""
    size = shutil.which("size")
    objects = sorted((project_dir / "build" / "obj").rglob("*.o"))
    if size is None or not objects:
        return None
    result = subprocess.run([size, *map(str, objects)], capture_output=True, text=True, check=False)
    totals = {"runtime": 0, "model": 0}
    for line in result.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 6 or not fields[0].isdigit():
            continue
        part = "model" if "/obj/model/" in fields[5] else "runtime"
        totals[part] += int(fields[0]) + int(fields[1])
    return totals


def run_demo(
    directory: Optional[str] = None,
    seed: Optional[int] = None,
    transport: str = "auto",
    verbose: bool = False,
) -> int:
    """Run the demo in ``directory`` (a temporary one when None); returns the exit code."""
    seed = DEFAULT_SEED if seed is None else seed
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="utvm-demo-") as tmp:
            return _demo(pathlib.Path(tmp), seed, transport, verbose)
    workdir = pathlib.Path(directory)
    workdir.mkdir(parents=True, exist_ok=True)
    if (workdir / "project").exists():
        shutil.rmtree(workdir / "project")  # the demo owns this folder inside DIR; a rerun replaces it
    return _demo(workdir, seed, transport, verbose)


def _demo(workdir: pathlib.Path, seed: int, transport: str, verbose: bool) -> int:
    from utvm.model_library import HostReference, compile_model, load
    from utvm.project_api.project import TemplateProject
    from utvm.templates import template_path

    from .executor import Session

    started = time.monotonic()
    _step(f"building a small model in Relax (conv 3x3, depthwise conv, pool, dense, softmax; seed {seed})")
    module = build_demo_module(seed)
    image = demo_input(seed)

    _step("compiling it with model_library into a Model Library Format archive")
    archive = compile_model(module, workdir / "model.tar", model_name=MODEL_NAME)
    library = load(archive)
    memory = library.memory
    _say(f"    archive:    {archive}")
    _say(f"    kernels:    {len(library.kernels)}")
    bound = memory["peak_live_lower_bound_bytes"]
    _say(f"    arena:      {_kib(memory['arena_bytes'])} (lower bound on peak live memory {bound} B)")
    _say(f"    workspace:  {_kib(memory['workspace_bytes'])}")
    _say(f"    constants:  {_kib(memory['constant_bytes'])}")

    _step("generating a project from the POSIX host template, then building it")
    project_dir = workdir / "project"
    with TemplateProject.from_directory(template_path("host"), echo=verbose) as template:
        project = template.generate_project(archive, project_dir)
    with project:
        project.build()
        sizes = code_sizes(project_dir)
        if sizes:
            runtime, model = _kib(sizes["runtime"]), _kib(sizes["model"])
            _say(f"    code:       runtime {runtime}, model {model} (text + data)")

        _step(f"running it on the host device over the {transport} transport")
        with Session.from_project(project, transport=transport) as session:
            info = session.info
            _say(
                f"    device:     board {info.board}, runtime {info.runtime_version}, model {info.model_name}"
            )
            session.set_input(INPUT_NAME, image)
            session.run()
            device_out = session.get_output(0)
            bench = session.benchmark(number=20, repeat=5)
            profile = session.profile()
            validation = session.validate()

    _step("comparing with the host reference and with TVM's Relax VM (LLVM)")
    with HostReference(library) as reference:
        reference.set_input(INPUT_NAME, image)
        reference.run()
        host_out = reference.get_output(0)
    vm_out = run_relax_vm(module, image)
    checks = [("host reference", compare(device_out, host_out)), ("Relax VM", compare(device_out, vm_out))]

    _say()
    _say(f"output (class probabilities): {' '.join(f'{v:.4f}' for v in device_out.reshape(-1))}")
    _say(f"predicted class: {int(device_out.argmax())}")
    for label, c in checks:
        state = "match" if c.passed else "DIFFER"
        _say(f"vs {label:<15} {state}: max abs error {c.max_abs:.3g}, max rel error {c.max_rel:.3g}")
    _say(f"tolerance: {tolerance_text()}")
    _say(f"latency (device timer): {bench.summary()}")
    _say("per-kernel profile:")
    _say(profile.table())
    _say(f"layer-by-layer: {validation.verdict()}")

    failures: List[str] = [label for label, c in checks if not c.passed]
    if not validation.passed:
        failures.append("layer-by-layer validation")
    elapsed = time.monotonic() - started
    _say()
    if failures:
        _say(f"FAIL: the device's results differ from: {', '.join(failures)} ({elapsed:.1f} s)")
        return 1
    _say(
        f"PASS: the device matches the host reference and the Relax VM; {len(library.kernels)} kernels, "
        f"arena {memory['arena_bytes']} B, {bench.median * 1e3:.4f} ms per inference ({elapsed:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_demo())
