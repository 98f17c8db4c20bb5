"""Helpers of the Zephyr template: the facts it needs about each board's Zephyr port, finding the
Zephyr tree and toolchain, and writing the application's build files. Standard library only."""
