"""What a command tells a script: its result on stdout, as one line or as one JSON object.

``output=text`` (the default) prints tables for people and ends with one line
``sciml <command>: <status> ...`` naming what was written. ``output=json`` prints exactly one
JSON object on stdout instead, for success and failure alike::

    {"command": "train", "status": "finished", "exit_code": 0, "wall_time_s": 51.2,
     "run_dir": "outputs/train/heat-pinn/2026-...", "metrics": {"val/rel_l2": 3.5e-04, ...}}

Tables, progress bars and log records go to stderr (and a run's log file), never to stdout.

Exit codes, the same in both modes:

====  ============  ================================================================
0     finished      the command did what it was asked (a sweep: every job finished)
1     failed        a run failed (non-finite loss, solver error, full disk), or a
                    sweep ended with at least one failed job
2     invalid       a usage or config error (an unreadable checkpoint named on the
                    command line included), found before any work; nothing written
128+n interrupted   signal n stopped the command (SIGTERM 143, SIGINT 130): after the
                    run saved a checkpoint (``sciml train resume=<run>`` continues
                    it), or before any work, with nothing written
====  ============  ================================================================

Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

MODES = ("text", "json")


class _State:
    def __init__(self) -> None:
        self.mode = "text"
        self.command = ""
        self.started = time.monotonic()
        self.emitted = False
        self.exit_code = 0
        self.error: str | None = None
        self.context: dict[str, Any] = {}


_state = _State()


def status_of(code: int) -> str:
    return "finished" if code == 0 else "invalid" if code == 2 else "interrupted" if code >= 128 else "failed"


def number(value: float, direction: str = "minimize") -> str:
    """A metric for a result line: errors as ``3.50e-04``, scores such as PSNR as ``32.51``."""
    return f"{value:.2f}" if direction == "maximize" else f"{value:.2e}"


def start(command: str, overrides: list[str]) -> None:
    """Begin a command: read ``output=`` from its overrides (the last one wins), so that even an
    error in composing the config is answered in the chosen form."""
    import rich

    from .errors import ConfigError

    global _state
    _state = _State()
    _state.command = command
    for arg in overrides:
        key, eq, value = arg.partition("=")
        if eq and key.lstrip("+") == "output":
            _state.mode = value
    if _state.mode not in MODES:
        bad, _state.mode = _state.mode, "text"
        raise ConfigError("output", f"unknown output mode {bad!r}", MODES)
    # bars and live displays draw on rich's console: keep them off stdout, which carries results
    rich.reconfigure(stderr=True)


def is_json() -> bool:
    return _state.mode == "json"


def console():
    """The rich console for result tables: stdout for people, stderr in JSON mode."""
    from rich.console import Console

    return Console(stderr=is_json())


def context(**facts: Any) -> None:
    """Facts every later result of this command carries, failures included (e.g. the run
    directory once it exists)."""
    _state.context.update(facts)


def note_error(message: str) -> None:
    _state.error = message


def _plain(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become null; paths become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def emit(line: str, exit_code: int = 0, **facts: Any) -> None:
    """The command's result: ``line`` in text mode, an object of the facts in JSON mode."""
    _state.emitted = True
    _state.exit_code = max(_state.exit_code, exit_code)
    if is_json():
        record = {"command": _state.command, "status": status_of(exit_code), "exit_code": exit_code,
                  "wall_time_s": round(time.monotonic() - _state.started, 3), **_state.context, **facts}
        if exit_code and _state.error and "error" not in record:
            record["error"] = _state.error
        sys.stdout.write(json.dumps(_plain(record), allow_nan=False) + "\n")
    else:
        sys.stdout.write(line + "\n")
    sys.stdout.flush()


def job_line(line: str) -> None:
    """A line for one job of several (a sweep's): printed in text mode only, where each job
    reports; in JSON mode the sweep's one object lists them all."""
    if not is_json():
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def finish(code: int) -> int:
    """The exit code of the command; a result for a command that ended without one (an error):
    in JSON mode always, in text mode when it left a run directory behind."""
    code = code or _state.exit_code
    if not _state.emitted:
        run_dir = _state.context.get("run_dir")
        if run_dir is not None and not Path(run_dir).exists():  # removed: nothing was kept
            _state.context.pop("run_dir")
            run_dir = None
        if is_json() or (code and run_dir is not None):
            wall = time.monotonic() - _state.started
            emit(f"sciml {_state.command}: {status_of(code)} (exit {code}) after {wall:.0f} s, run {run_dir}",
                 exit_code=code)
    return code
