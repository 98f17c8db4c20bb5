"""Find a physical board: its serial port with pyserial's `list_ports`, its debug probe with pyusb.

Every template with physical boards uses this (bare-metal, Zephyr, Arduino).

Boards are matched by the USB VID:PID pairs of their record and, when several are plugged in, by
USB serial number (the `serial_number` project option). No match, or more than one, is an error
that lists what was found. Standard library only at import; pyserial (and pyusb, optional) when called.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple


class DiscoveryError(RuntimeError):
    """No device, or more than one, matched the board."""


def parse_vid_pid(text: str) -> Tuple[int, int]:
    """'0483:374b' -> (0x0483, 0x374b)."""
    vid, _, pid = text.partition(":")
    try:
        return int(vid, 16), int(pid, 16)
    except ValueError:
        raise DiscoveryError(f"bad USB id {text!r}; want 'vvvv:pppp' in hex") from None


def _ids_text(vid_pids: Sequence[str]) -> str:
    return ", ".join(vid_pids) or "(none recorded)"


def _describe_port(port) -> str:
    ids = f"{port.vid:04x}:{port.pid:04x}" if port.vid is not None else "no USB id"
    return f"{port.device} ({ids}, serial {port.serial_number or '-'}, {port.description})"


def find_serial_port(vid_pids: Sequence[str], serial_number: Optional[str] = None,
                     board: str = "the board") -> str:
    """The device path of the one serial port whose USB VID:PID is in vid_pids (and whose USB serial
    number is serial_number, when given)."""
    import serial.tools.list_ports  # looked up at call time, so tests can substitute comports()

    wanted = {parse_vid_pid(v) for v in vid_pids}
    ports = list(serial.tools.list_ports.comports())
    matches = [p for p in ports if (p.vid, p.pid) in wanted
               and (serial_number is None or p.serial_number == serial_number)]
    if len(matches) == 1:
        return matches[0].device
    which = f"USB id {_ids_text(vid_pids)}" + (f" and serial number {serial_number}" if serial_number else "")
    if not matches:
        seen = "; ".join(_describe_port(p) for p in ports) or "none"
        raise DiscoveryError(f"no serial port of {board} found ({which}); serial ports present: {seen}. "
                             "Is the board plugged in, and may this user open it (dialout group)?")
    listing = "; ".join(_describe_port(p) for p in matches)
    raise DiscoveryError(f"{len(matches)} serial ports match {board} ({which}): {listing}. "
                         "Choose one with -o serial_number=<serial>.")


@dataclasses.dataclass(frozen=True)
class Probe:
    """A USB device that matches a board's VID:PID: its on-board debug probe (or the board itself)."""

    vid: int
    pid: int
    serial_number: Optional[str]
    bus: Optional[int]
    address: Optional[int]

    @property
    def vid_pid(self) -> str:
        return f"{self.vid:04x}:{self.pid:04x}"


def _usb_serial(dev) -> Optional[str]:
    import usb.util

    if not dev.iSerialNumber:
        return None
    try:
        return usb.util.get_string(dev, dev.iSerialNumber)
    except (usb.core.USBError, ValueError, NotImplementedError):
        return None  # no permission to open the device, or no string descriptors


def list_probes(vid_pids: Sequence[str], backend=None) -> List[Probe]:
    """Every USB device whose VID:PID is in vid_pids, via pyusb (backend: a pyusb backend object;
    None lets pyusb pick libusb). Serial numbers it may not read come back as None."""
    try:
        import usb.core
    except ImportError:
        raise DiscoveryError("pyusb is not installed; `pip install pyusb` to list debug probes") from None
    wanted = {parse_vid_pid(v) for v in vid_pids}
    try:
        devices = list(usb.core.find(find_all=True, backend=backend,
                                     custom_match=lambda d: (d.idVendor, d.idProduct) in wanted))
    except usb.core.NoBackendError:
        raise DiscoveryError("pyusb found no USB backend; install libusb-1.0 (Debian: libusb-1.0-0)") \
            from None
    return [Probe(d.idVendor, d.idProduct, _usb_serial(d), d.bus, d.address) for d in devices]


def select_probe(vid_pids: Sequence[str], serial_number: Optional[str] = None, board: str = "the board",
                 backend=None) -> Probe:
    """The one probe for the board (by serial number when given); errors list every candidate."""
    probes = list_probes(vid_pids, backend=backend)
    matches = [p for p in probes if serial_number is None or p.serial_number == serial_number]
    if len(matches) == 1:
        return matches[0]
    listing = "; ".join(f"{p.vid_pid} serial {p.serial_number or '?'} (bus {p.bus}, address {p.address})"
                        for p in probes) or "none"
    if not matches:
        which = _ids_text(vid_pids) + (f", serial number {serial_number}" if serial_number else "")
        raise DiscoveryError(f"no debug probe of {board} found (USB id {which}); found: {listing}")
    raise DiscoveryError(f"{len(matches)} debug probes match {board}: {listing}. "
                         "Choose one with -o serial_number=<serial>.")
