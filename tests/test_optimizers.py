"""Dense BFGS: the textbook update, convergence where L-BFGS's short history stalls, and a
trainer phase that resumes bit for bit."""

from __future__ import annotations

import pytest
import torch
from conftest import PHASED, SignalAt, fit

from sciml_cli.training import checkpoint
from sciml_cli.training.optimizers import BFGS, LevenbergMarquardt, rank_two
from sciml_cli.training.trainer import Interrupted


def _textbook(H, s, y, tau=1.0):
    """(I − ρ s yᵀ) τH (I − ρ y sᵀ) + ρ s sᵀ, written out with dense matrices."""
    rho = 1.0 / y.dot(s)
    eye = torch.eye(len(s), dtype=s.dtype)
    return (eye - rho * torch.outer(s, y)) @ (tau * H) @ (eye - rho * torch.outer(y, s)) + rho * torch.outer(s, s)


@pytest.mark.parametrize("scaling", ["none", "oren_luenberger"])
def test_the_update_is_the_textbook_formula_and_meets_the_secant_condition(scaling):
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(7, 7, generator=gen, dtype=torch.float64)
    H = A @ A.T + 7 * torch.eye(7, dtype=torch.float64)
    s = torch.randn(7, generator=gen, dtype=torch.float64)
    y = H.inverse() @ s * 3 + 0.1 * torch.randn(7, generator=gen, dtype=torch.float64)  # s·y > 0
    tau = min(1.0, float(y.dot(s) / y.dot(H @ y))) if scaling == "oren_luenberger" else 1.0
    assert tau < 1 or scaling == "none"  # the scaled case really scales
    expected = _textbook(H, s, y, tau)
    tau_, U, V = rank_two(s, y, H @ y, scaling)
    updated = tau_ * H + U @ V.T
    torch.testing.assert_close(updated, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(updated @ y, s, rtol=1e-12, atol=1e-12)


def test_no_positive_curvature_no_update():
    s = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    assert rank_two(s, -s, -s, "none") is None


def _rosenbrock(x):
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def _closure(opt, x, f=_rosenbrock):
    """The closure that ``opt`` steps with: f(x) and its gradient."""
    def closure():
        opt.zero_grad()
        loss = f(x)
        loss.backward()
        return loss
    return closure


@pytest.mark.parametrize("scaling", ["none", "oren_luenberger"])
def test_every_iteration_applies_the_textbook_update_to_the_stored_matrix(scaling):
    """The optimiser gathers the updates and derives H y from the last direction; the matrix it
    stores is still the textbook update of the previous one, iteration by iteration, and the
    direction it takes is −H g."""
    x = torch.nn.Parameter(torch.tensor([-1.2, 1.0] * 3, dtype=torch.float64))
    opt = BFGS([x], max_iter=1, scaling=scaling)
    closure = _closure(opt, x)
    opt.step(closure)
    opt.step(closure)  # the first matrix, γ I updated once
    state = opt.state[x]
    for _ in range(15):
        H, s, g_prev = state["H"].clone(), state["d"] * state["t"], state["prev_flat_grad"].clone()
        opt.step(closure)
        g, y = state["prev_flat_grad"], state["prev_flat_grad"] - g_prev
        tau = min(1.0, float(y.dot(s) / y.dot(H @ y))) if scaling == "oren_luenberger" else 1.0
        torch.testing.assert_close(state["H"], _textbook(H, s, y, tau), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(state["d"], -state["H"] @ g, rtol=1e-9, atol=1e-12)


def _minimise(optimizer_class, iterations, **kwargs):
    x = torch.nn.Parameter(torch.tensor([-1.2, 1.0] * 5, dtype=torch.float64))
    opt = optimizer_class([x], max_iter=iterations, tolerance_grad=1e-14, tolerance_change=1e-16, **kwargs)
    opt.step(_closure(opt, x))
    return x.detach(), opt.state[x]["n_iter"]


@pytest.mark.parametrize("scaling", ["none", "oren_luenberger"])
def test_bfgs_solves_rosenbrock_where_short_history_lbfgs_does_not(scaling):
    x, n_iter = _minimise(BFGS, 400, scaling=scaling)
    assert (x - 1).abs().max() < 1e-7 and n_iter < 400
    y, _ = _minimise(torch.optim.LBFGS, 400, history_size=3, line_search_fn="strong_wolfe")
    assert (y - 1).abs().max() > 100 * (x - 1).abs().max()


def test_a_descent_direction_is_restored_when_the_matrix_goes_wrong():
    x = torch.nn.Parameter(torch.tensor([3.0, -2.0], dtype=torch.float64))
    opt = BFGS([x], max_iter=1)
    closure = _closure(opt, x, lambda x: (x ** 2).sum())
    opt.step(closure)
    opt.state[x]["H"] = -torch.eye(2, dtype=torch.float64)  # what rounding could leave behind
    before = float(closure().detach())
    opt.step(closure)
    assert float(closure().detach()) < before


BFGS_PHASED = [o.replace("adam_lbfgs", "adam_bfgs").replace("lbfgs_steps", "bfgs_steps") for o in PHASED]


@pytest.mark.parametrize("stop_at", [24, 26])
def test_a_bfgs_phase_resumes_bit_for_bit(tmp_path, stop_at):
    full, full_model = fit(BFGS_PHASED, tmp_path / "full")
    with pytest.raises(Interrupted):
        fit(BFGS_PHASED, tmp_path / "cut", callbacks=[SignalAt(stop_at)])
    state = checkpoint.load(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert state["optimizer"]["state"][0]["H"].shape == (sum(p.numel() for p in full_model.parameters()),) * 2
    resumed, resumed_model = fit(BFGS_PHASED, tmp_path / "cut", resume=state)
    full.pop("wall_time_s"), resumed.pop("wall_time_s")
    assert resumed == full
    for a, b in zip(full_model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)


# -- Levenberg-Marquardt ---------------------------------------------------------------------------
def _linear_system(x, y):
    def f(params, xi, yi):
        w, b = params
        return (xi @ w + b - yi).reshape(1)

    return [(f, (x, y), 1.0)]


def test_lm_on_a_linear_model_lands_on_the_least_squares_solution():
    """Gauss-Newton is exact on a linear model: with little damping one step solves the
    normal equations, the same solution as a QR least-squares solve."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, dtype=torch.float64, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.3 + 0.1 * torch.randn(50, dtype=torch.float64, generator=g)
    w, b = torch.zeros(3, dtype=torch.float64, requires_grad=True), torch.zeros((), dtype=torch.float64, requires_grad=True)
    lm = LevenbergMarquardt([w, b], damping=1e-12, min_damping=1e-14)
    parts, gradient = lm.step(_linear_system(x, y))
    expected = torch.linalg.lstsq(torch.cat([x, torch.ones(50, 1, dtype=torch.float64)], 1), y[:, None]).solution[:, 0]
    assert torch.allclose(torch.cat([w.detach(), b.detach()[None]]), expected, atol=1e-10)
    assert torch.allclose(gradient, torch.cat([-2 * x.T @ y, -2 * y.sum()[None]]))  # 2 J^T r at zero weights
    assert torch.equal(parts[0], -y)
    assert lm.param_groups[0]["damping"] == pytest.approx(1e-12 / 3, rel=1e-12)  # accepted: decreased by 3


def test_lm_refuses_a_step_that_raises_the_loss_and_damps_until_one_lowers_it():
    """Three times the Gauss-Newton step of a linear model overshoots its minimum (the loss
    rises), so the first tries are refused and the damping grows until a shorter step helps."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, dtype=torch.float64, generator=g)
    y = x @ torch.tensor([0.5, 1.0, -1.0], dtype=torch.float64)
    w, b = torch.zeros(3, dtype=torch.float64, requires_grad=True), torch.zeros((), dtype=torch.float64, requires_grad=True)
    lm = LevenbergMarquardt([w, b], lr=3.0, damping=1e-3)
    system = _linear_system(x, y)
    before = LevenbergMarquardt.loss(system, LevenbergMarquardt.residuals(system, (w.detach(), b.detach())))
    lm.step(system)
    after = LevenbergMarquardt.loss(system, LevenbergMarquardt.residuals(system, (w.detach(), b.detach())))
    assert after < before and lm.param_groups[0]["damping"] > 1e-3 * 2 ** 5  # at least five refusals


def test_lm_solves_rosenbrock_as_a_least_squares_problem():
    """r = (10 (y - x^2), 1 - x) from the textbook start (-1.2, 1): a rejected step raises the
    damping, and the iteration reaches the minimum (1, 1) to rounding."""
    def f(params, pick):  # one residual per sample, picked by a one-hot row
        (p,) = params
        return (torch.stack([10 * (p[1] - p[0] ** 2), 1 - p[0]]) * pick).sum().reshape(1)

    p = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    lm = LevenbergMarquardt([p], damping=1.0)
    system = [(f, (torch.eye(2, dtype=torch.float64),), 1.0)]
    dampings = []
    for _ in range(40):
        lm.step(system)
        dampings.append(lm.param_groups[0]["damping"])
    assert torch.allclose(p.detach(), torch.ones(2, dtype=torch.float64), atol=1e-10)
    assert any(b > a for a, b in zip(dampings, dampings[1:]))  # some step was refused


def test_lm_never_takes_a_step_that_raises_the_loss_or_is_not_finite():
    def f(params, xi):
        (w,) = params
        return torch.where(w.abs() > 1.5, torch.nan, w - xi).reshape(1)  # NaN beyond 1.5

    w = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    lm = LevenbergMarquardt([w], damping=1e-9, min_damping=1e-12, max_tries=3)
    lm.step([(f, (torch.tensor([2.0, 2.0], dtype=torch.float64),), 1.0)])
    assert w.item() == 0.0  # every try lands on NaN: no step, the damping raised
    assert lm.param_groups[0]["damping"] == pytest.approx(8e-9)


def test_lm_takes_no_step_where_the_gradient_is_not_finite():
    def f(params, xi):  # finite at w = 0, its derivative is not
        (w,) = params
        return (torch.sqrt(w.abs()) - xi).reshape(1)

    w = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    lm = LevenbergMarquardt([w])
    parts, gradient = lm.step([(f, (torch.tensor([1.0], dtype=torch.float64),), 1.0)])
    assert torch.isfinite(parts[0]).all() and not torch.isfinite(gradient).all() and w.item() == 0.0


LM = ["optim=lm", "optim.steps=12", "model.width=8", "model.depth=2", "model.n_interior=64", "model.n_initial=16",
      "model.n_boundary=16", "model.resample_every=4", "trainer.dtype=float64", "trainer.val_every=6",
      "trainer.checkpoint_every=4", "trainer.log_every=1"]


def test_an_lm_phase_learns_and_resumes_bit_for_bit(tmp_path):
    full, full_model = fit(LM, tmp_path / "full")
    history = checkpoint.load(tmp_path / "full" / "checkpoints" / "last.pt")["history"]
    assert [s for s, _ in history] == list(range(1, 13))
    assert history[-1][1] < 0.1 * history[0][1]  # the loss logged at step 1 is the starting loss
    with pytest.raises(Interrupted):
        fit(LM, tmp_path / "cut", callbacks=[SignalAt(7)])
    state = checkpoint.load(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert state["step"] == 7 and state["optimizer"]["param_groups"][0]["damping"] != 1e-3  # it moved and is kept
    resumed, resumed_model = fit(LM, tmp_path / "cut", resume=state)
    full.pop("wall_time_s"), resumed.pop("wall_time_s")
    assert resumed == full
    for a, b in zip(full_model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)


def test_lm_trains_a_pinn_below_the_classical_baseline_where_adam_does_not(tmp_path):
    """30 Levenberg-Marquardt steps on the heat PINN (2 x 16, 337 weights) beat the problem's
    stored Crank-Nicolson baseline; 30 Adam steps from the same start are far above it."""
    from conftest import build

    tuned = [*LM, "optim.steps=30", "model.width=16"]
    summary, _ = fit(tuned, tmp_path / "lm")
    baseline = build(tuned)[3].baselines()["crank_nicolson_9_rel_l2"]
    adam, _ = fit([*tuned, "optim=adam", "optim.lr=1e-2"], tmp_path / "adam")
    assert summary["val/rel_l2"] < baseline < adam["val/rel_l2"]
