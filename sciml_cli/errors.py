"""The failures we expect, and the one place that turns them into a line on stderr.

Usage and configuration mistakes exit with 2, failures during a run with 1, a run stopped by
signal n with 128 + n (see :mod:`sciml_cli.output`). Set ``HYDRA_FULL_ERROR=1`` to see the
traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from functools import wraps
from typing import TypeVar

T = TypeVar("T")


class SciMLError(Exception):
    """Base class of the errors sciml reports as one line."""

    exit_code = 1
    label = "error"


class ConfigError(SciMLError):
    """A config key has a value we cannot use. The message starts with the key."""

    exit_code = 2
    label = "config error"

    def __init__(self, key: str, problem: str, choices: Iterable[str] | None = None):
        msg = f"{key}: {problem}" if key else problem
        if choices is not None:
            msg += f" (valid: {', '.join(str(c) for c in choices) or 'none'})"
        super().__init__(msg)
        self.key = key


class IncompatibleError(ConfigError):
    """The chosen model needs a view of the problem that the problem does not offer."""


class CheckpointError(SciMLError):
    """A checkpoint file is missing, truncated, or not one of ours."""


class NonFiniteLossError(SciMLError):
    """A loss term became NaN or Inf."""


def full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def report(err: SciMLError) -> int:
    """Print ``err`` as one line and return its exit code."""
    from . import output

    output.note_error(str(err))
    sys.stderr.write(f"sciml: {err.label}: {err}\n")
    sys.stderr.flush()
    return err.exit_code


def reporting(fn: Callable[..., T]) -> Callable[..., T]:
    """Run ``fn``; a :class:`SciMLError` becomes one line and ``sys.exit(code)``."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SciMLError as err:
            if full_error():
                raise
            sys.exit(report(err))

    return wrapper
