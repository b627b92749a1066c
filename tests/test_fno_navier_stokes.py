"""Navier–Stokes operator data and the autoregressive FNO (Li et al. 2021, FNO-2D)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SMALL_NS, TINY_NS, Diffusion, assert_figure, only_run_dir

from sciml_cli.models.fno import FNO
from sciml_cli.numerics.metrics import relative_l2
from sciml_cli.problems.base import SPLIT_SEEDS, OperatorData, Problem
from sciml_cli.problems.navier_stokes import NavierStokes


def small(tmp_path, **overrides) -> NavierStokes:
    return NavierStokes(**{**SMALL_NS, "data_dir": str(tmp_path), **overrides}).to("cpu", torch.float32)


def test_pairs_are_the_records_after_the_initial_condition_and_are_cached(tmp_path):
    problem = small(tmp_path)
    assert (problem.in_channels, problem.out_channels, problem.step_channels) == (2, 2, 1)
    a, u, grid = problem.operator_pairs("train", 3)
    assert a.shape == u.shape == (3, 2, 16, 16) and a.dtype == torch.float32
    assert list(grid) == ["x", "y"] and torch.equal(grid["x"], torch.arange(16) / 16)
    w = small(tmp_path).to("cpu", torch.float64).solve(16, 3, SPLIT_SEEDS["train"]).fields["w"]
    torch.testing.assert_close(a.double(), w[:, 1:3], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(u.double(), w[:, 3:5], rtol=1e-6, atol=1e-6)
    # persistence, the last input record held for both output records: from the float64 solve
    # here, from the cached float32 pairs in the problem
    persistence = relative_l2(w[:, 2:3].expand(-1, 2, -1, -1).flatten(1), w[:, 3:5].flatten(1)).mean().item()
    assert problem.baselines() == {"persistence_rel_l2": pytest.approx(persistence, rel=1e-5)}

    files = sorted(tmp_path.glob("*.h5"))
    a_again, _, _ = problem.operator_pairs("train", 3)
    assert sorted(tmp_path.glob("*.h5")) == files and torch.equal(a, a_again)
    # another resolution: its own file, the same trajectories (drawn on the solver grid)
    a_fine, u_fine, _ = problem.operator_pairs("train", 3, resolution=32)
    assert len(list(tmp_path.glob("*.h5"))) == 2
    torch.testing.assert_close(a_fine[..., ::2, ::2], a, rtol=0, atol=0)
    a_test, _, _ = problem.operator_pairs("test", 3)
    assert not torch.allclose(a_test, a)


def test_too_few_records_for_t_in_is_refused_on_use_naming_the_key(tmp_path):
    problem = small(tmp_path, t_end=2.0)
    problem.solve(16, 1)  # a solver-only use need not care about t_in
    with pytest.raises(ValueError, match="problem.t_in"):
        FNO(problem, modes=4, width=8, n_train=4, n_test=4, batch_size=2)


def test_rollout_feeds_each_prediction_back_into_the_window(tmp_path):
    torch.manual_seed(0)
    problem = small(tmp_path, t_end=6.0, t_in=3)
    model = FNO(problem, modes=4, width=8, n_layers=2, n_train=4, n_test=4, batch_size=2, autoregressive=True)
    assert model.project[-1].out_features == 1  # one snapshot per application
    a = torch.randn(2, 3, 16, 16)
    out = model(a)
    assert out.shape == (2, 3, 16, 16)
    coords = model._coordinates(None, (16, 16), a)
    window, expected = a, []
    for _ in range(3):
        expected.append(model._network(window, coords))
        window = torch.cat([window[:, 1:], expected[-1]], dim=1)
    torch.testing.assert_close(out, torch.cat(expected, dim=1))


def test_autoregressive_needs_consecutive_snapshots():
    with pytest.raises(ValueError, match="model.autoregressive"):
        FNO(Diffusion(), modes=4, width=8, n_train=4, n_test=4, batch_size=2, autoregressive=True)


def test_autoregressive_normalisation_is_shared_by_all_snapshots(tmp_path):
    problem = small(tmp_path)
    model = FNO(problem, modes=4, width=8, n_train=4, n_test=4, batch_size=2, autoregressive=True)
    model.fit_normaliser(problem)
    a, u, _ = problem.operator_pairs("train", 4)
    both = torch.cat([a, u], dim=1).double()
    for buffer in (model.a_mean, model.u_mean):
        torch.testing.assert_close(buffer.double(), both.mean().expand(buffer.shape), rtol=1e-5, atol=1e-6)
    for buffer in (model.a_std, model.u_std):
        torch.testing.assert_close(buffer.double(), both.std(correction=0).expand(buffer.shape), rtol=1e-5, atol=1e-6)


def test_the_loss_sums_the_relative_error_of_each_snapshot(tmp_path):
    problem = small(tmp_path)
    model = FNO(problem, modes=4, width=8, n_train=4, n_test=4, batch_size=2, autoregressive=True)
    batch = model.batch(problem, 0, 0)
    with torch.no_grad():
        prediction = model(batch["a"])
        loss = model.loss(problem, batch)["data"]
    per_snapshot = [torch.linalg.vector_norm(prediction[:, k] - batch["u"][:, k], dim=(-2, -1))
                    / torch.linalg.vector_norm(batch["u"][:, k], dim=(-2, -1)) for k in range(2)]
    torch.testing.assert_close(loss, (per_snapshot[0] + per_snapshot[1]).mean())


def test_fno_navier_stokes_trains_evaluates_and_runs_against_the_solver(sciml):
    proc = sciml("train", *TINY_NS)
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "navier_stokes-fno")
    metrics = json.loads((run / "metrics.json").read_text())

    proc = sciml("eval", f"run={run}", "resolutions=[16,32]")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "eval.json").read_text())
    persistence = result["baselines"]["persistence_rel_l2"]
    # 60 steps on 20 trajectories already beat holding the last input
    assert metrics["val/rel_l2"] < 0.7 * persistence
    assert result["metrics"]["rel_l2"] < 0.7 * persistence
    assert set(result["resolution_sweep"]) == {"16", "32"}
    assert_figure(run / "plots" / "eval_best_worst_sample.png")
    per_step = result["per_step_rel_l2"]
    assert len(per_step) == 2 and per_step[-1] == pytest.approx(result["metrics"]["rel_l2_last_step"])
    assert per_step[0] < per_step[1]  # a rollout's error grows with each step fed back
    assert_figure(run / "plots" / "eval_best_per_step.png")

    proc = sciml("solve", "problem=navier_stokes", f"ckpt={run}", "n_samples=4", "repeats=1", "batch_size=4")
    assert proc.returncode == 0, proc.stderr
    (out,) = (sciml.cwd / "outputs" / "solve" / "navier_stokes").glob("*/surrogate.json")
    surrogate = json.loads(out.read_text())
    assert surrogate["n_samples"] == 4 and surrogate["batch_size"] == 4
    # the solver's time for the 2 output records of 4 (steps cost alike) is the reference
    assert surrogate["reference_output_share"] == 0.5
    assert surrogate["speedup"] == pytest.approx(0.5 * surrogate["reference_s"] / surrogate["surrogate_s"], rel=1e-12)
    # the errors are those of the checkpoint on the fresh trajectories (seed 1000), and beat
    # persistence on those same trajectories
    from sciml_cli.commands.eval import restore

    _, problem, model, _ = restore(run / "checkpoints" / "best.pt", "cpu")
    fresh = problem.to("cpu", torch.float64).solve(resolution=16, n_samples=4, seed=1000)
    a, u = problem.operator_fields(fresh)
    with torch.no_grad():
        prediction = model(a.float(), {k: fresh.grid[k].float() for k in ("x", "y")})
    errors = relative_l2(prediction.flatten(1).double(), u.flatten(1))
    assert surrogate["rel_l2_mean"] == pytest.approx(errors.mean().item(), rel=1e-4)
    assert surrogate["rel_l2_max"] == pytest.approx(errors.max().item(), rel=1e-4)
    fresh_persistence = relative_l2(a[:, -1:].expand_as(u).flatten(1), u.flatten(1)).mean().item()
    assert surrogate["rel_l2_mean"] < 0.7 * fresh_persistence  # measured 0.23 vs 0.35


def test_autoregressive_fno_on_burgers_fails_before_any_work(sciml):
    proc = sciml("train", "experiment=fno_burgers_quick", "model.autoregressive=true")
    assert proc.returncode == 2, proc.stderr
    assert "model.autoregressive" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


class TwoFields(Problem, OperatorData):
    """Snapshots of two fields on a 1D grid: 3 records in, 2 out, channels (field 0, field 1)
    per record; field 1 has a 10x larger scale and an offset, so per-field statistics matter."""

    in_channels, out_channels, n_dims, step_channels = 6, 4, 1, 2

    def solve(self, resolution=None, n_samples=1, seed=0):
        raise NotImplementedError

    def operator_pairs(self, split, n_samples, resolution=None):
        g = torch.Generator().manual_seed(SPLIT_SEEDS[split])
        n = resolution or 16
        records = torch.randn(n_samples, 5, 2, n, generator=g) * torch.tensor([1.0, 10.0])[:, None] + torch.tensor([0.0, 3.0])[:, None]
        records = records.flatten(1, 2)  # [N, 10, n]: record-major, field-minor
        return records[:, :6], records[:, 6:], {"x": torch.arange(n) / n}


def test_autoregressive_rollout_with_two_fields_per_snapshot():
    problem = TwoFields()
    model = FNO(problem, modes=4, width=8, n_layers=2, n_train=8, n_test=4, batch_size=4, autoregressive=True)
    assert model.project[-1].out_features == 2
    model.fit_normaliser(problem)
    a, u, _ = problem.operator_pairs("train", 8)
    fields = torch.cat([a, u], dim=1).unflatten(1, (-1, 2))  # [N, records, 2, n]
    expected_mean = fields.transpose(1, 2).flatten(2).mean((0, 2))
    torch.testing.assert_close(model.a_mean.float(), expected_mean.repeat(3), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.u_mean.float(), expected_mean.repeat(2), rtol=1e-5, atol=1e-5)
    assert model(a).shape == u.shape
    batch = model.batch(problem, 0, 0)
    loss = model.loss(problem, batch)["data"]
    with torch.no_grad():
        pred = model(batch["a"])
    per_snapshot = [torch.linalg.vector_norm((pred - batch["u"])[:, 2 * k:2 * k + 2].flatten(1), dim=1)
                    / torch.linalg.vector_norm(batch["u"][:, 2 * k:2 * k + 2].flatten(1), dim=1) for k in range(2)]
    torch.testing.assert_close(loss.detach(), (per_snapshot[0] + per_snapshot[1]).mean(), rtol=1e-4, atol=0)
    evaluation = model.evaluate(problem)
    # per snapshot: the relative error of its two fields together, averaged over the test pairs
    error = (evaluation.prediction.double() - evaluation.reference.double()).unflatten(1, (2, 2)).flatten(2)
    reference = evaluation.reference.double().unflatten(1, (2, 2)).flatten(2)
    expected = (torch.linalg.vector_norm(error, dim=2) / torch.linalg.vector_norm(reference, dim=2)).mean(0)
    torch.testing.assert_close(evaluation.per_step.double(), expected, rtol=1e-10, atol=0)
    assert evaluation.metrics["rel_l2_last_step"] == pytest.approx(expected[-1].item(), rel=1e-10)


def test_a_resolution_that_does_not_divide_the_solver_grid_is_a_config_error(tmp_path):
    from sciml_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="resolution"):
        small(tmp_path).operator_pairs("train", 2, resolution=12)


def test_reference_data_is_generated_in_float64_off_mps():
    from sciml_cli.problems.base import float64_device

    assert float64_device(torch.device("mps")) == torch.device("cpu")  # MPS has no float64
    assert float64_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
