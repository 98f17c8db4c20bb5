"""`python -m bench`: utvm's host-driven path against its peers, from one run, as ratios.

Sections:
1. transport: a no-op round trip and 4 MiB upload / download, for utvm's POSIX host device,
   TVM's own RPC (server and client on 127.0.0.1) and the raw pipe;
2. model latency on the host CPU for the MLPerf Tiny models in ../shared/models: the utvm host
   device (timed by the device's own clock), TVM's LLVM build and the TFLite interpreter (1 thread);
3. the device runtime's code size without a model (host gcc and arm-none-eabi-gcc, Cortex-M3);
4. arena: utvm's arena against TFLite Micro's activation plan (the tflite-micro package);
5. Cortex-M: instructions per inference and per layer under QEMU on Cortex-M3/M4F/M7 at -Os and
   -O2, with CMSIS-NN's instructions for the same layers given `--cmsis-nn DIR` (a checkout the
   user fetched; the bench builds it, utvm never ships it).

Every process is pinned to one CPU by default: on a 2-core VM, a wake-up across CPUs costs tens
of microseconds and lands at random, which swamps round trips (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS_DIR = REPO_ROOT.parent / "shared" / "models"
DEFAULT_MODELS = ("kws_dscnn_int8", "ic_resnet8_int8", "ad01_int8", "ad01_fp32")
MIB = 1 << 20


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and one model (a smoke run)")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR,
                        help="folder of .tflite models (default: ../shared/models beside the checkout)")
    parser.add_argument("--models", nargs="*", default=None, metavar="NAME",
                        help=f"model names without .tflite (default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--tensor-mib", type=float, default=4.0, help="size of the transferred tensor (MiB)")
    parser.add_argument("--placement", default="same", choices=["same", "split", "none"],
                        help="same: every process on one CPU (default, stable); split: host on one CPU, "
                             "peer processes on another; none: the OS decides")
    parser.add_argument("--cpus", default=None, metavar="HOST[,PEER]",
                        help="CPU numbers to use (default: the last two this process may use)")
    parser.add_argument("--cmsis-nn", type=Path, default=None, metavar="DIR",
                        help="a CMSIS-NN checkout: adds its instruction counts to the Cortex-M section")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["transport", "models", "size", "arena", "cortex-m"],
                        help="sections to leave out")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    return parser.parse_args(argv)


def run_section(name: str, fn, errors: dict):
    """Run one measurement; on failure keep going and remember why (printed in the report)."""
    try:
        return fn()
    except Exception as exc:  # a missing peer must not hide the other figures
        errors[name] = f"{type(exc).__name__}: {exc}"
        if os.environ.get("UTVM_BENCH_DEBUG"):
            traceback.print_exc()
        return None


def main(argv=None) -> int:
    args = parse_args(argv)
    # One thread for TVM's kernels, matching the one-thread TFLite peer (set before TVM loads).
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    from .placement import Placement

    place = Placement(args.placement, args.cpus)
    placement = place.describe()

    from . import code_size, machine, model_peers, pipe_peer, report, rpc_peer, transport_bench, utvm_device

    number, repeat = (300, 5) if args.quick else (3000, 7)
    xfer_repeat = 3 if args.quick else 7
    nbytes = int(args.tensor_mib * MIB)
    names = args.models if args.models is not None else (DEFAULT_MODELS[:1] if args.quick else DEFAULT_MODELS)
    errors: dict[str, str] = {}
    results: dict = {"machine": machine.describe(), "placement": placement,
                     "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])}

    out = [f"utvm bench: host-driven path against its peers ({results['command'].strip()})"]
    out += [f"  {k}: {v}" for k, v in results["machine"].items()] + [f"  placement: {placement}", ""]
    print("\n".join(out), flush=True)

    if "transport" not in args.skip:
        with place.spawning():
            peers = transport_bench.open_peers({
                "utvm": lambda: utvm_device.UtvmPeer(nbytes),
                "tvm_rpc": lambda: rpc_peer.RpcPeer(nbytes),
                "raw_pipe": lambda: pipe_peer.PipePeer(nbytes),
            }, errors)
        try:
            transport = run_section("transport", lambda: transport_bench.measure(
                peers, nbytes, number=number, repeat=repeat, xfer_repeat=xfer_repeat), errors) or {}
            if "utvm" in peers:
                transport.setdefault("utvm", {}).update(peers["utvm"].packet)
        finally:
            for peer in peers.values():
                peer.close()
        results["transport"] = transport
        print(report.transport_table(transport, nbytes) + "\n", flush=True)

    if "models" not in args.skip:
        models = {}
        for name in names:
            path = args.models_dir / f"{name}.tflite"
            if not path.is_file():
                errors[f"model {name}"] = f"{path} not found"
                continue
            models[name] = measure_model(path, quick=args.quick, errors=errors, place=place,
                                         peers=model_peers, device=utvm_device)
        results["models"] = models
        if models:
            print(report.model_table(models) + "\n", flush=True)

    if "size" not in args.skip:
        results["code_size"] = run_section("code size", code_size.measure, errors) or {}
        if results["code_size"]:
            print(report.size_table(results["code_size"]) + "\n", flush=True)

    paths = [args.models_dir / f"{n}.tflite" for n in names]
    if "arena" not in args.skip:
        from . import arena

        arenas = {p.stem: run_section(f"arena {p.stem}", lambda p=p: arena.measure(p), errors)
                  for p in paths if p.is_file() and "int8" in p.stem}
        results["arena"] = {k: v for k, v in arenas.items() if v}
        if results["arena"]:
            print(report.arena_table(results["arena"]) + "\n", flush=True)

    if "cortex-m" not in args.skip:
        from . import cortex_m

        int8_models = [p for p in paths if p.is_file() and "int8" in p.stem]
        counts = cortex_m.measure(int8_models, args.cmsis_nn, errors, run_section,
                                  progress=lambda line: print(line, file=sys.stderr, flush=True))
        results["cortex_m"] = {"counts": counts, "summary": cortex_m.summarize(counts)}
        print(report.cortex_m_table(results["cortex_m"]["summary"]) + "\n", flush=True)
        for name in counts:
            for board in ("mps2_an386", "mps2_an385"):
                if board in counts[name] and args.cmsis_nn is not None:
                    rows = cortex_m.layer_rows(counts, name, board, "-Os")
                    print(report.cortex_m_layers(rows, f"{name} {board} -Os, per layer") + "\n", flush=True)

    if errors:
        results["errors"] = errors
        print("not measured:\n" + "\n".join(f"  {k}: {v}" for k, v in errors.items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")
    return 1 if errors else 0


def measure_model(path: Path, *, quick: bool, errors: dict, place, peers, device) -> dict:
    """Latency of one model on the utvm host device, TVM's LLVM build and TFLite; agreement."""
    name = path.stem
    number, repeat = (20, 3) if quick else (200, 7)
    inputs = peers.random_inputs(path, seed=0)
    row: dict = {}
    ref = run_section(f"{name} TFLite",
                      lambda: peers.tflite(path, inputs, number=number, repeat=repeat), errors)
    if ref is not None:
        row["tflite_s"], ref_out = ref
    tvm_result = run_section(f"{name} TVM LLVM",
                             lambda: peers.tvm_llvm(path, inputs, number=number, repeat=repeat), errors)
    if tvm_result is not None:
        row["tvm_llvm_s"], tvm_out, _ = tvm_result
        if ref is not None:
            row["tvm_llvm_max_diff"] = peers.max_abs_diff(tvm_out, ref_out)
    with place.spawning():  # the device is timed by its own clock; only its placement matters here
        dev_result = run_section(f"{name} utvm", lambda: device.measure_model(
            path, inputs, number=number, repeat=repeat), errors)
    if dev_result is not None:
        row.update({k: v for k, v in dev_result.items() if k != "outputs"})
        if ref is not None:
            row["utvm_max_diff"] = peers.max_abs_diff(dev_result["outputs"], ref_out)
    return row


if __name__ == "__main__":
    sys.exit(main())
