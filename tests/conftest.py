"""Shared fixtures: the `sciml` executable run as a real subprocess, and small configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Tiny test problems run faster on one thread, and a loaded machine (parallel CI jobs) makes
# OpenMP's spinning threads slow everything down many times over.
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

ROOT = Path(__file__).resolve().parent.parent
SCIML = [sys.executable, "-m", "sciml_cli"]

#: a PINN run of a few seconds on a CPU core
TINY = [
    "model.width=16", "model.depth=2", "model.n_interior=256", "model.n_initial=64",
    "model.n_boundary=64", "optim.steps=40", "trainer.val_every=20", "trainer.checkpoint_every=20",
    "trainer.log_every=5", "trainer.device=cpu", "trainer.callbacks.progress=null",
]


def run_sciml(*args: str, cwd: Path, check: bool = False, timeout: float = 300, env: dict | None = None):
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environment.update({"PYTHONUNBUFFERED": "1", **(env or {})})
    proc = subprocess.run([*SCIML, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=environment)
    if check and proc.returncode != 0:
        raise AssertionError(f"sciml {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def sciml(tmp_path):
    """Run ``sciml ...`` in a fresh directory; outputs land in ``tmp_path/outputs``."""

    def run(*args: str, **kwargs):
        return run_sciml(*args, cwd=tmp_path, **kwargs)

    run.cwd = tmp_path
    return run


def only_run_dir(base: Path) -> Path:
    runs = [p for p in base.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]
