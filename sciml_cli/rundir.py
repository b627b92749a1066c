"""Run directories: unique names, JSON records written atomically, provenance."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from . import __version__


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
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    for name in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID"):
        if os.environ.get(name) and os.environ[name] != "none":
            return os.environ[name] + (f".{os.environ['SLURM_STEP_ID']}" if name == "SLURM_JOB_ID"
                                       and os.environ.get("SLURM_STEP_ID") else "")
    return f"{os.environ.get('MASTER_ADDR', 'local')}-{os.environ.get('MASTER_PORT', '0')}"


def newest_run(base: str | Path) -> Path | None:
    """The run under ``base`` whose ``checkpoints/last.pt`` was written last."""
    ckpts = sorted(Path(base).glob("*/checkpoints/last.pt"), key=lambda p: p.stat().st_mtime)
    return ckpts[-1].parent.parent if ckpts else None


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
    second copy: a small file's blocks are reused. Not atomic; used only then."""
    text = json.dumps(data, indent=2, default=str).encode() + b"\n"
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
