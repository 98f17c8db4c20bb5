"""A utvm archive speaks TVM's Model Library Format too: TVM's metadata.json keys (what microTVM's
templates read, e.g. the Arduino template's modules.<name>.memory.functions.main[0]) and TVM's AOT C
interface, tvmgen_default.h / tvmgen_default_run. A C program that knows only that interface runs the
archive's model and gets the archive's answers, with nothing of utvm but the archive's own C and the
backend functions TVM's runtime would otherwise provide.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from conftest import REPO_ROOT, require_tool
from host_driven_helpers import small_tflite_archive
from utvm.model_library import HostReference, load

MAIN_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include "tvmgen_default.h"

/* Reads the input from argv[1], writes the output to argv[2]: only TVM's interface is used. */
int main(int argc, char **argv) {
  static unsigned char input[TVMGEN_DEFAULT_INPUT_SIZE], output[TVMGEN_DEFAULT_OUTPUT_SIZE];
  FILE *f = fopen(argv[1], "rb");
  if (argc != 3 || f == NULL || fread(input, 1, sizeof input, f) != sizeof input) return 2;
  fclose(f);
  struct tvmgen_default_inputs inputs = {.input = input};
  struct tvmgen_default_outputs outputs = {.output = output};
  int status = tvmgen_default_run(&inputs, &outputs);
  if (status != 0) return 3;
  f = fopen(argv[2], "wb");
  fwrite(output, 1, sizeof output, f);
  fclose(f);
  return 0;
}
"""


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return small_tflite_archive(tmp_path_factory, quantized=True)


def test_tvms_metadata_keys_are_beside_utvms(archive):
    library = load(archive)
    metadata = library.metadata
    assert metadata["version"] == 7 and metadata["format_version"] == 1
    module = metadata["modules"]["default"]
    assert module["style"] == "full-model" and module["executors"] == ["aot"]
    main = module["memory"]["functions"]["main"][0]
    memory = library.memory
    assert main["workspace_size_bytes"] == memory["arena_bytes"] + memory["workspace_bytes"]
    assert main["constants_size_bytes"] == memory["constant_bytes"]
    assert main["io_size_bytes"] == memory["io_bytes"]
    assert set(main["inputs"]) == {e["name"] for e in library.inputs}
    # The archive carries the header its plan's C includes, the same as the runtime's.
    assert library.read("codegen/host/include/utvm/model.h") == \
        (REPO_ROOT / "templates/runtime/include/utvm/model.h").read_bytes()


def test_a_program_that_knows_only_tvms_interface_gets_the_archives_answers(archive, tmp_path):
    require_tool("cc")
    library = load(archive)
    # The members MAIN_C sets, named after the model's input and output.
    assert [e["name"] for e in library.inputs + library.outputs] == ["input", "output"]
    root = library.extract(tmp_path / "model")
    (tmp_path / "main.c").write_text(MAIN_C)
    sources = sorted(str(p) for p in (root / "codegen/host/src").glob("*.c"))
    # backend.c stands for what TVM's runtime would link in (workspace allocation, error text).
    backend = REPO_ROOT / "templates/runtime/src/backend.c"
    program = tmp_path / "tvm_style"
    subprocess.run(["cc", "-O1", "-I", str(root / "codegen/host/include"), "-I",
                    str(REPO_ROOT / "templates/runtime/include"), str(tmp_path / "main.c"), str(backend),
                    *sources, "-lm", "-o", str(program)], check=True, capture_output=True, text=True)
    spec = library.inputs[0]
    x = np.random.default_rng(5).integers(-128, 128, spec["shape"], dtype=np.int8)
    (tmp_path / "in.bin").write_bytes(x.tobytes())
    subprocess.run([str(program), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], check=True,
                   timeout=60)
    got = np.frombuffer((tmp_path / "out.bin").read_bytes(), dtype=library.outputs[0]["dtype"])
    with HostReference(library) as reference:
        reference.set_input(0, x)
        reference.run()
        want = reference.get_output(0)
    np.testing.assert_array_equal(got.reshape(want.shape), want)


def test_the_interface_header_names_members_as_c_identifiers(archive, tmp_path):
    header = load(archive).read("codegen/host/include/tvmgen_default.h").decode()
    assert "struct tvmgen_default_inputs {\n  void *input;\n};" in header
    assert "int32_t tvmgen_default_run(struct tvmgen_default_inputs *inputs," in header
    assert json.loads(load(archive).read("metadata.json"))["modules"]["default"]["model_name"] in header
