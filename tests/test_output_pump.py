"""OutputPump: a child's stream drained to its end, with a tail bounded in bytes."""

from __future__ import annotations

import subprocess
import sys

from utvm.project_api.output_pump import OutputPump


def _pump(script: str, keep_bytes: int) -> OutputPump:
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    pump = OutputPump(proc.stdout, keep_bytes=keep_bytes)
    pump.start()
    assert proc.wait(30) == 0  # the child never blocks on a full pipe: the pump drains it
    pump.join(10)
    assert not pump.is_alive() and proc.stdout.closed
    return pump


def test_the_tail_keeps_the_last_lines_of_a_long_output():
    pump = _pump("import sys\nfor i in range(100000): sys.stdout.write(f'line {i}\\n')", 4096)
    assert pump.tail_lines(3) == ["line 99997", "line 99998", "line 99999"]
    assert len(pump.tail_text().encode()) == 4096  # bounded, whatever was written


def test_an_unterminated_giant_line_is_bounded_by_bytes():
    pump = _pump("import sys\nsys.stdout.write('x' * 3000000)", 1000)
    (last,) = pump.tail_lines(5)
    assert last == "x" * 1000


def test_nothing_is_kept_without_a_tail():
    pump = _pump("print('hello')", 0)
    assert pump.tail_lines(5) == [] and pump.tail_text() == ""
