"""User-facing errors.

A :class:`NerfkitError` means the *user's input* is wrong (a missing file, a malformed JSON, a bad
pose, an unknown option value). The CLI prints its message and exits non-zero without a traceback
(``--debug`` shows it). Anything else is a bug in nerfkit and keeps its traceback.
"""

from __future__ import annotations

import os


class NerfkitError(Exception):
    """An error caused by user input; the message names the file and the problem."""


class DataError(NerfkitError):
    """A dataset file is missing, unreadable or inconsistent."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ConfigError(NerfkitError):
    """A configuration value or run directory is invalid."""


class CheckpointError(NerfkitError):
    """A checkpoint is missing, corrupt or does not match the model."""


class DivergenceError(NerfkitError):
    """Training produced a non-finite loss or parameter."""
