"""The command line, end to end, as real subprocesses."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import torch
import yaml
from conftest import ROOT, TINY, assert_figure, only_run_dir
from omegaconf import OmegaConf

import sciml_cli
from sciml_cli.data.hdf5 import read_solution
from sciml_cli.training import checkpoint


def test_help_lists_commands_without_importing_torch():
    code = (
        "import sys; from sciml_cli.__main__ import main; rc = main(['--help']); "
        "assert 'torch' not in sys.modules and 'hydra' not in sys.modules, 'heavy import'; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "eval", "solve", "sweep"):
        assert f"  {command} " in proc.stdout


def test_bare_sciml_prints_usage(sciml):
    proc = sciml()
    assert proc.returncode == 0 and "commands:" in proc.stdout


def test_unknown_command_is_one_line_naming_the_nearest_and_exits_2(sciml):
    proc = sciml("fly")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "sciml: unknown command 'fly' (valid: train, eval, solve, sweep)\n"
    proc = sciml("trian")
    assert proc.returncode == 2
    assert proc.stderr == "sciml: unknown command 'trian'; did you mean train? (valid: train, eval, solve, sweep)\n"


def test_train_help_shows_groups_and_options(sciml):
    proc = sciml("train", "--help")
    assert proc.returncode == 0
    assert "== Configuration groups ==" in proc.stdout
    assert "optim: adam, adam_bfgs, adam_cosine, adam_curriculum, adam_lbfgs, lbfgs, lm, sgd, ude" in proc.stdout
    assert "experiment: " in proc.stdout and "pinn_heat" in proc.stdout


def test_cfg_job_prints_resolved_config(sciml):
    proc = sciml("train", "--cfg", "job", "--resolve", "optim.lr=0.005")
    assert proc.returncode == 0, proc.stderr
    assert "lr: 0.005" in proc.stdout and "${" not in proc.stdout
    assert not (sciml.cwd / "outputs").exists()


def test_shell_completion_completes_groups_through_the_dispatcher(sciml):
    proc = sciml("-sc", "query=bash", env={"COMP_LINE": "sciml train optim=", "COMP_POINT": "18"})
    assert proc.returncode == 0
    assert set(proc.stdout.split()) >= {"optim=adam", "optim=lbfgs", "optim=sgd", "optim=adam_lbfgs"}
    proc = sciml("-sc", "query=bash", env={"COMP_LINE": "sciml sw", "COMP_POINT": "8"})
    assert proc.stdout.split() == ["sweep"]


@pytest.mark.parametrize(
    "override, key, hint",
    [
        ("model=nope", "model", "valid: drm, fno, hybrid, lgd, lpd, neural_ode, pinn, tv_learned, ude"),
        ("optim=nope", "optim", "adam, adam_bfgs, adam_cosine, adam_curriculum, adam_lbfgs, lbfgs, lm, sgd, ude"),
        ("optim.lr=-0.1", "optim.lr", "> 0"),
        ("optim.lr=fast", "optim.lr", "> 0"),
        ("optim.lr=inf", "optim.lr", "finite number > 0, got inf"),
        ("problem.kappa=nan", "problem.kappa", "expected a finite number, got nan"),
        ("paths.outputs=/dev/null/x", "paths.outputs", "cannot make /dev/null/x: /dev/null is not a directory"),
        ("optim.steps=0", "optim.steps", "> 0"),
        ("model.width=wide", "model.width", "integer"),
        ("model.depth=-2", "model.depth", "> 0"),
        ("model.activation=swish", "model.activation", "tanh, sin, sigmoid, softplus, arctan, elu, relu, relu3, gaussian, prelu, identity"),
        ("model.learn={nu:0.0} model.n_observations=10", "model.learn", "no coefficient 'nu' (coefficients: kappa)"),
        ("model.hard_constraints=true problem=burgers problem.setup=fno", "problem", "offers operator data"),
        ("model.adaptive=rad model.resample_every=10 model.n_interior=3000 model.rad_pool=2000", "model.rad_pool",
         "raise rad_pool to at least 3000"),
        ("model.widht=3", "model.widht", "valid: width, depth"),
        ("trainer.dtype=float16", "trainer.dtype", "float32, float64"),
        ("trainer.device=tpu", "trainer.device", "valid: auto"),
        ("problem.kappa=0", "problem.kappa", "> 0"),
        ("resume=auto", "resume", "no run with a checkpoint"),
        ("resume=missing/last.pt", "resume", "no checkpoint at"),
        ("width", "width", "key=value"),
        ("optim=sgd optim.phases.0.optimizer.momentum=0", "optim.phases.0", "Nesterov momentum requires"),
        ("+optim.phases.0.scheduler._target_=torch.optim.lr_scheduler.ReduceLROnPlateau "
         "+optim.phases.0.scheduler._partial_=true", "optim.phases.0.scheduler", "needs a metric"),
        ("paths.outputs=", "paths.outputs", "must not be empty"),  # else `${paths.outputs}/train` is /train
        ("paths.outputs=/proc/nope", "paths.outputs", "/proc is not on a disk"),  # not "disk full"
        ("paths.data=/dev/null", "paths.data", "is not a directory"),
        ("model.loss_weights.residual=-1", "model.loss_weights.residual", "must be >= 0, got -1"),
        ("model.balance=lr_annealing model.balance_alpha=5", "model.balance_alpha", "must be <= 1"),
        ("optim.betas=[0.9]", "optim.betas", "expected 2 items"),  # the key typed, not the phase
        ("problem.resolution=2", "problem.resolution", "must be >= 3"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(sciml, override, key, hint):
    proc = sciml("train", *override.split())
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"sciml: config error: {key}:"), lines[0]
    assert hint in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (sciml.cwd / "outputs").exists()


def test_a_fresh_interpreter_and_the_tests_forked_one_answer_alike(sciml):
    """The CLI tests fork sciml from a preloaded interpreter (conftest.Zygote): the same
    streams and exit code as ``python -m sciml_cli`` started afresh."""
    import conftest

    zygote = conftest._zygote
    if os.environ.get("SCIML_TEST_FRESH") != "1":  # the forked path is in use, not silently bypassed
        assert zygote is not None and zygote.fits(conftest.sciml_environment())
    calls = zygote.calls if zygote else 0
    for args in (["model.width=-3"], ["model.widht=3", "output=json"], ["--cfg", "job", "model.width=8"]):
        forked, fresh = sciml("train", *args), sciml("train", *args, fresh=True)
        assert (forked.returncode, forked.stderr) == (fresh.returncode, fresh.stderr)
        if "output=json" in args:  # the same object but for the wall time
            forked, fresh = ({k: v for k, v in json.loads(p.stdout).items() if k != "wall_time_s"} for p in (forked, fresh))
            assert forked == fresh and forked["exit_code"] == 2
        else:
            assert forked.stdout == fresh.stdout
    assert zygote is None or zygote.calls == calls + 3


@pytest.mark.parametrize("args, line", [
    (["--cfg", "jobb"], "argument --cfg/-c: invalid choice: 'jobb' (choose from 'job', 'hydra', 'all')"),
    (["--bogus"], "unknown flag --bogus"),
    (["optim.steps=2", "-m", "model.width=8"], "unrecognized arguments: model.width=8; give the flags before"),
])
def test_a_wrong_hydra_flag_is_one_line(sciml, args, line):
    proc = sciml("train", *args)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"sciml: config error: {line}"), proc.stderr
    assert not (sciml.cwd / "outputs").exists()


def test_full_error_shows_the_traceback(sciml):
    proc = sciml("train", "optim.lr=-1", env={"HYDRA_FULL_ERROR": "1"})
    # the error is raised, not reported: Python's exit status 1 and the traceback down to it
    assert proc.returncode == 1 and proc.stderr.startswith("Traceback (most recent call last):")
    assert proc.stderr.strip().splitlines()[-1].startswith("sciml_cli.errors.ConfigError: optim.lr: "), proc.stderr


def _git_head() -> str | None:
    """The commit of the tree the package runs from, as ``run.json`` should record it (None
    outside git)."""
    src = Path(sciml_cli.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return out.stdout.strip() or None


def test_train_writes_the_run_directory_and_eval_rebuilds_from_it(sciml):
    with_progress = [o for o in TINY if not o.startswith("trainer.callbacks.progress")]
    started = time.perf_counter()
    proc = sciml("train", *with_progress)
    measured = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "heat-pinn")
    # the saved config is the composed one, overrides included
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert (cfg.model.width, cfg.model.depth, cfg.optim.steps, cfg.trainer.val_every) == (16, 2, 40, 20)
    last = checkpoint.load(run / "checkpoints" / "last.pt")
    best = checkpoint.load(run / "checkpoints" / "best.pt")
    assert last["step"] == 40 and best["step"] in (20, 40)
    assert [step for step, _ in last["history"]] == list(range(5, 41, 5))  # log_every=5

    # metrics.json: the final validation is the last checkpoint's, the best one the best checkpoint's
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["step"] == 40
    assert (metrics["val_metric"], metrics["val_direction"]) == ("rel_l2", "minimize")
    assert set(last["metrics"]) == {"rel_l2", "max_abs", "rmse"}
    assert {k: metrics[f"val/{k}"] for k in last["metrics"]} == last["metrics"]
    assert metrics["best/rel_l2"] == best["best"] == best["metrics"]["rel_l2"]
    assert metrics["best/rel_l2"] <= metrics["val/rel_l2"]
    assert metrics["loss/total"] == last["history"][-1][1]
    assert metrics["wall_time_s"] == round(last["elapsed"], 3)

    # run.json: provenance of this run, its wall time within that of the whole command
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["resumed_from_step"] is None
    assert info["seed"] == cfg.trainer.seed == 0
    assert info["device"] == cfg.trainer.device == "cpu" and info["dtype"] == cfg.trainer.dtype == "float32"
    assert info["versions"]["torch"] == torch.__version__ and info["versions"]["sciml"] == sciml_cli.__version__
    assert info["git"]["commit"] == _git_head()
    assert info["wall_time_s"] == metrics["wall_time_s"] and 0 < info["wall_time_s"] < measured

    for name in ("prediction.png", "loss.png"):
        assert_figure(run / "plots" / name)
    _check_tensorboard(run / "tb", metrics, last["history"], cfg.optim.lr)
    # the summary table prints the run's own numbers
    assert "run summary" in proc.stdout and "val/rel_l2" in proc.stdout
    assert f"{metrics['val/rel_l2']:.4e}" in proc.stdout and f"{metrics['best/rel_l2']:.4e}" in proc.stdout

    proc = sciml("eval", f"run={run}")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "eval.json").read_text())
    assert result["checkpoint"] == str(run / "checkpoints" / "best.pt") and result["step"] == best["step"]
    assert set(result["metrics"]) == {"rel_l2", "max_abs", "rmse"}
    # rebuilt from the checkpoint alone, the model scores what it scored when it was saved
    assert result["metrics"] == pytest.approx(best["metrics"], rel=1e-9)
    assert_figure(run / "plots" / "eval_best.png")
    assert all(f"{v:.4e}" in proc.stdout for v in result["metrics"].values()), proc.stdout

    proc = sciml("eval", f"run={run}", "checkpoint=last", "resolution=64")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "eval.json").read_text())
    assert result["resolution"] == 64 and result["step"] == 40
    assert result["checkpoint"] == str(run / "checkpoints" / "last.pt")


def _check_tensorboard(tb, metrics, history, lr):
    """The event files hold what the run logged: every loss at every log step (the checkpoint's
    history), the learning rate, both validations (the best is metrics.json's best), the images,
    and the hparams with the final metrics."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    training, final, images = {}, {}, {}
    n_hparams = 0
    for events in tb.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0})
        acc.Reload()
        has_hparams = "_hparams_/experiment" in acc.summary_metadata
        n_hparams += has_hparams
        scalars = final if has_hparams else training
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in acc.Tags()["images"]:
            images.setdefault(tag, []).extend(e.step for e in acc.Images(tag))
    assert n_hparams == 1, n_hparams
    log_steps = [step for step, _ in history]
    for tag in ("loss/residual", "loss/initial", "loss/boundary", "loss/total", "lr", "grad_norm"):
        assert [step for step, _ in training[tag]] == log_steps, (tag, training[tag])
    assert [v for _, v in training["loss/total"]] == pytest.approx([loss for _, loss in history], rel=1e-6)
    assert [v for _, v in training["lr"]] == pytest.approx([lr] * len(log_steps), rel=1e-6)
    for key in ("rel_l2", "max_abs", "rmse"):
        steps, values = zip(*training[f"val/{key}"])
        assert steps == (20, 40) and values[-1] == pytest.approx(metrics[f"val/{key}"], rel=1e-6)
    assert min(v for _, v in training["val/rel_l2"]) == pytest.approx(metrics["best/rel_l2"], rel=1e-6)
    assert images["val/prediction"] == [20, 40]
    for key in ("best/rel_l2", "val/rel_l2", "loss/total", "wall_time_s"):
        assert final[key] == [(40, pytest.approx(metrics[key], rel=1e-6))], (key, final.get(key))


@pytest.mark.parametrize(
    "args, message",
    [(["run=does/not/exist"], "run: no such run directory"), ([], "run: required"),
     (["run=.", "checkpoint=middle"], "checkpoint: unknown checkpoint"),
     (["run=.", "resolution=abc"], "resolution: must be a positive integer, got 'abc'"),
     (["run=.", "resolution=-8"], "resolution: must be a positive integer, got -8"),
     (["run=.", "resolutions=[64,0]"], "resolutions.1: must be a positive integer, got 0")],
)
def test_eval_bad_input(sciml, args, message):
    proc = sciml("eval", *args)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert message in proc.stderr


def test_solve_writes_hdf5_and_png(sciml):
    started = time.perf_counter()
    proc = sciml("solve", "problem=heat", "resolution=65")
    measured = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    out = only_run_dir(sciml.cwd / "outputs" / "solve" / "heat")
    solution = read_solution(out / "heat.h5")  # verifies the checksum
    assert tuple(solution.fields["u"].shape) == (1, 101, 65)
    assert list(solution.grid) == ["t", "x"]
    assert solution.attrs["solver"] == "crank-nicolson"
    wall = solution.attrs["wall_time_s"]
    assert 0 < wall < measured
    assert solution.attrs["rel_l2_vs_exact"] < 1e-3
    with h5py.File(out / "heat.h5") as f:
        assert "kappa: 0.1" in f.attrs["config"]
    assert_figure(out / "heat.png")
    assert "samples/s" in proc.stdout and f"{1 / wall:.3g}" in proc.stdout  # one sample


def test_solve_bad_input(sciml):
    proc = sciml("solve", "resolution=0")
    assert proc.returncode == 2 and "resolution: must be a positive integer" in proc.stderr
    proc = sciml("solve", "problem=nope")
    assert proc.returncode == 2 and proc.stderr.startswith("sciml: config error: problem: unknown option")


def test_sweep_runs_each_job_and_writes_a_ranked_summary(sciml):
    proc = sciml("sweep", *TINY, "model.width=4,16")
    assert proc.returncode == 0, proc.stderr
    sweep = only_run_dir(sciml.cwd / "outputs" / "sweep")
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and [r["rank"] for r in rows] == ["1", "2"]
    values = [float(r["value"]) for r in rows]
    assert values == sorted(values) and all(r["direction"] == "minimize" for r in rows)
    assert all(r["status"] == "finished" and r["metric"] == "rel_l2" for r in rows)
    for r in rows:  # each row is its job's own result
        metrics = json.loads((sciml.cwd / r["dir"] / "metrics.json").read_text())
        assert metrics["val/rel_l2"] == float(r["value"])
        assert checkpoint.load(sciml.cwd / r["dir"] / "checkpoints" / "best.pt")["best"] == float(r["best"])
    assert "ranked by validation rel_l2" in proc.stdout
    # each job reports on stdout; Hydra's log records stay on stderr
    assert "[HYDRA]" not in proc.stdout and "Launching 2 jobs" in proc.stderr
    assert len([ln for ln in proc.stdout.splitlines() if ln.startswith("sciml train: finished")]) == 2


def test_sweep_ranking_follows_the_metric_direction(tmp_path):
    from sciml_cli.commands.sweep import summarise

    for job, value in enumerate([20.0, 31.5, 25.0]):  # e.g. PSNR: higher is better
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "metrics.json").write_text(json.dumps(
            {"status": "finished", "val_metric": "psnr", "val_direction": "maximize", "val/psnr": value}))
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "metrics.json").write_text(json.dumps({"status": "failed", "error": "NaN"}))
    assert [r["job"] for r in summarise(tmp_path)] == [1, 2, 0, 3]
    # a job killed while its files were written (a full disk): no result, and the summary goes on
    (tmp_path / "4" / ".hydra").mkdir(parents=True)
    (tmp_path / "4" / "metrics.json").write_text('{"status": "fini')
    (tmp_path / "4" / ".hydra" / "overrides.yaml").write_text("- model.width=[8")
    rows = summarise(tmp_path)
    assert [r["job"] for r in rows] == [1, 2, 0, 3, 4] and rows[-1]["status"] == "no result"


def test_sweep_checks_every_job_before_running_any(sciml):
    proc = sciml("sweep", *TINY, "model.width=4,-1")
    assert proc.returncode == 2 and "model.width: must be > 0, got -1" in proc.stderr
    assert not (sciml.cwd / "outputs").exists()


def test_resume_may_lengthen_the_current_phase_but_not_a_finished_one(sciml):
    """In its L-BFGS phase, a run's Adam phase is done: a longer Adam phase is a config error
    (it used to be accepted and silently not run), a longer L-BFGS phase continues the run, with
    or without naming the run's optimiser again."""
    args = [*TINY, "optim=adam_lbfgs", "optim.steps=20", "optim.lbfgs_steps=4"]
    sciml("train", *args, check=True)
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "heat-pinn")
    before = (run / "metrics.json").read_text()
    proc = sciml("train", f"resume={run}", "optim=adam_lbfgs", "optim.steps=30")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("sciml: config error: optim.phases.0.steps: phase 1 (adam) of this run is "
                                  "finished after 20 steps and cannot become 30")
    assert (run / "metrics.json").read_text() == before
    # a bare resume composes the run's groups (kept in its checkpoint), so the keys of its
    # optimiser exist without naming `optim=adam_lbfgs` again
    sciml("train", f"resume={run}", "optim.lbfgs_steps=8", check=True)
    assert json.loads((run / "metrics.json").read_text())["step"] == 28
    assert yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["choices"]["optim"] == "adam_lbfgs"
    sciml("train", "resume=auto", "optim.lbfgs_steps=10", check=True)
    assert json.loads((run / "metrics.json").read_text())["step"] == 30
    # an optim naming other phases is refused: the run keeps its own, and would not have run these
    proc = sciml("train", f"resume={run}", "optim=adam", "optim.steps=40")
    assert proc.returncode == 2 and proc.stderr.startswith(
        "sciml: config error: optim: a resumed run keeps its phases (adam, lbfgs), not adam;"), proc.stderr


def test_lm_is_refused_before_any_work_where_the_loss_is_not_a_fixed_sum_of_squares(sciml):
    cases = [
        (["model=fno", "problem=burgers", "optim=lm"], "optim.phases.0.optimizer: lm needs the loss as a sum of "
         "squared residuals, which FNO does not offer here: this method does not provide it"),
        ([*TINY, "optim=lm", "model.causal_epsilon=1.0"], "optim.phases.0.optimizer: lm needs the loss as a sum of "
         "squared residuals, which PINN does not offer here: causal weighting (model.causal_epsilon)"),
        ([*TINY, "optim=lm", "trainer.devices=2"], "trainer.devices: lm runs on one process; set trainer.devices=1"),
        ([*TINY, "optim=lm", "trainer.grad_clip=1.0"], "trainer.grad_clip: lm takes no gradient steps to clip"),
        ([*TINY, "optim=lm", "trainer.amp=true"], "trainer.amp: lm solves its normal equations in full precision"),
        # a negative weight is refused for every optimiser (the loss would reward the residual)
        ([*TINY, "optim=lm", "model.loss_weights.initial=-1"], "model.loss_weights.initial: must be >= 0, got -1"),
    ]
    for args, message in cases:
        proc = sciml("train", *args)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("sciml: config error: " + message), proc.stderr
    assert not (sciml.cwd / "outputs").exists()
