"""Errors the user can act on.

Every problem with what the user gave us (a file, an option, a task id) is an
``InputError``: the CLI prints its one-line message and exits with code 2, the
Slicer module shows it in a dialog. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class InputError(Exception):
    """A problem with the user's input, stated in one line.

    Args:
        message: what is wrong and, where possible, how to fix it.
        name: the input it concerns (e.g. ``"flair"`` or ``"--output"``), prefixed to the message.
    """

    exit_code = 2

    def __init__(self, message: str, name: str | None = None):
        self.name = name
        text = f"{name}: {message}" if name else message
        super().__init__(text.replace("\n", " "))


class ModelNotInstalledError(InputError):
    """The task exists but its weights are not in the model cache."""

    exit_code = 3


class CancelledError(Exception):
    """Raised between sampling steps when the caller asked to stop."""

    exit_code = 130
