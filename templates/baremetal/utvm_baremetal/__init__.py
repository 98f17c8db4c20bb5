"""Host-side helpers of the bare-metal Cortex-M template: the firmware tree, the link map and the
size report (aot_standalone reports are the floor's, project_api.standalone_report). Generated projects
carry a copy of this package; it needs the standard library and the floor (``project_api``).
"""
