"""Servers that hang, die or write garbage become clear errors, and never hang the caller."""

from __future__ import annotations

import gc
import os

import pytest
from project_api_peers import PEERS_DIR
from utvm.project_api.client import (
    ProjectAPIClient,
    ProjectAPIError,
    ServerDiedError,
    ServerLaunchError,
    ServerProtocolError,
    ServerTimeoutError,
)
from utvm.project_api.errors import UserError
from utvm.project_api.project import GeneratedProject

# Each test takes seconds; this bounds a regression that would hang.
pytestmark = pytest.mark.timeout(60)

MISBEHAVING = PEERS_DIR / "misbehaving"


def misbehaving(mode: str, **options) -> ProjectAPIClient:
    return ProjectAPIClient(MISBEHAVING, env={**os.environ, "UTVM_TEST_MODE": mode}, echo=False, **options)


def test_a_hung_build_times_out_naming_method_exit_code_and_stderr():
    client = misbehaving("hang", timeouts={"build": 1.5})
    assert client.server_info_query()["platform_name"] == "misbehaving"
    with pytest.raises(ServerTimeoutError) as error:
        client.build()
    text = str(error.value)
    assert "did not answer build within 1.5 s" in text
    # The server ignores SIGTERM while it hangs, so it had to be killed.
    assert "SIGKILL" in text
    assert "hanging in build now" in text
    assert "--timeout" in error.value.hint
    assert client.exit_code is not None
    # The client refuses further calls instead of waiting on a dead channel.
    with pytest.raises(ProjectAPIError, match="unusable"):
        client.server_info_query()
    client.close()


def test_a_per_call_timeout_overrides_the_default():
    with misbehaving("hang") as client:
        with pytest.raises(ServerTimeoutError, match="within 0.5 s"):
            client.build(timeout=0.5)


def test_a_server_hung_at_start_times_out():
    client = misbehaving("hang-at-start")
    with pytest.raises(ServerTimeoutError) as error:
        client.server_info_query(timeout=1.0)
    assert "server_info_query" in str(error.value)
    assert "SIGTERM" in str(error.value)
    client.close()


@pytest.mark.parametrize(
    "mode, code, last_words",
    [
        ("die", 3, "fatal: simulated crash in build"),
        # No end-of-file arrives in this one (a child keeps the pipe); the client notices the exit.
        ("die-leaking-channel", 4, "a child holding the channel"),
    ],
)
def test_a_server_that_dies_in_build(mode, code, last_words):
    with misbehaving(mode) as client:
        client.server_info_query()
        with pytest.raises(ServerDiedError) as error:
            client.build()
    assert "died during build" in error.value.message
    assert f"exited with code {code}" in error.value.message
    assert last_words in error.value.details


def test_a_server_that_dies_at_start():
    with pytest.raises(ServerDiedError) as error:
        GeneratedProject.from_directory(
            MISBEHAVING, env={**os.environ, "UTVM_TEST_MODE": "die-at-start"}, echo=False
        )
    assert "died during server_info_query" in error.value.message
    assert "exited with code 5" in error.value.message
    assert "simulated missing dependency" in error.value.details


@pytest.mark.parametrize("mode, complaint", [("garbage", "not JSON"), ("wrong-id", "does not match")])
def test_garbage_in_the_channel(mode, complaint):
    with misbehaving(mode) as client:
        client.server_info_query()
        with pytest.raises(ServerProtocolError) as error:
            client.build()
    assert complaint in error.value.message
    assert "invalid reply to build" in error.value.message
    assert "mode " + mode in error.value.details  # the stderr tail
    assert client.exit_code is not None  # a server that sends garbage is stopped


def test_close_stops_a_server_that_ignores_the_hangup():
    client = misbehaving("hang-at-start")
    assert client.close(timeout=0.5) is not None
    assert client.exit_code is not None


def test_a_directory_without_a_server():
    with pytest.raises(ServerLaunchError, match="has no microtvm_api_server.py") as error:
        ProjectAPIClient(PEERS_DIR)
    assert isinstance(error.value, UserError) and error.value.hint


def test_a_dropped_client_does_not_leave_its_server_running():
    client = misbehaving("hang-at-start")
    pid = client.pid
    del client
    gc.collect()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped and reaped by the client's finalizer
