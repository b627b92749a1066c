"""FNO on Burgers through the command line: train, eval's resolution sweep, solve ckpt=."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_FNO, assert_figure, first_logged_loss, only_run_dir

from sciml_cli.data.hdf5 import read_solution
from sciml_cli.numerics.metrics import relative_l2
from sciml_cli.problems.burgers import Burgers


def test_fno_burgers_train_eval_resolution_sweep_and_surrogate_solve(sciml):
    """200 steps on 40 pairs take the tiny FNO from rel-L2 1.0 (untrained) past the
    heat-equation baseline its data store (0.0086 against 0.024, measured); eval, the stored
    baseline and the surrogate's numbers are checked against their definitions."""
    proc = sciml("train", *TINY_FNO)
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "burgers-fno")
    metrics = json.loads((run / "metrics.json").read_text())
    untrained = first_logged_loss(run)
    # an untrained FNO predicts about the normalised mean, zero for these zero-mean fields
    assert untrained == pytest.approx(1.0, abs=0.1)
    data = sorted(p.name.split("-")[1] for p in (sciml.cwd / "outputs" / "data").glob("*.h5"))
    assert data == ["train", "val"]  # generated on first use and cached; test only at eval
    (val_file,) = (sciml.cwd / "outputs" / "data").glob("burgers-val-*.h5")
    assert metrics["val/rel_l2"] < read_solution(val_file).attrs["baseline_heat_rel_l2"]  # 0.0086 < 0.024

    proc = sciml("eval", f"run={run}", "resolutions=[64,128,256]")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "eval.json").read_text())
    sweep = result["resolution_sweep"]
    assert set(sweep) == {"64", "128", "256"}
    assert sweep["64"] == result["metrics"]  # the model's own resolution
    # zero-shot super-resolution: the same operator on finer grids of the same functions
    assert abs(sweep["256"]["rel_l2"] - sweep["64"]["rel_l2"]) < 0.2 * sweep["64"]["rel_l2"]
    per_sample = result["per_sample_rel_l2"]
    assert len(per_sample) == 20
    assert sum(per_sample) / 20 == pytest.approx(result["metrics"]["rel_l2"], rel=1e-12)
    assert max(per_sample) == pytest.approx(result["metrics"]["rel_l2_max"], rel=1e-12)
    # the baseline is the linear heat equation's error on the test split, as its file stores it
    (test_file,) = (sciml.cwd / "outputs" / "data").glob("burgers-test-*.h5")
    test = read_solution(test_file)
    heat = Burgers(fine_resolution=256).to("cpu", torch.float64).heat_prediction(test.fields["a"], 1.0)
    baseline = relative_l2(heat, test.fields["u"]).mean().item()
    assert test.fields["a"].shape == (20, 256)
    assert result["baselines"]["heat_equation_rel_l2"] == pytest.approx(baseline, rel=1e-12)
    assert test.attrs["baseline_heat_rel_l2"] == pytest.approx(baseline, rel=1e-12)
    assert result["metrics"]["rel_l2"] < baseline
    for label in ("best", "median", "worst"):
        assert_figure(run / "plots" / f"eval_best_{label}_sample.png")
    assert_figure(run / "plots" / "eval_best_histogram.png")
    assert not (run / "plots" / "eval_best.png").exists()  # that is the single-field plot
    assert not (run / "plots" / "eval_best_per_step.png").exists()  # one output snapshot only
    assert "resolution sweep" in proc.stdout and "baseline" in proc.stdout
    assert result["data_dir"] == "outputs/data"  # eval says which data it scored on

    # a data directory given to eval wins over the run's: the test split is made there
    proc = sciml("eval", f"run={run}", "paths.data=elsewhere", "output=json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["data_dir"] == "elsewhere"
    assert [p.name.split("-")[1] for p in (sciml.cwd / "elsewhere").glob("*.h5")] == ["test"]

    proc = sciml("solve", "problem=burgers", f"ckpt={run}", "n_samples=10", "repeats=1")
    assert proc.returncode == 0, proc.stderr
    (out,) = (sciml.cwd / "outputs" / "solve" / "burgers").glob("*/surrogate.json")
    surrogate = json.loads(out.read_text())
    assert surrogate["seed"] == 1000 and surrogate["n_samples"] == 10 and surrogate["resolution"] == 64
    assert surrogate["batch_size"] == 10  # the model's training batch by default
    # the Burgers solver computes only u from a: the whole of its time is the reference
    assert "reference_output_share" not in surrogate
    assert surrogate["speedup"] == pytest.approx(surrogate["reference_s"] / surrogate["surrogate_s"], rel=1e-12)
    # the errors and the baseline are those of the checkpoint on the fresh instances (seed 1000)
    from sciml_cli.commands.eval import restore

    _, problem, model, _ = restore(run / "checkpoints" / "best.pt", "cpu")
    fresh = problem.to("cpu", torch.float64).solve(resolution=64, n_samples=10, seed=1000)
    a, u = problem.operator_fields(fresh)
    with torch.no_grad():
        prediction = model(a.float(), {"x": fresh.grid["x"].float()})
    errors = relative_l2(prediction.flatten(1).double(), u.flatten(1))
    assert surrogate["rel_l2_mean"] == pytest.approx(errors.mean().item(), rel=1e-5)
    assert surrogate["rel_l2_max"] == pytest.approx(errors.max().item(), rel=1e-5)
    assert surrogate["baseline_heat_rel_l2"] == pytest.approx(fresh.attrs["baseline_heat_rel_l2"], rel=1e-12)
    assert surrogate["rel_l2_mean"] < surrogate["baseline_heat_rel_l2"]
    assert "speedup" in proc.stdout


def test_fno_on_a_physics_residual_only_problem_fails_before_any_work(sciml):
    proc = sciml("train", "model=fno", "problem=heat")
    assert proc.returncode == 2 and "operator data view" in proc.stderr
    assert "burgers" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (sciml.cwd / "outputs" / "data").exists()  # no data generated


def test_a_resumed_run_can_be_extended_with_more_steps(sciml):
    """``optim.steps`` reaches a preset's phases through an interpolation; the checkpoint must
    keep it unresolved, or ``resume=... optim.steps=N`` would stop at the old count."""
    proc = sciml("train", *TINY_FNO, "optim.steps=20")
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "burgers-fno")
    proc = sciml("train", *TINY_FNO, f"resume={run}", "optim.steps=30")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "metrics.json").read_text())["step"] == 30
    assert json.loads((run / "run.json").read_text())["resumed_from_step"] == 20


def test_the_resume_command_a_run_prints_works_without_its_groups(sciml):
    """An interrupted run says "Resume with: sciml train resume=<checkpoint>"; that bare command
    (the run's model and problem are not the defaults) must continue the run, and a group named
    on the command line that is not the run's is refused."""
    proc = sciml("train", *TINY_FNO, "optim.steps=20")
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "burgers-fno")
    proc = sciml("train", f"resume={run}", "optim.steps=30", "trainer.callbacks.progress=null", "output=json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["name"] == "burgers-fno" and result["run_dir"] == str(run)
    assert json.loads((run / "metrics.json").read_text())["step"] == 30
    assert json.loads((run / "run.json").read_text())["resumed_from_step"] == 20
    proc = sciml("train", "model=pinn", f"resume={run}", "optim.steps=40")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("sciml: config error: model: a resumed run keeps its model") and "FNO" in proc.stderr
    assert json.loads((run / "metrics.json").read_text())["step"] == 30
