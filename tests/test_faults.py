"""Fault injection: bad input, a full disk, kills at the wrong moment.

What these promise is in the README's "Never losing a run". Related faults tested elsewhere:
flipped bits in a checkpoint and a tampered stored config (test_trainer.py), flipped bits in
an HDF5 cache (test_data.py), SIGTERM/SIGUSR1 with a bit-identical resume (test_trainer.py,
test_sweep.py).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import SCIML, TINY, TINY_FNO, only_run_dir, run_sciml

from sciml_cli import rundir
from sciml_cli.training import checkpoint

LONG = "x" * 3000


@pytest.mark.parametrize(
    "args, key, hint",
    [
        # keys added with + that nothing reads, and misspelled ones, name the nearest key
        (["+optim.step=5"], "optim.step", "did you mean steps?"),
        (["+model.loss_weights.residul=10"], "model.loss_weights.residul", "did you mean residual?"),
        (["+paths.output=x"], "paths.output", "did you mean outputs?"),
        (["+model.widht=3"], "model.widht", "did you mean width?"),
        (["model.activation=tahn"], "model.activation", "did you mean tanh?"),
        (["+trainer.callbacks.progress=null"], "trainer.callbacks.progress", "already set"),
        # override syntax Hydra's grammar or its defaults list would reject with its own text
        (["~model"], "model", "cannot be removed"),
        (["model=null"], "model", "must name an option, got null (valid: drm,"),
        (["=3"], "=3", "nothing before '='"),
        (["model.width=8,16"], "model.width", "runs one job"),
        (["model.activation=tänh"], "model.activation", "'tänh' is not a valid choice; did you mean tanh? (valid: tanh,"),
        # values that pass a type check but cannot work; a huge key or value is shortened
        ([f"{LONG}=1"], "x" * 60 + "... (3000 characters)", "no such key"),
        ([f"model.width={'9' * 3000}"], "model.width", "out of range: 999"),
        # checks that need the grid run before any data is generated
        ([*TINY_FNO, "model.modes=40"], "model.modes", "40 Fourier modes need at least 78 points"),
        ([*TINY_FNO, "problem.resolution=100"], "problem.resolution", "must divide fine_resolution=256, got 100"),
    ],
)
def test_bad_train_input_is_one_line_exit_2_and_writes_nothing(sciml, args, key, hint):
    proc = sciml("train", *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 600, proc.stderr
    assert lines[0].startswith(f"sciml: config error: {key}"), lines[0]
    assert hint in lines[0], lines[0]
    assert not (sciml.cwd / "outputs").exists()  # no run directory, no data cache


@pytest.mark.parametrize(
    "command, args, key, hint",
    [
        ("solve", ["+foo=1"], "foo", "nothing reads it"),
        ("solve", ["problem=null"], "problem", "must name an option"),
        ("solve", ["resolution=64,128"], "resolution", "runs one job"),
        ("eval", ["run=nowhere", "+resolutoin=4"], "resolutoin", "did you mean resolution?"),
        ("sweep", ["model.width=8,16", "+optim.step=3"], "optim.step", "did you mean steps?"),
    ],
)
def test_bad_input_to_the_other_commands_is_one_line(sciml, command, args, key, hint):
    proc = sciml(command, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sciml: config error: {key}") and hint in lines[0], proc.stderr
    assert not (sciml.cwd / "outputs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_sweep_checks_every_job_s_device_before_the_first_runs(sciml):
    proc = sciml("sweep", *TINY, "trainer.device=cpu,cuda")
    assert proc.returncode == 2 and proc.stderr.startswith("sciml: config error: trainer.device: cuda is not available")
    assert not (sciml.cwd / "outputs").exists()


def test_a_run_killed_between_its_last_checkpoint_and_metrics_json_is_completed_by_resume(sciml, tiny_run):
    """The final checkpoint is written, then the process dies before metrics.json: resume
    rebuilds metrics.json whole (every field, the same numbers) from the checkpoint, and removes
    the temporary copy of a checkpoint that a kill during a save leaves."""
    run = tiny_run
    stale = run / "checkpoints" / ".last.pt.k1ll3d.tmp"
    stale.write_bytes((run / "checkpoints" / "last.pt").read_bytes()[:1000])
    before = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").unlink()
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running"}))  # as the kill left it
    proc = sciml("train", *TINY, f"resume={run}")
    assert proc.returncode == 0, proc.stderr
    after = json.loads((run / "metrics.json").read_text())
    before.pop("wall_time_s"), after.pop("wall_time_s")
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert after[k] == (pytest.approx(v, rel=1e-12) if isinstance(v, float) else v), k
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert not stale.exists()


def test_run_json_is_rewritten_in_place_only_when_the_new_text_fits(tmp_path):
    """With no room for a second copy, run.json is overwritten in place; a text longer than the
    file could stop half-written, so it is made compact and its error message cut short to fit,
    or refused with the old file kept."""
    path = tmp_path / "run.json"
    info = {"status": "running", "git": {"commit": "0" * 40, "dirty": False}, "seed": 0}
    rundir.write_json(path, info)
    before = path.read_bytes()
    failed = {**info, "status": "failed", "error": "disk full"}
    assert len(json.dumps(failed, indent=2)) > len(before)  # fits only without the indentation
    rundir.overwrite_json(path, failed)
    assert json.loads(path.read_text()) == failed
    rundir.write_json(path, info)
    rundir.overwrite_json(path, {**info, "status": "failed", "error": "é\"" * len(before)})
    assert len(path.read_bytes()) <= len(before)
    cut = json.loads(path.read_text())
    assert cut["status"] == "failed" and cut["error"].startswith("é\"é") and cut["error"].endswith("...")
    with pytest.raises(OSError, match="does not fit"):
        rundir.overwrite_json(path, {**info, "status": "failed", "notes": "x" * len(before)})
    assert json.loads(path.read_text()) == cut


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (root on Linux only): a disk that really fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("this machine does not let us mount a tmpfs")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: no bytes left over for close() to fail on
        for size in (65536, 4096, 512, 1):
            try:
                while f.write(b"\0" * size):
                    pass
            except OSError:
                pass
    return filler


def test_a_full_disk_mid_run_is_one_line_and_keeps_the_last_checkpoint(small_disk, tmp_path):
    args = [*TINY, "trainer.checkpoint_every=10", "trainer.val_every=10", f"paths.outputs={small_disk / 'out'}"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen([*SCIML, "train", *args, "optim.steps=100000"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    base = small_disk / "out" / "train" / "heat-pinn"
    deadline = time.time() + 120
    while not list(base.glob("*/checkpoints/last.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    filler = _fill(small_disk)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    run = only_run_dir(base)
    assert err.startswith("sciml: disk full: could not write ") and "no space left (" in err and " free there)" in err
    assert f"the last good checkpoint {run / 'checkpoints' / 'last.pt'} is intact" in err
    assert out.startswith("sciml train: failed (exit 1)")
    state = checkpoint.load(run / "checkpoints" / "last.pt")  # its checksum holds
    assert state["step"] >= 10
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    assert not list(run.rglob("*.tmp"))  # no partial files left behind
    # with space again, the run continues from that checkpoint and finishes
    filler.unlink()
    resumed = run_sciml("train", *args, f"optim.steps={state['step'] + 20}", f"resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "metrics.json").read_text())["step"] == state["step"] + 20


def test_a_full_disk_before_the_run_and_during_a_solve_is_one_line(small_disk, sciml):
    filler = _fill(small_disk)
    proc = sciml("train", *TINY, f"paths.outputs={small_disk / 'out'}")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("sciml: disk full: no space left under") and "paths.outputs can point elsewhere" in proc.stderr
    assert not (small_disk / "out").exists()
    # a 3.2 MB HDF5 file on a 3 MiB disk: the solve fails whole, with no partial file left
    filler.unlink()
    proc = sciml("solve", "problem=burgers", "n_samples=200", "problem.fine_resolution=1024", "problem.resolution=1024",
                 f"paths.outputs={small_disk / 'out'}", "progress=null")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("sciml: disk full: could not write ") and ".h5" in proc.stderr
    assert not [p for p in (small_disk / "out").rglob("*") if p.suffix in (".h5", ".tmp")]


@pytest.mark.slow
def test_random_sigkills_across_adam_and_lbfgs_resume_bit_identical(tmp_path):
    """Three SIGKILLs at random moments (Adam, then L-BFGS); after each, resume=auto. The final
    weights equal an uninterrupted run's bit for bit."""
    args = [*TINY, "optim=adam_lbfgs", "optim.steps=300", "optim.lbfgs_steps=30", "trainer.checkpoint_every=7",
            "trainer.dtype=float64"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    base = tmp_path / "outputs" / "train" / "heat-pinn"
    rng = random.Random(0)
    # kill once the run has checkpointed past a random step: twice in Adam, once in L-BFGS
    targets = sorted(rng.sample(range(10, 290), 2)) + [rng.randrange(301, 322)]
    for kill, target in enumerate(targets):
        extra = [] if kill == 0 else ["resume=auto"]
        proc = subprocess.Popen([*SCIML, "train", *args, *extra], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            last = list(base.glob("*/checkpoints/last.pt"))
            if last and checkpoint.load(last[0])["step"] >= target:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    run_sciml("train", *args, "resume=auto", cwd=tmp_path, check=True)
    run_sciml("train", *args, "paths.outputs=whole", cwd=tmp_path, check=True)
    run = only_run_dir(base)
    whole = only_run_dir(tmp_path / "whole" / "train" / "heat-pinn")
    cut, full = (checkpoint.load(r / "checkpoints" / "last.pt") for r in (run, whole))
    assert cut["step"] == full["step"] == 330
    assert all(torch.equal(cut["model"][k], full["model"][k]) for k in full["model"])
