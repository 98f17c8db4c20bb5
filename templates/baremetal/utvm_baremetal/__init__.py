"""Host-side helpers of the bare-metal Cortex-M template: the firmware tree, the link map and the
size report, and aot_standalone reports. Generated projects carry a copy of this package; it needs
the standard library and the floor (``project_api``), and pyserial where it talks to a UART.
"""
