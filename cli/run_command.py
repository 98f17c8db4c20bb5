"""`utvm run` and `utvm demo`: drive a generated project's device from the command line.

    utvm run PROJECT [--input NAME=x.npy ...] [--output out.npz] [--benchmark] [--profile]
                     [--validate] [--json]
    utvm run --tracker HOST:PORT --key KEY MODEL ...     the same on a board of the farm

Inputs are named or numbered (``--input 0=x.npy`` or ``--input input_1=x.npy``); any input not
given is filled with seeded random values of the right dtype and shape, and the seed is printed.
With ``--json`` stdout carries one JSON object and everything else goes to stderr.
This module imports neither TVM nor numpy at load time, so `utvm --help` stays fast.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
from typing import Any, Dict, List

from utvm.host_driven.device_clock import project_device_clock
from utvm.host_driven.interrupts import STOP_SIGNALS, closed_on_signals
from utvm.project_api.errors import UserError
from utvm.project_api.mlf import read_model_archive
from utvm.project_api.options import parse_option_args
from utvm.project_api.project import GeneratedProject

from .common import add_option_argument, is_quiet, progress, shows_live_progress, shows_progress

TRANSPORT_MODES = ("auto", "direct", "relay")
# The device's TIME command counts runs in 32 bits.
MAX_COUNT = 0xFFFFFFFF


def register(subparsers) -> None:
    """Add `run` and `demo` to the `utvm` command line."""
    p = subparsers.add_parser(
        "run",
        help="run a generated project's model on its device: outputs, benchmark, profile, validation",
        description="Run the model of a generated (host-driven) project on its device. Inputs not given "
        "are seeded random values of the right dtype and shape.",
    )
    p.add_argument("project", metavar="PROJECT_DIR",
                   help="a generated, built project; with --tracker, the MODEL (an MLF archive or a model "
                   "file, compiled here for the board)")
    p.add_argument(
        "-i",
        "--input",
        dest="inputs",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        help="an input by name or index, from a .npy file (repeatable)",
    )
    p.add_argument("--output", metavar="OUT.npz",
                   help="write every output to an .npz, under its output name, and the run's record beside "
                   "it as OUT.record.json (not in the .npz, whose members readers take for outputs)")
    p.add_argument("--benchmark", action="store_true", help="device-timed runs: mean, median, std, min, max")
    p.add_argument(
        "--profile", action="store_true", help="device time of every kernel, named as in the archive"
    )
    p.add_argument(
        "--validate",
        action="store_true",
        help="run layer by layer against a reference (--against); name the first diverging kernel",
    )
    p.add_argument(
        "--against",
        choices=("host", "source"),
        default="host",
        help="--validate's reference: host (the archive's C built for this machine; the default) or "
        "source (the model's own framework: TFLite interpreter, ONNX Runtime, PyTorch)",
    )
    p.add_argument(
        "--source-model",
        metavar="MODEL",
        help="--against source: the model file (default: the copy in the archive)",
    )
    p.add_argument("--json", action="store_true", help="print one machine-readable JSON object on stdout")
    p.add_argument(
        "--record",
        metavar="OUT.json",
        help="write the run's reproducibility record (hashes of image, archive and model; versions; "
        "board; template options; seed; time) to OUT.json",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument(
        "--transport",
        choices=TRANSPORT_MODES,
        default="auto",
        help="direct (the server hands over the device link), relay (bytes through the Project API) "
        "or auto (direct when offered; the default)",
    )
    p.add_argument("--number", type=int, default=10, help="benchmark: runs per measurement (default 10)")
    p.add_argument("--repeat", type=int, default=5, help="benchmark: measurements (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="benchmark: untimed runs first (default 1)")
    add_option_argument(p, help="a project option for open_transport (repeatable)")
    p.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for each device reply (default 5)"
    )
    farm = p.add_argument_group("a board of the farm (see `utvm farm`)")
    farm.add_argument("--tracker", metavar="HOST:PORT", help="take the board from this TVM RPC tracker")
    farm.add_argument("--key", help="the board's key on the tracker (with --tracker)")
    farm.add_argument("--token-file", metavar="FILE", help="the node's token (default: $UTVM_FARM_TOKEN)")
    farm.add_argument("--queue-timeout", type=float, default=600.0, metavar="SECONDS",
                      help="give up waiting for a free board after this long (default 600)")
    p.set_defaults(func=cmd_run)

    d = subparsers.add_parser(
        "demo",
        help="the whole flow on the POSIX host with a model it builds itself (no download)",
        description="Build a small model in Relax, compile it, generate, build and run a host project, "
        "compare with the host reference and TVM's Relax VM, and print the figures.",
    )
    d.add_argument(
        "--dir", metavar="DIR", help="keep the model and project in DIR (default: a temporary directory)"
    )
    d.add_argument("--seed", type=int, default=None, help="seed of the model's weights and input")
    d.add_argument("--transport", choices=TRANSPORT_MODES, default="auto", help="how to reach the device")
    d.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from utvm.host_driven.demo import run_demo

    with closed_on_signals(None, STOP_SIGNALS):
        return run_demo(directory=args.dir, seed=args.seed, transport=args.transport, verbose=args.verbose)


# ---- utvm run ----------------------------------------------------------------------------------


class _Printer:
    """Human-readable lines: stdout normally, stderr when stdout carries JSON. Progress (steps and
    transfer counters) goes to stderr, on a terminal or when forced (common.shows_progress)."""

    def __init__(self, to_stderr: bool):
        self.stream = sys.stderr if to_stderr else sys.stdout

    def __call__(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    @staticmethod
    def step(text: str) -> None:
        """A line saying what a long step is doing (waiting, compiling, validating...)."""
        progress(text)

    @staticmethod
    def progress(what: str, done: int, total: int) -> None:
        live = shows_live_progress()
        finished = done >= total
        # Redrawn in place on a terminal; a forced progress in a log gets the finished line only.
        if not (live or (finished and shows_progress())):
            return
        start = "\r" if live else ""
        print(f"{start}  {what}: {done / 2**20:.1f} / {total / 2**20:.1f} MiB",
              end="\n" if finished else "", file=sys.stderr, flush=True)


def _parse_input_specs(specs: List[str]) -> Dict[str, pathlib.Path]:
    parsed = {}
    for spec in specs:
        key, sep, path = spec.partition("=")
        if not sep or not key or not path:
            raise UserError(
                f"bad --input {spec!r}", hint="write --input NAME=FILE.npy or --input INDEX=FILE.npy"
            )
        parsed[key] = pathlib.Path(path)
    return parsed


def _load_inputs(signature, specs: Dict[str, pathlib.Path], seed: int, say) -> Dict[str, Any]:
    """Arrays by input name: from the files given, seeded random values for the rest."""
    import numpy as np

    arrays = {}
    sources = {}
    for key, path in specs.items():
        spec = signature.input(key)
        if not path.is_file():
            raise UserError(f"input file {path} not found", hint=f"give a .npy file for input {spec.name!r}")
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise UserError(
                f"cannot read {path} as a .npy array: {err}", hint="save it with numpy.save"
            ) from None
        signature.check_input(spec.name, array)
        arrays[spec.name] = array
        sources[spec.name] = str(path)
    missing = [s for s in signature.inputs if s.name not in arrays]
    if missing:
        random = signature.random_inputs(seed)
        for spec in missing:
            arrays[spec.name] = random[spec.name]
            sources[spec.name] = f"random (seed {seed})"
    for spec in signature.inputs:
        say(f"input {spec.index} {spec.name!r} {spec.describe()}: {sources[spec.name]}")
    return {"arrays": arrays, "sources": sources}


def _describe_output(name: str, array) -> str:
    import numpy as np

    flat = array.reshape(-1)
    text = f"{array.dtype}{list(array.shape)}, min {flat.min()}, max {flat.max()}"
    if flat.size > 1:
        text += f", argmax {int(np.argmax(flat))}"
    return text


def _device_json(info) -> Dict[str, Any]:
    if hasattr(info, "to_json"):
        return info.to_json()
    return {
        "board": info.board,
        "runtime_version": info.runtime_version,
        "protocol_version": info.protocol_version,
        "model_name": info.model_name,
        "model_hash": info.model_hash,
        "arena_bytes": info.arena_bytes,
        "workspace_bytes": info.workspace_bytes,
        "max_packet": info.max_packet,
        "timer_hz": info.timer_hz,
    }


def _check_output_path(path: pathlib.Path) -> None:
    """Refuse an --output the run's results could not be written to, before the run starts."""
    if path.is_dir():
        raise UserError(f"--output {path} is a directory", hint="give a file name, e.g. out.npz")
    folder = path.parent if str(path.parent) else pathlib.Path(".")
    existing = next((p for p in [folder, *folder.parents] if p.exists()), pathlib.Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write --output {path}: {existing} is not a writable folder",
                        hint="choose a folder you can write to")


def _save_outputs(path: pathlib.Path, outputs: Dict[str, Any], record, summary: Dict[str, Any], say) -> None:
    """--output: every output in an .npz, the run's record beside it (run_record.sidecar_path), and
    where they went in the JSON summary."""
    import numpy as np
    from utvm.host_driven.run_record import sidecar_path, write_record_file

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object, so numpy does not append .npz to the name
        np.savez(f, **outputs)
    summary["output_file"] = str(path.resolve())
    for name in outputs:
        if name in summary.get("outputs", {}):
            summary["outputs"][name]["path"] = f"{summary['output_file']}:{name}"
    if record is not None:
        summary["output_record"] = str(write_record_file(sidecar_path(path), record).resolve())
    say(f"outputs written to {path}" + (f", their record to {sidecar_path(path)}" if record else ""))


def _write_record(args, record: Dict[str, Any]) -> Dict[str, Any]:
    """--record OUT.json: the record alone, written before the device runs (a run that fails
    still leaves what it was made from)."""
    from utvm.host_driven.run_record import write_record_file

    if args.record:
        write_record_file(args.record, record)
    return record


def _run_standalone(args, project, signature, say, options: Dict[str, Any]) -> int:
    from utvm.host_driven.run_record import run_record
    from utvm.host_driven.standalone import baked_inputs, run_standalone

    wanted = [flag for flag in ("benchmark", "profile", "validate") if getattr(args, flag)]
    if wanted:
        raise UserError(
            f"--{wanted[0]} needs a host-driven device; {project.directory} is an aot_standalone project",
            hint="generate a host_driven project (-o project_type=host_driven) for those",
        )
    baked = baked_inputs(project, signature)
    if baked is not None:
        if args.inputs:
            raise UserError(f"{project.directory} runs on the inputs baked into its image; "
                            "it takes no --input",
                            hint="generate the project again with -o input_npz=INPUTS.npz")
        inputs = {"arrays": None, "sources": {name: "baked into the image" for name in baked}}
        for spec in signature.inputs:
            say(f"input {spec.index} {spec.name!r} {spec.describe()}: baked into the image")
    else:
        inputs = _load_inputs(signature, _parse_input_specs(args.inputs), args.seed, say)
    clock = project_device_clock(project.directory, options)
    record = _write_record(args, run_record(project.directory, project.archive, clock, args.seed,
                                            inputs["sources"]))
    report = run_standalone(project, signature, inputs["arrays"])
    outputs = report["outputs"]
    if report.get("note"):
        say(f"note: {report['note']}")
    for name, array in outputs.items():
        say(f"output {name!r}: {_describe_output(name, array)}")
    summary = {"project": str(project.directory), "project_type": "aot_standalone", "record": record,
               "seed": args.seed}
    summary["inputs"] = inputs["sources"]
    summary["outputs"] = {n: {"dtype": str(a.dtype), "shape": list(a.shape)} for n, a in outputs.items()}
    for key in ("status", "ticks", "timer_hz", "instructions", "emulated"):
        if report.get(key) is not None:
            summary[key] = report[key]
    if args.output:
        _save_outputs(pathlib.Path(args.output), outputs, record, summary, say)
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


def _open_project(args):
    """The generated project named on the line, checked to be one `utvm run` can drive."""
    project_dir = pathlib.Path(args.project)
    if not project_dir.is_dir():
        raise UserError(f"project {project_dir} not found",
                        hint="make one with `utvm create-project` and `utvm build`")
    project = GeneratedProject.from_directory(project_dir, debug=args.verbose, echo=not is_quiet())
    try:
        if not project.is_utvm_server:
            raise UserError(
                f"{project.directory} was made by a template that does not speak utvm's host-driven protocol "
                f"(platform {project.platform_name!r})",
                hint="utvm run drives projects of utvm's templates (`utvm templates`); run this one with its "
                "own tools")
        archive = project.archive
        if archive is None or not archive.is_file():
            raise UserError(f"{project.directory} reports no model archive ({archive})",
                            hint="regenerate the project with `utvm create-project`")
    except BaseException:
        project.close()
        raise
    return project, archive


def cmd_run(args) -> int:
    from utvm.host_driven.executor import Session
    from utvm.host_driven.signature import ModelSignature

    say = _Printer(to_stderr=args.json)
    if min(args.number, args.repeat) < 1 or args.warmup < 0:
        raise UserError("--number and --repeat must be at least 1, --warmup at least 0")
    if max(args.number, args.repeat, args.warmup) > MAX_COUNT:
        raise UserError(f"--number, --repeat and --warmup are at most {MAX_COUNT}",
                        hint="the device counts runs in 32 bits")
    if not args.timeout > 0:
        raise UserError(f"--timeout {args.timeout:g}: a deadline must be a positive number of seconds")
    if (args.against != "host" or args.source_model) and not args.validate:
        raise UserError("--against and --source-model choose --validate's reference",
                        hint="add --validate")
    for path in (args.output, args.record):
        if path:
            _check_output_path(pathlib.Path(path))
    options = parse_option_args(args.options)
    # Ctrl-C, SIGTERM and SIGHUP end the command alike: SessionInterrupted unwinds through the
    # with blocks below, which close the session, stop the device and the project's server; a
    # second signal meanwhile is ignored, so the closing is never cut short.
    with closed_on_signals(None, STOP_SIGNALS):
        if args.tracker or args.key:
            return _run_on_farm(args, say, options)
        project, archive = _open_project(args)
        with project:
            # The inputs are checked against the archive before any device starts.
            signature = ModelSignature(read_model_archive(archive).metadata)
            if project.project_type == "aot_standalone":
                return _run_standalone(args, project, signature, say, options)
            if project.project_type == "mlperftiny":
                raise UserError(f"{project.directory} is an mlperftiny project: the MLPerf Tiny runner "
                                "drives it, not utvm run",
                                hint=f"`utvm pty {args.project}` gives the runner its serial path; for utvm "
                                "run, generate a host_driven project of the same model")
            inputs = _load_inputs(signature, _parse_input_specs(args.inputs), args.seed, say)
            session = Session.from_project(
                project, options, transport=args.transport, timeout=args.timeout, progress=say.progress,
                model=archive)
            with session:
                # Cycles on silicon, instructions under QEMU -icount, and a note for every emulated board.
                clock = project_device_clock(session.project.directory, options, name=session.info.board)
                origin = {"project": str(pathlib.Path(args.project).resolve()),
                          "record": _record(session, args, clock, inputs)}
                return _drive(session, args, say, inputs, clock, origin)


def _run_on_farm(args, say, options: Dict[str, Any]) -> int:
    """`utvm run --tracker H:P --key K MODEL`: the same run on a board the tracker hands out."""
    from utvm.farm.session import FarmSession, is_model_archive
    from utvm.host_driven.signature import ModelSignature

    if not (args.tracker and args.key):
        raise UserError("--tracker and --key go together", hint="give both: --tracker HOST:PORT --key KEY")
    model = pathlib.Path(args.project)
    if not model.is_file():
        raise UserError(f"model {model} not found",
                        hint="with --tracker, give a model file or an MLF archive")
    spec = _parse_input_specs(args.inputs)
    archive_inputs = None
    if is_model_archive(model):
        # Checked before waiting for a board, so a bad input costs nobody a turn.
        signature = ModelSignature(read_model_archive(model).metadata)
        archive_inputs = _load_inputs(signature, spec, args.seed, say)
    session = FarmSession.from_tracker(
        args.tracker, args.key, model, options=options, token_file=args.token_file,
        queue_timeout=args.queue_timeout, say=say.step, timeout=args.timeout, progress=say.progress)
    with session:
        inputs = archive_inputs or _load_inputs(session.signature, spec, args.seed, say)
        farm = {"tracker": args.tracker, "key": args.key, "node": session.board.where,
                "template": session.board.description.get("template")}
        record = _write_record(args, session.run_record(args.seed, inputs["sources"], options))
        return _drive(session, args, say, inputs, session.device_clock(options),
                      {"farm": farm, "record": record})


def _record(session, args, clock, inputs) -> Dict[str, Any]:
    """The run's reproducibility record, written to --record now (before the device runs)."""
    from utvm.host_driven.run_record import run_record

    project = session.project
    return _write_record(args, run_record(project.directory, project.archive, clock, args.seed,
                                          inputs["sources"]))


def _drive(session, args, say, inputs, clock, origin: Dict[str, Any]) -> int:
    info = session.info
    say(f"device: board {info.board}, runtime {info.runtime_version}, model {info.model_name}")
    say(f"        model hash {info.model_hash[:16]}...")
    if hasattr(info, "arena_bytes"):
        say(f"        arena {info.arena_bytes} B, workspace {info.workspace_bytes} B, "
            f"timer {info.timer_hz} Hz")
    else:  # TVM's runtime on the board, over TVM RPC (a tvm_runtime project)
        say(f"        TVM RPC server {info.server}, {info.machine}, device {info.device}, "
            f"library {info.library_bytes} B")
    if clock.note:
        say(f"note: {clock.note}")
    summary: Dict[str, Any] = {
        **origin,
        "device": _device_json(info),
        "device_clock": clock.to_json(),
        "seed": args.seed,
    }
    summary["inputs"] = inputs["sources"]
    session.set_inputs(inputs["arrays"])
    seconds = session.run()
    outputs = session.get_outputs()
    say(f"ran in {clock.describe(seconds)}")
    summary["run_seconds"] = seconds
    if clock.unit:
        summary[f"run_{clock.unit}"] = clock.count(seconds)
    summary["outputs"] = {}
    for name, array in outputs.items():
        say(f"output {name!r}: {_describe_output(name, array)}")
        summary["outputs"][name] = {"dtype": str(array.dtype), "shape": list(array.shape)}
    if args.output:
        _save_outputs(pathlib.Path(args.output), outputs, origin.get("record"), summary, say)
    status = 0
    if args.benchmark:
        result = session.benchmark(number=args.number, repeat=args.repeat, warmup=args.warmup)
        say(f"benchmark: {clock.benchmark_summary(result)}")
        summary["benchmark"] = result.to_json()
        if clock.unit:
            summary["benchmark"][clock.unit] = clock.counts_of(result)
    if args.profile:
        report = session.profile()
        say(f"profile (device {clock.unit or 'time'} per kernel):")
        say(clock.profile_table(report))
        if args.benchmark:
            whole = summary["benchmark"]["median"]
            total = clock.describe(report.total)
            say(f"kernels sum to {total}; a whole run: {clock.describe(whole)} (median)")
        summary["profile"] = report.to_json()
    if args.validate and args.against == "source":
        if not hasattr(session, "validate_source"):
            raise UserError("--against source needs a host-driven device (utvm's runtime)")
        say.step("validating layer by layer against the source model's framework...")
        report = session.validate_source(model_file=args.source_model)
        say(report.table())
        for note in report.notes:
            say(f"note: {note}")
        status = 0 if report.passed else 1
        say(f"validation: {report.verdict()}")
        summary["validation"] = report.to_json()
    elif args.validate:
        layers = "layer by layer" if hasattr(session, "run_kernel") else "the outputs"
        say.step(f"validating {layers} against the host reference...")
        report = session.validate()
        if not report.passed:
            say(report.table())
            status = 1
        say(f"validation: {report.verdict()}")
        summary["validation"] = report.to_json()
    if hasattr(session, "link"):  # utvm's protocol; a tvm_runtime project speaks TVM RPC instead
        summary["link"] = session.link.as_dict()
    if args.json:
        print(json.dumps(summary, indent=2))
    return status
