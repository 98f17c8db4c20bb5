"""`utvm demo` end to end, as `make demo` runs it: a model built in Relax, compiled, generated,
built and run on the host device, compared with the host reference and the Relax VM.
"""

from __future__ import annotations

import re

from host_driven_helpers import run_cli


def test_demo_ends_with_a_correct_comparison_and_the_figures(tmp_path):
    result = run_cli("demo", "--dir", tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    last = text.strip().splitlines()[-1]
    assert last.startswith("PASS: the device matches the host reference and the Relax VM"), last
    assert re.search(r"vs host reference +match", text) and re.search(r"vs Relax VM +match", text)
    for figure in (r"arena: +\d+ B", r"workspace: +\d+ B", r"constants: +\d+ B", r"code: +runtime \d+ B"):
        assert re.search(figure, text), figure
    assert re.search(r"latency \(device timer\): mean [\d.]+ ms", text)
    assert "per-kernel profile:" in text and "fused_conv2d" in text
    assert "layer-by-layer: PASS" in text
    # --dir keeps what the demo made, for the user to look at.
    assert (tmp_path / "model.tar").is_file() and (tmp_path / "project" / "build" / "model_device").is_file()


def _constants(module):
    """The weights of the demo module's main, in order of use."""
    import tvm

    found = []
    for block in module["main"].body.blocks:
        for binding in block.bindings:
            stack = [binding.value]
            while stack:
                expr = stack.pop()
                if isinstance(expr, tvm.ir.expr.Constant):
                    found.append(expr.value.numpy())
                elif isinstance(expr, tvm.ir.expr.Call):
                    stack.extend(reversed(list(expr.args)))
    return found


def test_demo_model_is_deterministic():
    from utvm.host_driven.demo_model import build_demo_module, demo_input

    a, b, c = (_constants(build_demo_module(seed)) for seed in (3, 3, 4))
    assert len(a) == 5  # conv, bias, depthwise, dense, bias
    assert all((x == y).all() for x, y in zip(a, b))
    assert not all((x == y).all() for x, y in zip(a, c))
    assert (demo_input(3) == demo_input(3)).all()
