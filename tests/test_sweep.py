"""Scaling out: Optuna studies through Hydra's sweeper, the joblib and submitit launchers, and a
job that SLURM warns (SIGUSR1), requeues and starts again: it continues its own run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SCIML, TINY, assert_figure, only_run_dir

from sciml_cli.commands import _direction


def _rows(sweep: Path) -> list[dict]:
    with open(sweep / "summary.csv") as f:
        return list(csv.DictReader(f))


def _study(path: Path, name: str):
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")  # optuna 2 on SQLAlchemy 1.4
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{path}")


OPTUNA = ["optim.steps=10", "trainer.val_every=10", "trainer.checkpoint_every=10", "hydra/sweeper=optuna", "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler.seed=0",
          "hydra.sweeper.study_name=tiny", "hydra.sweeper.storage=sqlite:///outputs/sweep/studies/tiny.db",
          "hydra.sweeper.max_failure_rate=1.0", "model.width=choice(8,16)", "optim.lr=tag(log,interval(1e-3,1e-2))"]


@pytest.mark.slow  # 30-55 s; the default suite is near its 15-minute budget
def test_an_optuna_study_on_joblib_continues_where_it_stopped_and_its_best_runs_again(sciml):
    proc = sciml("sweep", *TINY, *OPTUNA, "hydra.sweeper.n_trials=2", "hydra/launcher=joblib")
    assert proc.returncode == 0, proc.stderr
    (first,) = [p for p in (sciml.cwd / "outputs" / "sweep").iterdir() if p.name != "studies"]
    rows = _rows(first)
    assert len(rows) == 2 and all(r["status"] == "finished" for r in rows)
    study = _study(sciml.cwd / "outputs" / "sweep" / "studies" / "tiny.db", "tiny")
    values = sorted(t.value for t in study.trials)
    assert values == sorted(float(r["value"]) for r in rows)  # every job is a trial of the study
    assert study.direction.name == "MINIMIZE"  # the problem's direction: rel-L2
    assert "[HYDRA]" not in proc.stdout and "A new study created" not in proc.stdout  # logs go to stderr
    assert_figure(first / "metric_vs_optim.lr.png")  # one plot per key that varies between jobs
    widths = {o for r in rows for o in r["overrides"].split() if o.startswith("model.width=")}
    if len(widths) > 1:
        assert_figure(first / "metric_vs_model.width.png")
    else:
        assert not (first / "metric_vs_model.width.png").exists()

    # the best job as a ready-to-run config
    best = first / "best.yaml"
    assert f"val rel_l2 {float(rows[0]['value']):.6g}" in best.read_text().splitlines()[0]
    proc = sciml("train", "--config-path", str(first.resolve()), "--config-name", "best", "output=json")
    assert proc.returncode == 0, proc.stderr
    rerun = json.loads(proc.stdout)
    assert rerun["metrics"]["val/rel_l2"] == pytest.approx(float(rows[0]["value"]), rel=1e-6)  # CPU: the same run

    # the same command again, 3 trials in all: only the one missing runs, at a new point
    proc = sciml("sweep", *TINY, *OPTUNA, "hydra.sweeper.n_trials=3")
    assert proc.returncode == 0, proc.stderr
    assert "has 2 finished trials; running the 1 left" in proc.stderr
    study = _study(sciml.cwd / "outputs" / "sweep" / "studies" / "tiny.db", "tiny")
    assert len(study.trials) == 3
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 3
    proc = sciml("sweep", *TINY, *OPTUNA, "hydra.sweeper.n_trials=3")
    assert proc.returncode == 2 and "already has 3 finished trials of 3" in proc.stderr


def test_a_trial_that_fails_is_recorded_as_failed_and_the_study_goes_on(sciml):
    from sciml_cli.problems.burgers import Burgers

    a = Burgers(fine_resolution=64, resolution=32).solve(32, 40, seed=0).fields
    np.savez(sciml.cwd / "good.npz", a=a["a"].numpy(), u=a["u"].numpy())
    bad = a["u"].numpy().copy()
    bad[33, 0] = np.nan  # in the validation split: found when the first validation reads it
    np.savez(sciml.cwd / "nan.npz", a=a["a"].numpy(), u=bad)
    proc = sciml("sweep", "model=fno", "problem=dataset", "model.width=8", "model.modes=4", "model.n_train=20",
                 "model.n_test=4", "model.batch_size=10", "optim.steps=4", "trainer.val_every=4", "trainer.device=cpu",
                 "trainer.callbacks.progress=null", "hydra/sweeper=optuna", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0",
                 "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1",  # seed 0 draws nan.npz, then good.npz
                 "hydra.sweeper.max_failure_rate=1.0", "problem.path=choice(good.npz,nan.npz)",
                 "problem.splits.train=[0,32]", "problem.splits.val=[32,36]", "problem.splits.test=[36,40]")
    assert proc.returncode == 1 and "1 of 2 jobs finished" in proc.stdout, proc.stderr[-3000:]
    rows = _rows(only_run_dir(sciml.cwd / "outputs" / "sweep"))
    assert sorted(r["status"] for r in rows) == ["failed", "finished"]
    failed = next(r for r in rows if r["status"] == "failed")
    assert "nan.npz" in failed["overrides"] and "u holds NaN or Inf" in failed["error"]


@pytest.mark.slow
def test_ray_runs_a_local_two_job_sweep(sciml):
    """Hydra's Ray launcher on a local Ray instance (the optional extra: pip install -e '.[ray]')."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="the ray extra is not installed")
    proc = sciml("sweep", *TINY, "model.width=8,16", "hydra/launcher=ray", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(only_run_dir(sciml.cwd / "outputs" / "sweep"))
    assert sorted(o for r in rows for o in r["overrides"].split() if o.startswith("model.width=")) == \
        ["model.width=16", "model.width=8"]
    assert all(r["status"] == "finished" for r in rows)
    assert "Ray Launcher is launching 2 jobs" in proc.stderr


def test_submitit_runs_a_local_two_job_sweep(sciml):
    proc = sciml("sweep", *TINY, "model.width=8,16", "hydra/launcher=submitit_local")
    assert proc.returncode == 0, proc.stderr
    sweep = only_run_dir(sciml.cwd / "outputs" / "sweep")
    rows = _rows(sweep)
    assert sorted(o for r in rows for o in r["overrides"].split() if o.startswith("model.width=")) == \
        ["model.width=16", "model.width=8"]
    assert all(r["status"] == "finished" for r in rows)
    assert (sweep / ".submitit").is_dir()  # the jobs ran as submitit jobs, each its own process


def test_sigusr1_checkpoints_requeues_and_the_relaunched_job_continues_bit_identically(tmp_path):
    """SLURM's warning before the time limit: the job checkpoints, asks SLURM to requeue it (a
    fake ``scontrol`` records the call) and exits 138; started again the way a requeue starts it
    (the same command, the same sweep directory), it resumes its run and ends with exactly the
    numbers of a run never interrupted."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.log'}\n")
    (bin_dir / "scontrol").chmod(0o755)
    long = [*TINY, "optim.steps=400", "trainer.checkpoint_every=20", "trainer.val_every=200"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)

    def sweep(where: str, **extra_env):
        return [*SCIML, "sweep", *long, "model.width=12", f"hydra.sweep.dir={where}"], {**env, **extra_env}

    args, e = sweep("straight")
    subprocess.run(args, cwd=tmp_path, env=e, check=True, capture_output=True)

    args, e = sweep("requeued", SLURM_JOB_ID="4242", PATH=f"{bin_dir}:{env['PATH']}")
    job = subprocess.Popen(args, cwd=tmp_path, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = tmp_path / "requeued" / "0" / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 128 + signal.SIGUSR1, err
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert "SLURM requeued the job" in err
    status = json.loads((tmp_path / "requeued" / "0" / "run.json").read_text())
    assert status["status"] == "interrupted"

    args, e = sweep("requeued")
    again = subprocess.run(args, cwd=tmp_path, env=e, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr
    resumed = json.loads((tmp_path / "requeued" / "0" / "run.json").read_text())
    assert resumed["status"] == "finished" and resumed["resumed_from_step"] > 0
    straight = json.loads((tmp_path / "straight" / "0" / "metrics.json").read_text())
    requeued = json.loads((tmp_path / "requeued" / "0" / "metrics.json").read_text())
    for key in ("val/rel_l2", "loss/total", "step"):
        assert requeued[key] == straight[key], key  # bit-identical on the CPU

    # started once more (a requeue after the end): the finished job stands, nothing retrains
    once_more = subprocess.run(args, cwd=tmp_path, env=e, capture_output=True, text=True)
    assert once_more.returncode == 0 and "already finished" in once_more.stderr
    assert json.loads((tmp_path / "requeued" / "0" / "metrics.json").read_text()) == requeued


OPTUNA_LR = ("hydra/sweeper=optuna", "optim.lr=interval(1e-4,1e-2)")


@pytest.mark.parametrize("overrides, message", [
    (("hydra/sweeper=optuna", "hydra/sweeper=nope"), "Could not find 'hydra/sweeper/nope'"),
    (("hydra/sweeper=optuna", "hydra/launcher=nope"),
     "Could not find 'hydra/launcher/nope' (valid: basic, joblib, slurm, submitit_local, submitit_slurm)"),
    (("hydra/sweeper=optuna", "optim.lr=interval(1e-2,1e-3)"), "optim.lr: empty interval(0.01, 0.001)"),
    (("hydra/sweeper=optuna", "model.widht=choice(8,16)"), "model.widht: no such key"),
    # the sweeper's and launcher's numbers: else a traceback (or no job at all) after the sweep dir is made
    ((*OPTUNA_LR, "hydra.sweeper.n_trials=0"), "hydra.sweeper.n_trials: must be a positive integer, got 0"),
    ((*OPTUNA_LR, "hydra.sweeper.n_trials=-3"), "hydra.sweeper.n_trials: must be a positive integer, got -3"),
    ((*OPTUNA_LR, "hydra.sweeper.n_jobs=0"), "hydra.sweeper.n_jobs: must be a positive integer, got 0"),
    ((*OPTUNA_LR, "hydra.sweeper.max_failure_rate=-0.5"), "hydra.sweeper.max_failure_rate: must be between 0 and 1"),
    (("hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "model.width=8,16"),
     "hydra.launcher.n_jobs: must be a positive integer (jobs at once) or negative (-1: all cores"),
    (("hydra.sweeper.max_batch_size=0", "model.width=8,16"), "hydra.sweeper.max_batch_size: must be a positive integer"),
    # a grid that gives no job, or cannot be expanded
    (("model.width=range(0)",), "model.width: range(0) is empty: no values to try"),
    (("model.width=range(8,4)", "optim.lr=1e-3,2e-3"), "model.width: range(8,4) is empty: no values to try"),
    (("hydra/sweeper=optuna", "model.width=range(0)"), "model.width: range(0) is empty: no values to try"),
    (("model.width=range(1,2,0)",), "model.width: range(1,2,0): range() arg 3 must not be zero"),
    (("model=glob(nomatch*)",), "model: glob(nomatch*) matches no option (valid: drm, fno,"),
    (("model.width=glob(*)",), "model.width: glob(*): glob() chooses among a config group's options"),
])
def test_a_bad_sweep_is_one_line_before_any_job(sciml, overrides, message):
    proc = sciml("sweep", *TINY, *overrides)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("sciml: config error: ") and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (sciml.cwd / "outputs").exists()  # no sweep directory, multirun.yaml or summary.csv


def test_a_glob_over_a_group_sweeps_the_options_it_matches(sciml):
    proc = sciml("sweep", *TINY, "optim.steps=2", "trainer.val_every=2", "optim=glob([adam,adam_cos*])")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(only_run_dir(sciml.cwd / "outputs" / "sweep"))
    assert sorted(o for r in rows for o in r["overrides"].split() if o.startswith("optim=")) == \
        ["optim=adam", "optim=adam_cosine"]


def test_the_study_direction_is_the_problems():
    assert _direction("sciml_cli.problems.ct.Ct") == "maximize"  # PSNR
    assert _direction("sciml_cli.problems.burgers.Burgers") == "minimize"
    from sciml_cli.commands import compose

    cfg, _ = compose("sweep", ["experiment=lgd_ct_small", "hparams_search=fno_burgers_quick"], keep_hydra=True)
    assert cfg.hydra.sweeper.direction == "maximize"


def test_a_sweep_relaunched_with_other_settings_stops_and_keeps_the_finished_runs(sciml):
    """A sweep directory holding finished jobs of other settings: the relaunch stops at the first
    job with one line naming hydra.sweep.dir, and the finished run's result stays as it was."""
    sciml("sweep", *TINY, "optim.steps=20", "model.width=8,16", "hydra.sweep.dir=sw", check=True)
    before = (sciml.cwd / "sw" / "0" / "metrics.json").read_text()
    proc = sciml("sweep", *TINY, "optim.steps=20", "model.width=4", "hydra.sweep.dir=sw")
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sciml:")]
    assert len(errors) == 1 and errors[0].startswith("sciml: config error: hydra.sweep.dir:"), proc.stderr
    assert "holds a run of other model settings" in errors[0] and "Traceback" not in proc.stderr
    assert (sciml.cwd / "sw" / "0" / "metrics.json").read_text() == before
    assert json.loads(before)["status"] == "finished"
    # its best config runs again with the same checks as `sciml train`: one line, nothing written
    for args, message in [(["--config-path", "sw", "--config-name", "best", "model.widht=3"],
                           "sciml: config error: model.widht: no such key; did you mean width?"),
                          (["--config-path", "sw", "--config-name", "bets"],
                           "sciml: config error: --config-name: no bets.yaml in"),
                          (["-cp", "nowhere", "-cn", "best"], "sciml: config error: --config-path: no such directory")]:
        proc = sciml("train", *args)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith(message), proc.stderr
    assert not (sciml.cwd / "outputs").exists()
    # a relative --config-path is read from where the command runs (Hydra alone reads it from its module)
    proc = sciml("train", "--config-path", "sw", "--config-name", "best", "optim.steps=5", "output=json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["metrics"]["step"] == 5, proc.stderr
