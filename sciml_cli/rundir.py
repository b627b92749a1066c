"""Run directories: unique names, JSON records written atomically, provenance."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from . import __version__

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


def new_run_dir(base: str | Path) -> Path:
    """Create and return ``base/<timestamp>``; a suffix keeps two runs started in the same
    second (a batch script, a job array) from sharing a directory. The ranks of one
    data-parallel job started by ``torchrun`` (or ``srun``) share ``base/ranks-<job id>``:
    they cannot agree on a time stamp before their process group exists."""
    base = Path(base)
    job = _parallel_job_id()
    if job is not None:
        shared = base / f"ranks-{job}"
        shared.mkdir(parents=True, exist_ok=True)
        return shared
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for i in range(1000):
        candidate = base / (stamp if i == 0 else f"{stamp}_{i}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run directory under {base}")


def _parallel_job_id() -> str | None:
    """The id every rank of a multi-process job sees alike, or None outside one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    for name in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID"):
        if os.environ.get(name) and os.environ[name] != "none":
            return os.environ[name] + (f".{os.environ['SLURM_STEP_ID']}" if name == "SLURM_JOB_ID"
                                       and os.environ.get("SLURM_STEP_ID") else "")
    return f"{os.environ.get('MASTER_ADDR', 'local')}-{os.environ.get('MASTER_PORT', '0')}"


#: the files a run writes as it goes; the newest of them dates the run's last activity
_ACTIVITY = ("checkpoints/last.pt", "run.json", "train.log")


def newest_run(base: str | Path) -> Path | None:
    """The run under ``base`` written to last (its checkpoint, record or log), or None: the run
    ``resume=auto`` means. It may have no checkpoint (stopped before its first one); the caller
    says so rather than fall back on an older run, which would continue another run unasked."""
    def last_write(run: Path) -> float:
        return max((f.stat().st_mtime for f in (run / name for name in _ACTIVITY) if f.is_file()), default=-1.0)

    runs = [(last_write(d), d) for d in Path(base).glob("*") if d.is_dir()]
    runs = [(t, d) for t, d in runs if t >= 0]
    return max(runs, key=lambda r: r[0])[1] if runs else None


#: the lock file of a run directory, held by the process that trains the run
LOCK = ".lock"
#: set for the ranks a ``sciml train`` process starts: their parent holds the run's lock
HELD_ENV = "SCIML_RUN_HELD"


class RunInUse(Exception):
    """Another live process trains this run directory."""


@contextmanager
def hold(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` for this process while it trains: two processes writing one run (two
    resumes, a relaunched sweep whose first copy still runs) would interleave checkpoints. An
    advisory ``flock``: the kernel releases it when the process ends, a SIGKILL included, so a
    dead run never stays locked. Where ``fcntl`` is missing (Windows), nothing is held."""
    run_dir = Path(run_dir)
    if fcntl is None or os.environ.get(HELD_ENV) == str(run_dir.resolve()):
        yield
        return
    try:
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)  # the mode follows the umask
    except OSError:  # the run's own writes will say what is wrong with the directory
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInUse(_describe_holder(fd)) from None
        except OSError:  # a file system without flock (Lustre mounted without it): train unheld
            pass
        else:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {platform.node()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (unlinking it would race a new holder)


def holder(run_dir: Path) -> str | None:
    """Who holds ``run_dir`` (``"pid P on H"``), or None when no live process trains it."""
    run_dir = Path(run_dir)
    if fcntl is None or os.environ.get(HELD_ENV) == str(run_dir.resolve()) or not (run_dir / LOCK).is_file():
        return None
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe_holder(fd)
        except OSError:
            pass
        return None
    finally:
        os.close(fd)


def _describe_holder(fd: int) -> str:
    try:
        pid, _, host = os.pread(fd, 256, 0).decode(errors="replace").strip().partition(" ")
    except OSError:
        pid, host = "", ""
    return f"pid {pid} on {host}" if pid and host else "another process"


def resume_checkpoint(resume: str, run_dir: Path | None = None) -> Path:
    """The checkpoint file meant by ``resume=auto|<run dir>|<file>``."""
    if resume == "auto":
        assert run_dir is not None
        return Path(run_dir) / "checkpoints" / "last.pt"
    path = Path(resume)
    return path / "checkpoints" / "last.pt" if path.is_dir() else path


def write_json(path: Path, data: dict[str, Any]) -> None:
    from .training.checkpoint import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=str)
            f.write("\n")

    atomic_write(Path(path), write)


def overwrite_json(path: Path, data: dict[str, Any]) -> None:
    """Rewrite ``path`` in place, for when a full disk has no room for :func:`write_json`'s
    second copy: a small file's blocks are reused. Not atomic; used only then, and only within
    the old file's bytes (a longer text could stop half-written): the text is made compact, and
    an ``error`` value cut short, to fit. Raises ``OSError`` when it still does not fit."""
    def compact(d: dict[str, Any]) -> bytes:
        return json.dumps(d, separators=(",", ":"), default=str).encode() + b"\n"

    size = Path(path).stat().st_size
    text = json.dumps(data, indent=2, default=str).encode() + b"\n"
    if len(text) > size:
        text = compact(data)
    error = str(data.get("error", ""))
    if len(text) > size and error:  # the longest start of the message that fits (escapes vary in length)
        keep, too_many = 0, len(error)
        while too_many - keep > 1:
            mid = (keep + too_many) // 2
            keep, too_many = (mid, too_many) if len(compact({**data, "error": error[:mid] + "..."})) <= size else (keep, mid)
        text = compact({**data, "error": error[:keep] + "..."})
    if len(text) > size:
        raise OSError(f"{path}: the new text ({len(text)} bytes) does not fit in the old ({size})")
    with open(path, "r+b") as f:
        f.write(text)
        f.truncate()


def git_commit() -> dict[str, Any]:
    """Commit and dirtiness of the sciml source tree, if it is a git checkout."""
    src = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True,
                                timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=src,
                               capture_output=True, text=True, timeout=5).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def versions() -> dict[str, str]:
    import h5py
    import hydra
    import numpy
    import omegaconf
    import torch

    return {
        "sciml": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "hydra": hydra.__version__,
        "omegaconf": omegaconf.__version__,
        "h5py": h5py.__version__,
    }


def provenance() -> dict[str, Any]:
    return {
        "git": git_commit(),
        "versions": versions(),
        "host": platform.node(),
        "argv": sys.argv,
        "started": datetime.now().isoformat(timespec="seconds"),
    }
