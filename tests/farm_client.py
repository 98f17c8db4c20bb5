"""A farm client as a process of its own, for tests/test_farm.py: waits for a go-file (so that several
start at once), takes a board from the tracker with utvm.farm.Session.from_tracker, runs the model on
the inputs of an .npz and writes the outputs to another. Prints "ready" once it waits for the go-file,
"running" just before the device work (optionally a long benchmark first, so that a test can kill
someone mid-run), "done" at the end, and "error: TYPE: message" with exit code 1 on a utvm error.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tracker", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--archive", required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--go", help="wait until this file exists before asking for a board")
    parser.add_argument("--token-file")
    parser.add_argument("--token", help="give this token instead of a file's")
    parser.add_argument("--busy-runs", type=int, default=0, help="a benchmark of this many runs first")
    parser.add_argument("--queue-timeout", type=float, default=300.0)
    args = parser.parse_args()

    import numpy as np
    import tvm.rpc  # noqa: F401 - imported before the go-file, so that the clients really start together
    from utvm.farm import Session
    from utvm.project_api.errors import ServerError, UserError

    if args.go:
        print("ready", flush=True)
        deadline = time.monotonic() + 300
        while not pathlib.Path(args.go).exists():
            if time.monotonic() > deadline:
                print("error: the go-file never appeared", flush=True)
                return 3
            time.sleep(0.05)
    try:
        session = Session.from_tracker(args.tracker, args.key, args.archive, token=args.token,
                                       token_file=args.token_file, queue_timeout=args.queue_timeout,
                                       say=lambda text: print(text, flush=True), run_timeout=300.0)
        with session:
            with np.load(args.inputs) as npz:
                session.set_inputs({name: npz[name] for name in npz.files})
            print("running", flush=True)
            if args.busy_runs:
                session.benchmark(number=args.busy_runs, repeat=1, warmup=0)
            session.run()
            with open(args.output, "wb") as f:
                np.savez(f, **session.get_outputs())
    except (UserError, ServerError) as err:
        print(f"error: {type(err).__name__}: {err}", flush=True)
        return 1
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
