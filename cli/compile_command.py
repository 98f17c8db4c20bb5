"""`utvm compile MODEL -o model.tar [--target T] [--format F] [--name N] [--keep-inputs] [--no-check]`.

Nothing heavy is imported here: TVM loads only when the command runs, so `utvm --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from utvm.project_api.errors import UserError

from .common import shows_line

FORMAT_CHOICES = ("tflite", "onnx", "relax", "torch")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `compile` command to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "compile",
        help="compile a model into a Model Library Format archive",
        description="Compile a TFLite, ONNX, Relax or PyTorch model with TVM into a Model Library "
        "Format archive (C kernels, constants, static memory plan, AOT entry point).",
    )
    parser.add_argument(
        "model", help="model file (.tflite, .onnx, .json/.relax Relax module, .pt2 torch.export)"
    )
    parser.add_argument("-o", "--output", required=True, help="archive to write (e.g. model.tar)")
    parser.add_argument(
        "--target",
        default="c",
        help='"c" (default), a CPU such as "cortex-m4", "c -mcpu=cortex-m4", or a JSON dict',
    )
    parser.add_argument(
        "--format", dest="fmt", choices=FORMAT_CHOICES, help="model format (default: from the file)"
    )
    parser.add_argument("--name", help="model name, used as the C symbol prefix (default: the file name)")
    parser.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=D0,D1,...",
        help="pin an input's shape (repeatable), for models with dynamic dimensions",
    )
    parser.add_argument(
        "--alignment", type=int, default=16, help="byte alignment of arena tensors (default 16)"
    )
    parser.add_argument(
        "--rounding",
        choices=("single", "double"),
        help="force the requantization rounding of integer kernels (default: as TFLite's reference kernels)",
    )
    parser.add_argument(
        "--float-quantized",
        action="store_true",
        help="keep TVM's float emulation of quantized operators instead of integer kernels",
    )
    parser.add_argument(
        "--keep-inputs",
        action="store_true",
        help="keep the inputs' bytes intact through a run (a bigger arena), so runs repeat without "
        "writing the inputs again; by default the arena reuses them once read and the host writes "
        "them again before a run that needs them",
    )
    parser.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="skip the check that runs the archive's C against TVM's LLVM build and the model's "
        "framework before writing it (faster; the archive is then unchecked)",
    )
    parser.add_argument("--json", action="store_true", help="print the memory summary as JSON")
    parser.set_defaults(func=handle_compile)
    return parser


def parse_input_shapes(items: list) -> dict:
    shapes = {}
    for item in items:
        name, sep, dims = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = [int(d) for d in dims.replace("x", ",").split(",") if d.strip()]
        except ValueError:
            raise UserError(f"cannot read --input-shape {item!r}", "write it as NAME=1,49,10,1") from None
    return shapes


def handle_compile(args) -> int:
    """Run `utvm compile`; return the exit code. User errors are raised as UserError."""
    from utvm.model_library import compile_model, load
    from utvm.model_library.archive import check_output

    start = time.monotonic()
    output = check_output(args.output)  # an empty -o is "" here; as a Path it would be "."

    def progress(line: str) -> None:
        if shows_line(line):
            print(f"[{time.monotonic() - start:6.1f}s] {line}", file=sys.stderr, flush=True)

    compile_model(
        args.model,
        output,
        args.target,
        fmt=args.fmt,
        model_name=args.name,
        input_shapes=parse_input_shapes(args.input_shape) or None,
        alignment=args.alignment,
        integer_ops=not args.float_quantized,
        rounding=args.rounding,
        preserve_inputs=args.keep_inputs,
        check=args.check,
        progress=progress,
    )
    library = load(output)
    if args.json:
        print(json.dumps({"archive": str(output), "model": library.name, "memory": library.memory}, indent=2))
    else:
        print(format_summary(library))
    return 0


def format_summary(library) -> str:
    """The memory figures `utvm compile` prints."""
    m = library.memory
    lines = [
        f"wrote {library.path} (model {library.name}, {len(library.kernels)} kernels, "
        f"target {library.metadata['target_str']})",
        f"  arena      {m['arena_bytes']:>10,} bytes  (lower bound {m['peak_live_lower_bound_bytes']:,}; "
        f"arena/lower bound {m['arena_to_lower_bound']:.3f})",
        f"  workspace  {m['workspace_bytes']:>10,} bytes",
        f"  constants  {m['constant_bytes']:>10,} bytes",
        f"  I/O        {m['io_bytes']:>10,} bytes",
    ]
    return "\n".join(lines)
