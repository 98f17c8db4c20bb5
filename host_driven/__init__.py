"""The host side of a host-driven session: transports, framing, session, device client, executors.

    from utvm.host_driven import Session
    with Session.from_project("proj") as sess:      # or Session(transport, "model.tar")
        sess.set_input(0, x); sess.run(); y = sess.get_output(0)

Names are imported on first use, so importing this package (as the `utvm` command does) is cheap.
"""

from __future__ import annotations

from utvm.project_api.lazy_exports import lazy_exports

_LAZY = {
    # the user-facing session and its results
    "Session": ("executor", "Session"),
    "ModelMismatchError": ("executor", "ModelMismatchError"),
    "TvmRuntimeSession": ("tvm_runtime_session", "TvmRuntimeSession"),
    "BenchmarkResult": ("benchmark", "BenchmarkResult"),
    "ProfileReport": ("profile", "ProfileReport"),
    "ProfileRow": ("profile", "ProfileRow"),
    "ValidationReport": ("validate", "ValidationReport"),
    "ModelSignature": ("signature", "ModelSignature"),
    "SignatureError": ("signature", "SignatureError"),
    # transports
    "Transport": ("transport", "Transport"),
    "SubprocessTransport": ("transport", "SubprocessTransport"),
    "SerialTransport": ("serial_transport", "SerialTransport"),
    "TcpTransport": ("tcp_transport", "TcpTransport"),
    "RelayTransport": ("relay_transport", "RelayTransport"),
    "open_project_transport": ("direct", "open_project_transport"),
    # the protocol layer underneath
    "ProtocolSession": ("session", "ProtocolSession"),
    "DeviceClient": ("device", "DeviceClient"),
    "DeviceInfo": ("device", "DeviceInfo"),
    # errors
    "HostDrivenError": ("errors", "HostDrivenError"),
    "DeviceError": ("errors", "DeviceError"),
    "DeviceRebootedError": ("errors", "DeviceRebootedError"),
    "ProtocolError": ("errors", "ProtocolError"),
    "SessionClosedError": ("errors", "SessionClosedError"),
    "IoTimeoutError": ("errors", "IoTimeoutError"),
    "TransportClosedError": ("errors", "TransportClosedError"),
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_exports(__name__, _LAZY, globals())
