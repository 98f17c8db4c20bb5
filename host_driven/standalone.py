"""Run an ``aot_standalone`` host project's program on arrays: inputs go in as ``.npy`` files, each
output comes back from the ``.npy`` file the program writes. No session, no protocol.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import tempfile
from typing import Dict, Mapping, Optional

import numpy as np
from utvm.project_api.errors import UserError

from .errors import HostDrivenError
from .signature import ModelSignature

PROGRAM = "build/model_standalone"
DEFAULT_TIMEOUT = 600.0


def project_type(project_dir) -> Optional[str]:
    """The ``project_type`` a host project was generated with (None for other projects)."""
    path = pathlib.Path(project_dir) / "utvm-project.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("platform_name") != "host":
        return None
    return (record.get("options") or {}).get("project_type", "host_driven")


def run_standalone(
    project_dir, inputs: Mapping[str, np.ndarray], timeout: float = DEFAULT_TIMEOUT
) -> Dict[str, np.ndarray]:
    """Run the built standalone program once on ``inputs`` (by name); returns the outputs by name."""
    project_dir = pathlib.Path(project_dir)
    program = project_dir / PROGRAM
    if not program.is_file():
        raise UserError(
            f"{program} does not exist", hint=f"build the project first: utvm build {project_dir}"
        )
    signature = ModelSignature(json.loads((project_dir / "model" / "metadata.json").read_text()))
    with tempfile.TemporaryDirectory(prefix="utvm-standalone-") as tmp:
        argv = [str(program.resolve())]
        for spec in signature.inputs:
            if spec.name not in inputs:
                raise UserError(f"input {spec.name!r} is missing", hint="give every input of the model")
            _, array = signature.check_input(spec.name, inputs[spec.name])
            path = pathlib.Path(tmp) / f"input_{spec.index}.npy"
            np.save(path, array)
            argv.append(str(path))
        outdir = pathlib.Path(tmp) / "out"
        argv += ["-o", str(outdir)]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise HostDrivenError(f"{program} did not finish within {timeout:g} s") from err
        if result.returncode != 0:
            raise HostDrivenError(
                f"{program} exited with code {result.returncode}",
                details=(result.stderr or result.stdout).strip()[-2000:],
            )
        return {spec.name: np.load(outdir / f"output_{spec.index}.npy") for spec in signature.outputs}
