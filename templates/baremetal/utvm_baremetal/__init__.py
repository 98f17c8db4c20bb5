"""Host-side helpers of the bare-metal Cortex-M template: firmware tree rendering, ELF sizes, QEMU,
flash runners and serial-port discovery. Generated projects carry a copy of this package; apart
from render.py (jinja2, used only while generating) it needs the standard library and pyserial.
"""
