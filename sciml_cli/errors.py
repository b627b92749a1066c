"""The failures we expect, and the one place that turns them into a line on stderr.

Usage and configuration mistakes exit with 2, failures during a run with 1, a run stopped by
signal n with 128 + n (see :mod:`sciml_cli.output`). Set ``HYDRA_FULL_ERROR=1`` to see the
traceback instead.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any, TypeVar

T = TypeVar("T")

#: tokens longer than this are cut in messages (paths of run directories stay whole)
LONG_TOKEN = 160


class SciMLError(Exception):
    """Base class of the errors sciml reports as one line."""

    exit_code = 1
    label = "error"


class SciMLWarning(UserWarning):
    """Base class of the warnings sciml shows as one line (``sciml: warning: ...``)."""


def one_line_warnings() -> None:
    """Show :class:`SciMLWarning` as ``sciml: warning: <message>`` on stderr, without Python's
    file, line number and source line; other warnings as before."""
    import warnings

    shown = warnings.showwarning
    if getattr(shown, "sciml", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if isinstance(category, type) and issubclass(category, SciMLWarning):
            (file or sys.stderr).write(f"sciml: warning: {message}\n")
        else:
            shown(message, category, filename, lineno, file, line)

    show.sciml = True  # type: ignore[attr-defined]
    warnings.showwarning = show


class Stopped(BaseException):
    """A stop signal before the command started its work: nothing was written. A
    ``BaseException``, like ``KeyboardInterrupt``, so no check's ``except Exception`` takes it
    for a config error; reported like a :class:`SciMLError`."""

    label = "stopped"

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.exit_code = 128 + signum


#: the handlers :func:`stop_early` replaced, for :func:`stop_as_before`
_BEFORE: dict[int, Any] = {}


def stop_early() -> None:
    """From the command's start until its work begins (imports, composing and checking the
    config: seconds), SIGTERM, SIGINT and SIGUSR1 end it with one line and 128 + the signal's
    number, as later ones do, rather than silently (SIGTERM's default) or with a traceback."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise Stopped(signum, f"{signal.Signals(signum).name} before the command began; nothing was written")

    for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None)):
        if s is not None:
            _BEFORE[s] = signal.signal(s, handler)


def stop_as_before() -> None:
    """Give the signals back the handlers they had before :func:`stop_early`."""
    import signal

    while _BEFORE:
        s, handler = _BEFORE.popitem()
        signal.signal(s, handler)


class ConfigError(SciMLError):
    """A config key has a value we cannot use. The message starts with the key."""

    exit_code = 2
    label = "config error"

    def __init__(self, key: str, problem: str, choices: Iterable[str] | None = None, given: str | None = None):
        choices = None if choices is None else [str(c) for c in choices]
        msg = f"{shorten(key)}: {problem}" if key else problem
        if given is not None and choices:
            import difflib

            names = {c.rsplit(".", 1)[-1].lstrip("+"): c for c in choices}  # `+a.b.name` is matched by name
            near = difflib.get_close_matches(str(given), list(names), n=1, cutoff=0.6)
            if near:  # the nearest valid name, for a typo
                msg += f"; did you mean {names[near[0]]}?"
        if choices is not None:
            msg += f" (valid: {', '.join(choices) or 'none'})"
        super().__init__(shorten(msg))
        self.key = key


_LONG_TOKEN = re.compile(r"\S{%d,}" % (LONG_TOKEN + 1))


def shorten(text: str) -> str:
    """``text`` with every run of more than :data:`LONG_TOKEN` characters without a space cut
    to its start and its length: a 3000-character key or value must not flood the terminal."""
    return _LONG_TOKEN.sub(lambda m: f"{m.group(0)[:60]}... ({len(m.group(0))} characters)", text)


class IncompatibleError(ConfigError):
    """The chosen model needs a view of the problem that the problem does not offer."""


class CheckpointError(SciMLError):
    """A checkpoint file is missing, truncated, or not one of ours."""


class NonFiniteLossError(SciMLError):
    """A loss term became NaN or Inf."""


class DiskFullError(SciMLError):
    """A write failed for lack of space or quota; what was written before stays whole (every
    result file is replaced atomically)."""

    label = "disk full"


def no_space(err: BaseException | None) -> bool:
    """Whether ``err`` or an exception it arose from is a write that ran out of space: an
    ``OSError`` with ENOSPC or EDQUOT, or a library's message of one (h5py, torch's zip writer,
    TensorBoard wrap the OS error in their own)."""
    import errno

    seen = 0
    while err is not None and seen < 16:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(err) or "Disk quota exceeded" in str(err):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes free to an unprivileged writer on the file system holding ``path`` (or its
    nearest existing parent)."""
    import shutil
    from pathlib import Path

    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def size_text(n: int | None) -> str:
    if n is None:
        return "unknown space"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def disk_full(path: str | os.PathLike, err: BaseException | None = None) -> DiskFullError:
    """The one-line error for a write to ``path`` that ran out of space."""
    where = getattr(err, "filename", None) or path
    return DiskFullError(f"could not write {where}: no space left ({size_text(free_bytes(where))} free there)")


def full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def report(err: SciMLError | Stopped) -> int:
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
        except OSError as err:
            if full_error() or not no_space(err):
                raise
            sys.exit(report(disk_full(".", err)))  # the error's own file name wins

    return wrapper
