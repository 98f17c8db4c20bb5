"""docs/farm.md's walk-through, run as a new user runs it: each ```sh server block in a terminal of its
own (a background process group, stopped with SIGINT as Ctrl-C stops it; the next step waits until it
says it is up), each ```sh block in order in the client's terminal, all in one directory, with a
model.tflite there. Only the port numbers are changed, to free ones.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest
from conftest import REPO_ROOT, require_tool
from farm_helpers import Proc, free_port, processes_mentioning, stopping_what_starts, wait_until_gone

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _stop_what_the_test_started():
    with stopping_what_starts():
        yield

DOC = REPO_ROOT / "docs" / "farm.md"
DOC_PORTS = ("9190", "9090", "9080")  # tracker, proxy, proxy's web port
# What each server prints once it is up: a new user reads it in the terminal before opening the next.
SERVER_READY = (("rpc_tracker", r"bind to \S+:\d+"), ("rpc_proxy", r"Websock port bind"),
                ("farm node", r"serving (on|through)"))


def walkthrough_blocks(text: str) -> List[Tuple[str, str]]:
    """(kind, commands) of the walk-through's ```sh and ```sh server blocks, in order."""
    section = text.split("## Walk-through", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(sh(?: server)?)\n(.*?)```", section, re.S)
    return [(info.strip(), body.strip()) for info, body in blocks]


def run_walkthrough(workdir: Path, servers: List[Proc], ports=DOC_PORTS) -> List[Tuple[str, str]]:
    """Run the walk-through in workdir (which holds model.tflite); [(commands, output)]. The servers
    started are added to ``servers`` as they start, for the caller to stop whatever happens."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("UTVM_FARM_TOKEN", None)
    outputs = []
    for kind, commands in walkthrough_blocks(DOC.read_text()):
        for old, new in zip(DOC_PORTS, ports):
            commands = commands.replace(old, str(new))
        if kind == "sh server":
            log = workdir / f"terminal-{len(servers) + 1}.log"
            server = Proc(["bash", "-c", f"exec {commands}"], log, cwd=workdir, env=env)
            servers.append(server)
            for name, ready in SERVER_READY:
                if name in commands:
                    server.wait_for(ready)
            continue
        result = subprocess.run(["bash", "-e", "-c", commands], cwd=workdir, env=env, capture_output=True,
                                text=True, timeout=1200)
        outputs.append((commands, result.stdout + result.stderr))
        assert result.returncode == 0, f"{commands}\n{result.stdout}{result.stderr}"
    return outputs


def test_the_walkthrough_runs_as_written(tmp_path):
    require_tool("qemu-system-arm")
    require_tool("arm-none-eabi-gcc")
    from model_builders import make_small_tflite

    make_small_tflite(tmp_path / "model.tflite", True)
    # Below TVM's default --port-end; the proxy's below 9091, where the host node starts looking.
    ports = [free_port(9100, 9189), free_port(9000, 9091), free_port()]
    servers: List[Proc] = []
    try:
        outputs = run_walkthrough(tmp_path, servers, ports)
        said = "\n".join(output for _, output in outputs)
        assert re.search(r"host\s+1\s+1\s+0\s+0", said) and re.search(r"mps2_an386\s+0\+proxy\s+1", said)
        assert "validation: PASS" in said and "instructions per run" in said
        assert (tmp_path / "first.npz").is_file() and (tmp_path / "second.npz").is_file()
        assert "refused the token" in said and "exit code 2" in said
        # The queued run's record, beside its outputs: the node's board, emulated, under its key.
        assert '"key": "mps2_an386"' in said and '"emulated": true' in said
        record = json.loads((tmp_path / "second.record.json").read_text())
        assert record["board"]["node"] == f"127.0.0.1:{ports[1]}" and record["firmware"]["sha256"]
    finally:
        for server in reversed(servers):  # Ctrl-C in terminals 4, 3, 2 and 1
            server.interrupt()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                pass
            server.stop()
    for server in servers:
        if "farm node" in " ".join(server.argv):
            assert "stopping" in server.text()
    assert not wait_until_gone(str(tmp_path)), processes_mentioning(str(tmp_path))
