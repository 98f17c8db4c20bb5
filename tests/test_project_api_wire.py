"""Wire compatibility (both ways, with peers written only from the spec), malformed requests,
large transport payloads, and a channel that stdout junk cannot corrupt."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys

import pytest
from project_api_peers import EXAMPLE_TEMPLATE, copy_peer, make_mlf, read_calls
from project_api_peers.spec_client import SpecClient
from utvm.project_api import wire
from utvm.project_api.client import JSONRPCError, ProjectAPIClient, RemoteServerError
from utvm.project_api.errors import IoTimeoutError, TransportClosedError
from utvm.project_api.options import OptionError
from utvm.project_api.project import TemplateProject

pytestmark = pytest.mark.timeout(180)


# ----- our client, a server written from the spec -----


def test_our_client_drives_a_spec_server(tmp_path):
    template_dir = copy_peer("spec_server", tmp_path)
    mlf = make_mlf(tmp_path / "model.tar")
    with TemplateProject.from_directory(template_dir, echo=False) as template:
        assert template.info()["platform_name"] == "spec"
        assert not template.has_extension("utvm_anything")  # a v1 server declares none
        with pytest.raises(OptionError, match="choices"):
            template.generate_project(mlf, tmp_path / "bad", {"board": "gamma"})
        assert read_calls(template_dir) == ["server_info_query"]  # the bad choice never left the client
        project = template.generate_project(mlf, tmp_path / "proj", {"board": "alpha"})
    assert json.loads((tmp_path / "proj" / "generated.marker").read_text()) == {"board": "alpha"}

    with project:
        assert project.info()["is_template"] is False
        with pytest.raises(RemoteServerError) as failed:
            project.flash()  # the spec server refuses to flash before a build
        assert failed.value.remote_type == "RuntimeError"
        assert "not built" in str(failed.value)
        assert "Traceback" in failed.value.remote_traceback
        project.build({"jobs": "4", "verbose": "yes"})
        assert json.loads((tmp_path / "proj" / "built.marker").read_text()) == {"jobs": 4, "verbose": True}
        project.flash()
        assert project.open_transport()["timeouts"] == {
            "session_start_retry_timeout_sec": 2.0,
            "session_start_timeout_sec": 10.0,
            "session_established_timeout_sec": 20.0,
        }
        project.write_transport(b"hello", 1.0)
        assert project.read_transport(3, 1.0) == b"hel"
        assert project.read_transport(10, 1.0) == b"lo"
        with pytest.raises(IoTimeoutError, match="nothing to read") as timed_out:
            project.read_transport(1, 0.1)
        assert "Traceback" in timed_out.value.remote_traceback
        project.close_transport()
        with pytest.raises(TransportClosedError):
            project.write_transport(b"x", 1.0)


# ----- a client written from the spec, our servers -----


def test_spec_client_drives_the_example_template_and_its_project(tmp_path):
    mlf = make_mlf(tmp_path / "model.tar")
    project_dir = tmp_path / "proj"
    client = SpecClient(EXAMPLE_TEMPLATE)
    info = client.call("server_info_query", {"tvm_version": "0.27.0"})
    assert info["protocol_version"] == 1
    assert info["platform_name"] == "example" and info["is_template"] is True
    for option in info["project_options"]:
        assert set(option) >= {"name", "type", "choices", "default", "required", "optional", "help"}
    assert (
        client.call(
            "generate_project",
            {
                "model_library_format_path": str(mlf),
                "standalone_crt_dir": None,
                "project_dir": str(project_dir),
                "options": {"app_name": "spec"},
            },
        )
        is None
    )
    assert client.close()[0] == 0
    assert (project_dir / "microtvm_api_server.py").is_file()
    assert (project_dir / "project_api" / "server.py").is_file()  # the floor it stands on

    client = SpecClient(project_dir)
    info = client.call("server_info_query", {"tvm_version": "0.27.0"})
    assert info["is_template"] is False
    assert {o["name"]: o["default"] for o in info["project_options"]}["app_name"] == "spec"
    timeouts = client.call("open_transport", {"options": {}})["timeouts"]
    assert set(timeouts) == {
        "session_start_retry_timeout_sec",
        "session_start_timeout_sec",
        "session_established_timeout_sec",
    }
    assert client.write_transport(b"abc", 1.0) is None
    assert client.read_transport(2, 1.0) == b"ab"
    assert client.read_transport(2, 1.0) == b"c"
    error = client.request("read_transport", {"n": 4, "timeout_sec": 0.01})["error"]
    assert error["code"] == -32000 and error["message"] == "IoTimeoutError"
    assert "IoTimeoutError" in error["data"]["traceback"]
    client.call("close_transport")
    assert client.request("write_transport", {"data": "", "timeout_sec": 1.0})["error"]["message"] == (
        "TransportClosedError"
    )
    assert client.close()[0] == 0


def test_generated_project_builds_with_the_spec_client(tmp_path):
    if shutil.which("cc") is None:
        pytest.skip("cc not installed: the example template's build runs the host C compiler")
    with TemplateProject.from_directory(EXAMPLE_TEMPLATE, echo=False) as template:
        template.generate_project(
            make_mlf(tmp_path / "m.tar"), tmp_path / "proj", {"app_name": "demo"}
        ).close()
    client = SpecClient(tmp_path / "proj")
    client.call("server_info_query", {"tvm_version": "0.27.0"})
    # No app_name here: the project remembers the options it was generated with.
    client.call("build", {"options": {}}, timeout=120)
    client.call("flash", {"options": {}})
    assert client.close()[0] == 0
    assert (tmp_path / "proj" / "build" / "demo").is_file()


# ----- malformed requests -----

_SERVER_INFO = (
    b'{"jsonrpc": "2.0", "method": "server_info_query", "params": {"tvm_version": "x"}, "id": 99}\n'
)

MALFORMED = [
    (b"{not json\n", -32700),
    (b"\xff\xfe\x00 garbage\n", -32700),
    (b"[1, 2]\n", -32600),
    (b'"just a string"\n', -32600),
    (b'{"jsonrpc": "1.0", "method": "server_info_query", "params": {"tvm_version": "x"}, "id": 1}\n', -32600),
    (b'{"jsonrpc": "2.0", "method": 5, "params": {}, "id": 1}\n', -32600),
    (b'{"jsonrpc": "2.0", "method": "server_info_query", "params": {"tvm_version": "x"}}\n', -32600),
    (b'{"jsonrpc": "2.0", "method": "server_info_query", "params": {}, "id": [1]}\n', -32600),
    (b'{"jsonrpc": "2.0", "method": "no_such_method", "params": {}, "id": 1}\n', -32601),
    (b'{"jsonrpc": "2.0", "method": "_call_build", "params": {"options": {}}, "id": 1}\n', -32601),
    (b'{"jsonrpc": "2.0", "method": "__init__", "params": {}, "id": 1}\n', -32601),
    (b'{"jsonrpc": "2.0", "method": "server_info_query", "params": ["x"], "id": 1}\n', -32602),
    (b'{"jsonrpc": "2.0", "method": "flash", "params": {}, "id": 1}\n', -32602),
    (b'{"jsonrpc": "2.0", "method": "generate_project", "params": {"options": {}}, "id": 1}\n', -32602),
    (b'{"jsonrpc": "2.0", "method": "server_info_query", "params": {"tvm_version": 3}, "id": 1}\n', -32602),
    (b'{"jsonrpc": "2.0", "method": "build", "params": {"options": {}, "extra": 1}, "id": 1}\n', -32602),
    (b'{"jsonrpc": "2.0", "method": "build", "params": {"options": "all"}, "id": 1}\n', -32602),
    (b'{"jsonrpc": "2.0", "method": "read_transport", "params": {"n": "ten"}, "id": 1}\n', -32602),
    (b'{"jsonrpc": "2.0", "method": "read_transport", "params": {"n": true}, "id": 1}\n', -32602),
    (b'{"jsonrpc": "2.0", "method": "read_transport", "params": {"n": -1}, "id": 1}\n', -32602),
    (b'{"jsonrpc": "2.0", "method": "read_transport", "params": {"timeout_sec": 1}, "id": 1}\n', -32602),
    (b'{"jsonrpc": "2.0", "method": "write_transport", "params": {"data": "\\u00e9"}, "id": 1}\n', -32602),
    (b'{"jsonrpc": "2.0", "method": "utvm_loopback_stats", "params": {"bogus": 1}, "id": 1}\n', -32602),
    (b'{"jsonrpc": "2.0", "method": "build", "params": {"options": {}}, "id": "b"}\n', -32000),
]


def test_malformed_requests_get_the_right_error_and_the_server_keeps_serving():
    client = SpecClient(EXAMPLE_TEMPLATE)
    try:
        for raw, code in MALFORMED:
            client.send_raw(raw)
            reply = client.read_reply(timeout=30)
            assert reply.get("jsonrpc") == "2.0", raw
            assert reply["error"]["code"] == code, (raw, reply)
            assert reply["error"]["message"], raw
            try:
                sent_id = json.loads(raw).get("id")
            except (ValueError, AttributeError):
                sent_id = None
            if code in (-32601, -32602, -32000):
                assert reply["id"] == sent_id, (raw, reply)
            client.send_raw(_SERVER_INFO)
            assert client.read_reply(timeout=30)["result"]["platform_name"] == "example", raw
        # Params may be left out where none are required (microTVM clients sent no tvm_version).
        client.send_raw(b'{"jsonrpc": "2.0", "method": "server_info_query", "id": 7}\n')
        assert client.read_reply(timeout=30)["result"]["is_template"] is True
        # Blank lines are ignored, and the server still answers.
        client.send_raw(b"\n  \n" + _SERVER_INFO)
        assert client.read_reply(timeout=30)["id"] == 99
    finally:
        code, _, stderr = client.close()
    assert code == 0, stderr


# ----- large payloads -----


def test_base85_codec_matches_the_standard_library():
    for size in (0, 1, 2, 3, 4, 5, 65535, 65536, 65537, 65538, 65539, 200_003):
        data = os.urandom(size)
        text = wire.b85encode(data)
        assert text == base64.b85encode(data).decode("ascii"), size
        assert wire.b85decode(text) == data, size
    for bad in ("~" * 70_000, "a" * 69_999 + " "):
        with pytest.raises(ValueError):
            wire.b85decode(bad)
        with pytest.raises(ValueError):
            base64.b85decode(bad)


@pytest.fixture
def example_project(tmp_path):
    with TemplateProject.from_directory(EXAMPLE_TEMPLATE, echo=False) as template:
        project = template.generate_project(
            make_mlf(tmp_path / "m.tar"), tmp_path / "proj", {"app_name": "big"}
        )
    project.close()
    return tmp_path / "proj"


def test_16_mib_round_trip_through_the_example_loopback(example_project):
    data = os.urandom(16 << 20)
    with ProjectAPIClient(example_project, echo=False) as client:
        client.open_transport()
        client.write_transport(data, 5.0)
        assert client.call("utvm_loopback_stats") == {"buffered": 16 << 20}
        assert client.read_transport(16 << 20, 5.0) == data
        client.close_transport()


def test_16_mib_with_a_bare_interpreter_server(example_project):
    """The project runs on its own copy of the server base, on a Python without utvm or numpy,
    started through launch_microtvm_api_server.sh; payloads cross between the two codecs."""
    launcher = example_project / "launch_microtvm_api_server.sh"
    # -I -S: no site-packages, so neither utvm nor numpy is importable by the server.
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "$@"\n')
    launcher.chmod(0o755)
    data = os.urandom(16 << 20)
    with ProjectAPIClient(example_project, echo=False) as client:
        assert client.info["platform_name"] == "example"
        client.open_transport()
        client.write_transport(data, 5.0)
        assert client.read_transport(16 << 20, 5.0) == data
        with pytest.raises(IoTimeoutError):
            client.read_transport(1, 0.0)


# ----- stdout cannot corrupt the channel -----


def test_stdout_junk_and_child_processes_cannot_corrupt_the_channel(tmp_path):
    noisy = copy_peer("noisy", tmp_path)
    with ProjectAPIClient(noisy, echo=False) as client:
        assert client.info["platform_name"] == "noisy"
        assert client.has_extension("utvm_echo") and client.has_extension("utvm_bad_result")
        client.build({"n": "3"})
        assert json.loads((noisy / "build.json").read_text()) == {"n": 3}
        # Both children (os.system and subprocess with close_fds=False) found no channel to write to.
        outcomes = (noisy / "intruder.log").read_text().splitlines()
        assert len(outcomes) == 2 and all(o.startswith("channel fd unusable") for o in outcomes), outcomes
        client.flash()
        assert client.read_transport(5, 1.0) == b"xxxxx"
        assert client.call("utvm_echo", {"value": "hi", "times": 2}) == ["hi", "hi"]
        with pytest.raises(JSONRPCError) as unserialisable:
            client.call("utvm_bad_result")
        assert unserialisable.value.code == -32603
        assert client.call("utvm_echo", {"value": 1}) == [1]  # still serving
    assert client.exit_code == 0
