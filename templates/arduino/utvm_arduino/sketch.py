"""Lay out an Arduino sketch folder: `<name>.ino` and `src/`, which the Arduino IDE opens and
`arduino-cli compile` builds as they are.

An Arduino build compiles every file under `src/` but adds no include path of the sketch's own, so
every quoted `#include` of the runtime, the model and the port is rewritten to a path relative to
the file that includes it. The sketch's copy of the runtime's `utvm/config.h` first includes the
port's settings (`utvm_port_config.h`): a sketch cannot pass `-D` flags to its build.

    <project>/<name>.ino                  setup() and loop()
    <project>/src/utvm/include/utvm/      the runtime's headers
    <project>/src/utvm/runtime/           the runtime's C
    <project>/src/utvm/model/             the model's C and headers (the MLF's codegen/host)
    <project>/src/utvm/port/              the Arduino port, the settings header, the standalone app

Standard library and the floor's renderer only: it runs when a project is generated.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Dict, Iterable, List, Mapping

from project_api.template_support import render_file, runtime_files

TEMPLATE_DIR = Path(__file__).resolve().parent.parent
SKETCH_SRC = TEMPLATE_DIR / "sketch"
ROOT = Path("src") / "utvm"
INCLUDE_DIR = ROOT / "include"
RUNTIME_DIR = ROOT / "runtime"
MODEL_DIR = ROOT / "model"
PORT_DIR = ROOT / "port"
PORT_CONFIG = "utvm_port_config.h"
PORT_SOURCES = ("utvm_arduino.h", "utvm_port_arduino.cpp")
STANDALONE_SOURCES = ("utvm_standalone_arduino.cpp",)
STANDALONE_INPUTS_C = "utvm_standalone_inputs.c"
# Placeholders whose values are whole lines (of C, or paragraphs of the README), each on its own line.
_MULTILINE = ("const_copy", "memory_notes", "run_notes")
_INCLUDE = re.compile(r'^(\s*#\s*include\s+)"([^"]+)"', flags=re.M)
# A sketch's name is its folder's: letters, digits, '_', '-' and '.', starting with a letter or digit.
_SKETCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def sketch_name_problem(name: str) -> str:
    """Why `name` cannot name a sketch folder (and its .ino), or '' when it can."""
    if _SKETCH_NAME.match(name) and len(name) <= 63:
        return ""
    return (f"{name!r} cannot name an Arduino sketch: the project folder and its .ino share the name, "
            "which must start with a letter or digit and hold only letters, digits, '_', '-' and '.' "
            "(at most 63 characters)")


def _copy(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)
    return dest


def _rewrite_includes(path: Path, locations: Mapping[str, Path]) -> None:
    """Quoted includes of files the sketch holds become paths relative to `path`'s folder."""
    text = path.read_text(encoding="utf-8")

    def relative(match: re.Match) -> str:
        target = locations.get(match.group(2))
        if target is None:
            return match.group(0)
        return f'{match.group(1)}"{Path(os.path.relpath(target, path.parent)).as_posix()}"'

    path.write_text(_INCLUDE.sub(relative, text), encoding="utf-8")


def write_sketch(project_dir: Path, runtime_dir: Path, model_root: Path, values: Dict[str, str],
                 standalone_inputs_c: str = "") -> List[Path]:
    """Write the sketch into project_dir (which may hold other files already): the runtime from
    runtime_dir, the model's C from the extracted MLF at model_root, the port and the .ino and
    README rendered with `values` (see the files in sketch/). With standalone_inputs_c (the C of
    the baked inputs) the sketch is an aot_standalone one. Returns the C and C++ files written."""
    project_dir = Path(project_dir)
    files = runtime_files(runtime_dir)
    written: List[Path] = []
    locations: Dict[str, Path] = {}
    for rel in files["includes"]:
        for header in sorted((runtime_dir / rel).rglob("*.h")):
            inner = header.relative_to(runtime_dir / rel)
            dest = _copy(header, project_dir / INCLUDE_DIR / inner)
            locations[inner.as_posix()] = dest
            written.append(dest)
    for rel in files["sources"]:
        written.append(_copy(runtime_dir / rel, project_dir / RUNTIME_DIR / Path(rel).name))
    codegen = Path(model_root) / "codegen" / "host"
    for source in sorted((codegen / "src").glob("*.c")) + sorted((codegen / "include").glob("*.h")):
        dest = _copy(source, project_dir / MODEL_DIR / source.name)
        if source.suffix == ".h":
            locations[source.name] = dest
        written.append(dest)
    standalone = bool(standalone_inputs_c)
    for name in PORT_SOURCES + (STANDALONE_SOURCES if standalone else ()):
        written.append(_copy(SKETCH_SRC / name, project_dir / PORT_DIR / name))
    if standalone:
        inputs = project_dir / PORT_DIR / STANDALONE_INPUTS_C
        inputs.write_text(standalone_inputs_c, encoding="utf-8")
        written.append(inputs)
    config = render_file(SKETCH_SRC / f"{PORT_CONFIG}.in", project_dir / PORT_DIR / PORT_CONFIG, values,
                         multiline=_MULTILINE)
    locations[PORT_CONFIG] = config
    written.append(config)
    _prepend_port_config(project_dir / INCLUDE_DIR / "utvm" / "config.h")
    for path in written:
        _rewrite_includes(path, locations)
    name = project_dir.name
    render_file(SKETCH_SRC / "sketch.ino.in", project_dir / f"{name}.ino",
                dict(values, app_call="utvm_arduino_run_standalone" if standalone else "utvm_arduino_serve"),
                multiline=_MULTILINE)
    render_file(SKETCH_SRC / "README.md.in", project_dir / "README.md", dict(values, sketch=name),
                multiline=_MULTILINE)
    return written


def _prepend_port_config(config_h: Path) -> None:
    text = config_h.read_text(encoding="utf-8")
    marker = "#define UTVM_CONFIG_H_\n"
    if marker not in text:
        raise ValueError(f"{config_h}: no {marker.strip()!r} to put the port's settings after")
    config_h.write_text(text.replace(marker, marker + "\n/* This sketch's settings (it cannot pass -D "
                                     f"flags). */\n#include \"{PORT_CONFIG}\"\n", 1), encoding="utf-8")


def inputs_source(inputs: Iterable[tuple]) -> str:
    """C of the inputs an aot_standalone sketch bakes in ([(name, bytes)], in the model's order),
    kept in flash on AVR, and the function that copies them into the arena."""
    inputs = list(inputs)
    lines = ["/* Generated by utvm: the inputs baked into this aot_standalone sketch (in flash on AVR). */",
             "#include <stdint.h>", "#include <string.h>", "", "#if defined(__AVR__)",
             "#include <avr/pgmspace.h>", "#define UTVM_INPUT_STORAGE PROGMEM",
             "#define UTVM_INPUT_COPY(dst, src, n) memcpy_P((dst), (src), (n))", "#else",
             "#define UTVM_INPUT_STORAGE", "#define UTVM_INPUT_COPY(dst, src, n) memcpy((dst), (src), (n))",
             "#endif", ""]
    for i, (name, data) in enumerate(inputs):
        lines.append(f"/* input {i}: {name.replace('*/', '* /')}, {len(data)} bytes */")
        lines.append(f"static const uint8_t input_{i}[{max(len(data), 1)}] UTVM_INPUT_STORAGE = {{")
        for start in range(0, len(data), 16):
            lines.append("  " + ", ".join(f"0x{b:02x}" for b in data[start:start + 16]) + ",")
        lines += ["};", ""]
    count = len(inputs)
    lines.append(f"const uint16_t utvm_standalone_num_inputs = {count};")
    lines.append(f"const uint32_t utvm_standalone_input_bytes[{max(count, 1)}] = {{"
                 + (", ".join(f"{len(d)}u" for _, d in inputs) or "0u") + "};")
    lines.append(f"static const uint8_t *const inputs[{max(count, 1)}] = {{"
                 + (", ".join(f"input_{i}" for i in range(count)) or "0") + "};")
    lines += ["", "void utvm_standalone_input_copy(uint16_t index, uint32_t offset, uint8_t *dst,",
              "                                uint32_t n) {",
              "  UTVM_INPUT_COPY(dst, inputs[index] + offset, n);", "}"]
    return "\n".join(lines) + "\n"
