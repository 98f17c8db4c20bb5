"""Run the MLPerf Tiny runner (benchmark/runner/main.py of mlcommons/tiny) against a device under
test on a serial path it cannot discover by itself: the pseudo-terminal that `utvm pty` prints
has no USB VID:PID, and the runner finds devices by VID:PID only.

Copy this file into benchmark/runner and run it with main.py's own arguments, the path in
$UTVM_PTY (which `utvm pty PROJECT -- COMMAND` sets):

    utvm pty PROJECT -- python run_on_pty.py --device_list devices_kws_ic_vww.yaml --mode p ...

Only the runner's discovery step is replaced: the last DUT entry of the devices file (its baud
rate, its name) is attached to the path, as the runner would attach a DUT it found on USB. No
interface board or power monitor is used, as for a direct connection in performance and accuracy
modes. Everything else is the runner as it is.
"""

import os
import runpy
import sys

import device_manager  # the runner's module: run this file from benchmark/runner


def _scan_pty(self):
    path = os.environ.get("UTVM_PTY")
    if not path:
        sys.exit("run_on_pty.py: set UTVM_PTY to the device's path "
                 "(`utvm pty PROJECT -- python run_on_pty.py ...`)")
    duts = [d for d in self._device_defs if d.get("type") == "dut"]
    if not duts:
        sys.exit("run_on_pty.py: the devices file lists no device of type dut")
    self["dut"] = dict(duts[-1], port=path)
    self._instantiate(self["dut"])


device_manager.DeviceManager.scan = _scan_pty
sys.argv[0] = "main.py"
runpy.run_path("main.py", run_name="__main__")
