"""Errors raised by model_library.

`ModelError` and `ArchiveError` are user errors: the command line prints their message and hint
without a traceback. `KernelError` is raised by the host reference runner when a generated
kernel reports a failure.
"""

from __future__ import annotations

from utvm.project_api.errors import UserError
from utvm.project_api.mlf import ArchiveError  # noqa: F401  (raised by load(); defined by the reader)


class ModelError(UserError):
    """A model that cannot be imported or compiled (the message names the model)."""


class TargetError(UserError):
    """A target specification that cannot be understood."""


class KernelError(RuntimeError):
    """A generated kernel reported an error while running in the host reference runner."""

    def __init__(self, kernel_index: int, kernel_name: str, detail: str):
        super().__init__(f"kernel {kernel_index} ({kernel_name}) failed: {detail or 'no error text'}")
        self.kernel_index = kernel_index
        self.kernel_name = kernel_name
        self.detail = detail
