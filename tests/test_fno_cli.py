"""FNO on Burgers through the command line: train, eval's resolution sweep, solve ckpt=."""

from __future__ import annotations

import json

from conftest import only_run_dir

TINY_FNO = [
    "experiment=fno_burgers_quick", "problem.fine_resolution=256", "problem.resolution=64",
    "model.width=16", "model.modes=8", "model.n_train=40", "model.n_test=20", "model.batch_size=10",
    "optim.steps=40", "trainer.val_every=20", "trainer.checkpoint_every=20", "trainer.log_every=5",
    "trainer.device=cpu",
]


def test_fno_burgers_train_eval_resolution_sweep_and_surrogate_solve(sciml):
    proc = sciml("train", *TINY_FNO)
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "burgers-fno")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val/rel_l2"] < 0.5  # 40 steps on 40 pairs: learning, far from converged
    data = sorted(p.name.split("-")[1] for p in (sciml.cwd / "outputs" / "data").glob("*.h5"))
    assert data == ["train", "val"]  # generated on first use and cached; test only at eval

    proc = sciml("eval", f"run={run}", "resolutions=[64,128,256]")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "eval.json").read_text())
    sweep = result["resolution_sweep"]
    assert set(sweep) == {"64", "128", "256"}
    # zero-shot super-resolution: the same operator on finer grids of the same functions
    assert abs(sweep["256"]["rel_l2"] - sweep["64"]["rel_l2"]) < 0.2 * sweep["64"]["rel_l2"]
    assert len(result["per_sample_rel_l2"]) == 20
    assert 0 < result["baselines"]["heat_equation_rel_l2"] < 0.1
    for label in ("best", "median", "worst"):
        assert (run / "plots" / f"eval_best_{label}_sample.png").is_file()
    assert (run / "plots" / "eval_best_histogram.png").is_file()
    assert not (run / "plots" / "eval_best.png").exists()  # that is the single-field plot
    assert not (run / "plots" / "eval_best_per_step.png").exists()  # one output snapshot only
    assert "resolution sweep" in proc.stdout and "baseline" in proc.stdout

    proc = sciml("solve", "problem=burgers", f"ckpt={run}", "n_samples=10", "repeats=1")
    assert proc.returncode == 0, proc.stderr
    (out,) = (sciml.cwd / "outputs" / "solve" / "burgers").glob("*/surrogate.json")
    surrogate = json.loads(out.read_text())
    assert surrogate["seed"] == 1000 and surrogate["n_samples"] == 10 and surrogate["resolution"] == 64
    assert surrogate["speedup"] > 0 and surrogate["rel_l2_mean"] < 0.5
    assert surrogate["batch_size"] == 10  # the model's training batch by default
    assert "speedup" in proc.stdout


def test_fno_on_a_physics_residual_only_problem_fails_before_any_work(sciml):
    proc = sciml("train", "model=fno", "problem=heat")
    assert proc.returncode == 2 and "does not offer the operator data view" in proc.stderr
    assert "burgers" in proc.stderr


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
