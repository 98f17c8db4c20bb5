"""`python -m bench.soak`: inferences over a noisy link, counted: exact, clear error, hang, wrong.

For each link and byte-error rate, a real model (default kws_dscnn_int8 from ../shared/models)
runs N times on seeded random inputs through the user's path (model_library, a template's
project, the executor Session), with every byte between host and device spoilt at that rate in
both directions (a bit flipped, the byte dropped, duplicated, or swapped with the next):

- ``pipe``: the POSIX host template's device behind ``bench/noisy_proxy.py``, a process between
  the host's pipes and the device's, so the session takes its pipe fast paths;
- ``qemu``: the bare-metal template on qemu-system-arm (mps2-an386, Cortex-M4), its UART's socket
  wrapped in a NoisyTransport.

An inference is *exact* when every output equals the archive's C run on this machine
(HostReference) bit for bit, *wrong* when outputs come back that differ, a *clear error* when a
utvm error is raised (the session is then opened again, over a fresh link), and a *hang* when no
outcome comes within ``--hang-after`` seconds. Goals: no wrong answer and no hang at any rate; at
least 90% exact at 1e-3; most exact at 1e-2 (packets shrink on a noisy link).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO_ROOT.parent / "shared" / "models" / "kws_dscnn_int8.tflite"
QEMU_BOARD = "mps2_an386"
OUTCOMES = ("exact", "clear_error", "hang", "wrong")


class Hang(Exception):
    """No outcome within the hang deadline."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a model file utvm compiles")
    parser.add_argument("--links", nargs="+", default=["pipe", "qemu"], choices=["pipe", "qemu"])
    parser.add_argument("--rates", nargs="+", type=float, default=[1e-4, 1e-3, 1e-2])
    parser.add_argument("--inferences", type=int, default=50, help="per link and rate")
    parser.add_argument("--hang-after", type=float, default=300.0, help="seconds an inference may take")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the counts to this file")
    return parser.parse_args(argv)


def build_pipe_project(model: Path, workdir: Path):
    """(archive, project dir) of the model on the POSIX host template, built."""
    from .utvm_device import build_project

    return build_project(model, workdir, model.stem)


def build_qemu_project(model: Path, workdir: Path):
    """(archive, project dir) of the model on the bare-metal template for QEMU_BOARD, built."""
    from utvm.boards import get_board
    from utvm.model_library import compile_model
    from utvm.project_api.project import TemplateProject
    from utvm.templates import template_path

    archive = Path(compile_model(model, workdir / f"{model.stem}-{QEMU_BOARD}.tar", model_name=model.stem,
                                 target=get_board(QEMU_BOARD).target))
    project_dir = workdir / f"{model.stem}-{QEMU_BOARD}-project"
    with TemplateProject.from_directory(template_path("baremetal"), echo=False) as template:
        with template.generate_project(archive, project_dir, {"board": QEMU_BOARD}) as project:
            project.build()
            project.flash()
    return archive, project_dir


def pipe_session(archive: Path, project_dir: Path, rate: float, seed: int):
    """An executor Session on the host device behind the noisy proxy process."""
    from utvm.host_driven.executor import Session
    from utvm.host_driven.transport import SubprocessTransport

    argv = [sys.executable, "-m", "bench.noisy_proxy", "--rate", repr(rate), "--seed", str(seed), "--",
            str(project_dir / "build" / "model_device")]
    return Session(SubprocessTransport(argv, cwd=str(REPO_ROOT)), archive)


def qemu_session(archive: Path, project_dir: Path, rate: float, seed: int):
    """An executor Session on a fresh QEMU, its UART through a NoisyTransport."""
    from utvm.host_driven.direct import open_project_transport
    from utvm.host_driven.executor import Session
    from utvm.host_driven.fault_injection import NoisyTransport
    from utvm.project_api.project import GeneratedProject

    project = GeneratedProject.from_directory(project_dir, echo=False)
    try:
        transport = NoisyTransport(open_project_transport(project, mode="direct"), rate, seed=seed)
    except BaseException:
        project.close()
        raise
    return Session(transport, archive, project=project, owns_project=True)


@contextlib.contextmanager
def deadline(seconds: float):
    """Raise Hang in the block after ``seconds`` (SIGALRM: every wait of a session wakes for it)."""
    def fire(_signum, _frame):
        raise Hang(f"no outcome within {seconds:g} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def soak(open_session, archive: Path, rate: float, count: int, hang_after: float, seed: int) -> dict:
    """Counts of OUTCOMES over ``count`` inferences, the link figures, and the time taken."""
    from utvm.host_driven.errors import IoTimeoutError, TransportClosedError
    from utvm.model_library import HostReference, load
    from utvm.project_api.errors import UserError

    clear_errors = (UserError, IoTimeoutError, TransportClosedError)
    library = load(archive)
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(OUTCOMES, 0)
    errors: dict = {}
    links = []
    session = None
    episode = 0
    started = time.monotonic()
    with HostReference(library) as reference:
        for _ in range(count):
            inputs = {spec["name"]: _random_input(rng, spec) for spec in library.inputs}
            for name, value in inputs.items():
                reference.set_input(name, value)
            reference.run()
            expected = [reference.get_output(i) for i in range(len(library.outputs))]
            try:
                with deadline(hang_after):
                    if session is None:
                        episode += 1
                        session = open_session(rate, seed * 1000 + episode).open()
                    session.set_inputs(inputs)
                    session.run()
                    got = [session.get_output(i) for i in range(len(library.outputs))]
                exact = all(np.array_equal(g, e) for g, e in zip(got, expected))
                counts["exact" if exact else "wrong"] += 1
            except (Hang, *clear_errors) as err:
                counts["hang" if isinstance(err, Hang) else "clear_error"] += 1
                key = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
                errors[key] = errors.get(key, 0) + 1
                session = _close(session, links)
    _close(session, links)
    return {**counts, "seconds": round(time.monotonic() - started, 1), "sessions": episode,
            "errors": errors, "link": _merge(links)}


def _random_input(rng, spec) -> np.ndarray:
    dtype = np.dtype(spec["dtype"])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=spec["shape"], endpoint=True).astype(dtype)
    return rng.standard_normal(spec["shape"]).astype(dtype)


def _close(session, links):
    if session is not None:
        if session.protocol is not None and session.protocol.session_id:
            links.append(session.protocol.link.as_dict())
        session.close()
    return None


def _merge(links) -> dict:
    """The sessions' link figures added up (packet sizes: the smallest reached)."""
    if not links:
        return {}
    total = {key: sum(link[key] for link in links) for key in
             ("frames_received", "frames_corrupted", "retransmissions", "lost_requests", "lost_replies",
              "packet_shrinks")}
    total["frame_error_rate"] = round(total["frames_corrupted"] / max(1, total["frames_received"]), 4)
    total["smallest_packet_bytes"] = min(link["packet_bytes"] for link in links)
    return total


def table(results: dict) -> str:
    rows = ["link  rate     exact  clear error  hang  wrong  exact %  time (s)  packet  frame errors",
            "----  -------  -----  -----------  ----  -----  -------  --------  ------  ------------"]
    for link, by_rate in results.items():
        for rate, r in by_rate.items():
            n = sum(r[k] for k in OUTCOMES)
            rows.append(f"{link:<4}  {float(rate):<7g}  {r['exact']:>5}  {r['clear_error']:>11}  "
                        f"{r['hang']:>4}  {r['wrong']:>5}  {100 * r['exact'] / max(1, n):>6.1f}%  "
                        f"{r['seconds']:>8}  "
                        f"{r['link'].get('smallest_packet_bytes', '-'):>6}  "
                        f"{r['link'].get('frame_error_rate', 0):>12.4f}")
    return "\n".join(rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.model.is_file():
        print(f"error: model {args.model} not found (give one with --model)", file=sys.stderr)
        return 2
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="utvm-soak-") as tmp:
        for link in args.links:
            workdir = Path(tmp) / link
            workdir.mkdir()
            build = build_pipe_project if link == "pipe" else build_qemu_project
            archive, project_dir = build(args.model, workdir)
            opener = functools.partial(pipe_session if link == "pipe" else qemu_session, archive, project_dir)
            results[link] = {}
            for rate in args.rates:
                results[link][repr(rate)] = soak(opener, archive, rate, args.inferences, args.hang_after,
                                                 args.seed)
                print(f"{link} {rate:g}: {json.dumps(results[link][repr(rate)])}", flush=True)
    print()
    print(f"python -m bench.soak {' '.join(argv if argv is not None else sys.argv[1:])}".strip())
    print(f"model {args.model.name}, {args.inferences} inferences per link and rate")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    wrong = sum(r["wrong"] + r["hang"] for by_rate in results.values() for r in by_rate.values())
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
