"""The PINN and its options: derivatives exact to rounding, constraints, RAD, causal weights,
loss balancing, inverse coefficients, and a quick Burgers run that beats the classical baseline."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import TINY, assert_figure, only_run_dir

from sciml_cli.models.pinn import PINN
from sciml_cli.nn import MLP
from sciml_cli.problems.burgers import Burgers
from sciml_cli.problems.heat import Heat

KEYS = [(), (0,), (1,), (0, 0), (0, 1), (1, 1)]


def raissi() -> Burgers:
    return Burgers(setup="raissi").to("cpu", torch.float64)


@pytest.mark.parametrize("activation", ["tanh", "sin", "sigmoid", "softplus", "arctan", "elu"])
@pytest.mark.parametrize("fourier_features", [0, 6])
def test_taylor_derivatives_equal_autograd_to_rounding(activation, fourier_features):
    torch.manual_seed(0)
    net = MLP(2, 2, width=16, depth=3, activation=activation, input_bounds=[(-1, 1), (0, 1)],
              fourier_features=fourier_features).double()
    x = 2 * torch.rand(64, 2, dtype=torch.float64) - 1
    auto, taylor = net.derivatives(x, KEYS, "autograd"), net.derivatives(x, KEYS, "taylor")
    for k in KEYS:
        scale = auto[k].abs().max().item()
        assert scale > 1e-3, k  # a non-trivial derivative, so the comparison means something
        assert (auto[k] - taylor[k]).abs().max().item() <= 1e-12 * scale, (k, scale)


@pytest.mark.parametrize("activation", ["tanh", "sin", "sigmoid", "softplus", "arctan"])
@pytest.mark.parametrize("depth, keys", [(3, KEYS), (1, KEYS), (2, [(), (0,), (1,)]), (2, [(), (0, 1), (1,)])])
def test_fused_taylor_pass_gives_autograd_parameter_gradients(activation, depth, keys):
    """The fused pass (hand-written backward) against autograd's double backward, for a loss
    mixing every derivative with random weights."""
    torch.manual_seed(2)
    net = MLP(2, 2, width=9, depth=depth, activation=activation, input_bounds=[(-1, 1), (0, 2)]).double()
    x = torch.rand(40, 2, dtype=torch.float64) * torch.tensor([2.0, 2.0]) - torch.tensor([1.0, 0.0])
    mix = {k: torch.randn(40, 2, dtype=torch.float64) for k in keys}
    grads = {}
    for mode in ("autograd", "taylor"):
        d = net.derivatives(x, keys, mode)
        loss = sum((mix[k] * d[k]).sum() + d[k].pow(2).sum() for k in keys)
        grads[mode] = torch.autograd.grad(loss, list(net.parameters()))
    for a, b in zip(grads["autograd"], grads["taylor"]):
        assert a.abs().max() > 1e-6
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("hard", [False, True])
def test_pinn_fields_agree_in_both_modes_and_carry_parameter_gradients(hard):
    problem = raissi()
    torch.manual_seed(1)
    a = PINN(problem, width=12, depth=2, hard_constraints=hard).double()
    b = PINN(problem, width=12, depth=2, hard_constraints=hard, derivatives="taylor").double()
    b.load_state_dict(a.state_dict())
    pts = problem.sample_interior(100, seed=0)
    fa, fb = a.fields(problem, pts), b.fields(problem, pts)
    assert set(fa) == set(fb) == {"u", "u_t", "u_x", "u_xx"}
    for name in fa:
        torch.testing.assert_close(fa[name], fb[name], rtol=1e-12, atol=1e-12)
    ga = torch.autograd.grad(problem.residual(fa, pts, problem.coefficients()).pow(2).mean(), list(a.parameters()))
    gb = torch.autograd.grad(problem.residual(fb, pts, problem.coefficients()).pow(2).mean(), list(b.parameters()))
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_raissi_burgers_offers_its_exact_solution_as_a_residual_zero():
    problem = raissi()
    pts = problem.sample_interior(400, seed=3)
    pts = pts[pts[:, 1] > 0.05]  # the Hermite quadrature is for t > 0
    exact = lambda p: problem.exact(p[:, :1], p[:, 1:])  # noqa: E731
    r = problem.residual_of(exact, pts)
    assert r.abs().max() < 1e-6
    # the check can fail: a wrong viscosity leaves a residual far above it
    assert problem.residual_of(exact, pts, {"lambda1": 1.0, "lambda2": 2 * problem.nu}).abs().max() > 1e-2


def test_burgers_constraint_transform_meets_the_conditions_for_any_network():
    problem = raissi()
    net = lambda p: torch.cos(2 * p[:, :1] - p[:, 1:]) + 3  # noqa: E731
    for pts, check in ((problem.sample_initial(50, 1), problem.initial_residual),
                       (problem.sample_boundary(50, 2), problem.boundary_residual)):
        g, phi = problem.constraint(pts)
        assert check(g + phi * net(pts), pts).abs().max() < 1e-14


def test_observations_are_on_the_grid_with_the_stated_noise():
    clean = raissi()
    points, values = clean.observations(2000, seed=0)
    assert points.shape == (2000, 2) and len(set(map(tuple, points.tolist()))) == 2000
    torch.testing.assert_close(values[:, 0], clean.exact(points[:, 0], points[:, 1]), rtol=0, atol=1e-12)
    noisy = Burgers(setup="raissi", noise=0.01).to("cpu", torch.float64)
    _, noisy_values = noisy.observations(2000, seed=0)
    _, u = clean.reference()
    ratio = (noisy_values - values).std() / u.std()
    assert 0.009 < ratio < 0.011


def test_causal_weights_decrease_in_time_and_start_at_one():
    """Wang, Sankaran & Perdikaris (2022): slab i's loss L_i is weighted by exp(-eps sum_{j<i} L_j),
    computed here slab by slab; the weights are constants of the step (no gradient through them)."""
    problem = raissi()
    eps, bins = 0.5, 8
    model = PINN(problem, width=8, depth=2, causal_epsilon=eps, causal_bins=bins).double()
    pts = problem.sample_interior(800, seed=0)
    r2 = torch.rand(800, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    loss = model._causal(r2, pts, problem)
    lo, hi = problem.bounds[model.coords.index("t")]
    t = (pts[:, model.coords.index("t")] - lo) / (hi - lo)
    slabs = [(t >= i / bins) & (t < (i + 1) / bins) if i < bins - 1 else t >= i / bins for i in range(bins)]
    means = [r2.detach()[m].mean().item() for m in slabs]
    weights = [math.exp(-eps * sum(means[:i])) for i in range(bins)]
    assert weights[0] == 1.0 and all(a > b for a, b in zip(weights, weights[1:]))
    assert loss.item() == pytest.approx(sum(w * m for w, m in zip(weights, means)) / bins, rel=1e-12)
    assert model._causal_min.item() == pytest.approx(weights[-1], rel=1e-12)
    (grad,) = torch.autograd.grad(loss, r2)
    for i, m in enumerate(slabs):  # d loss / d r2_k = w_i / (bins |slab i|): the weights are held
        assert torch.allclose(grad[m], torch.full_like(grad[m], weights[i] / (bins * int(m.sum()))), rtol=1e-12)
    model.causal_epsilon = 0.0  # no causality: plain mean of the slab means
    assert model._causal(r2, pts, problem).item() == pytest.approx(sum(means) / bins, rel=1e-12)


def test_rad_gathers_points_where_the_residual_is_large():
    problem = raissi()
    torch.manual_seed(0)
    model = PINN(problem, width=8, depth=2, n_interior=2000, adaptive="rad", resample_every=10,
                 rad_k=2.0, rad_c=0.0, rad_pool=20000).double()
    # a residual that lives only near x = 0 (where Burgers' shock forms)
    problem_residual = problem.residual
    problem.residual = lambda f, p, c: torch.exp(-((p[:, :1] / 0.05) ** 2)) + 0 * f["u"]
    try:
        points = model._rad(problem, seed=0, draw=1)
    finally:
        problem.residual = problem_residual
    near = (points[:, 0].abs() < 0.1).double().mean().item()
    assert near > 0.9  # against 0.05 for points spread evenly
    assert len(torch.unique(points, dim=0)) == 2000  # without replacement


def test_bad_options_are_refused_by_name():
    heat = Heat()
    with pytest.raises(ValueError, match=r"^model\.learn: Heat has no coefficient 'nu'"):
        PINN(heat, learn={"nu": 0.1}, n_observations=10)
    with pytest.raises(ValueError, match=r"^model\.learn: learning coefficients needs observations"):
        PINN(heat, learn={"kappa": 0.1})
    with pytest.raises(ValueError, match=r"^model\.learn_log: 'nu' is not among model\.learn \(kappa\)"):
        PINN(heat, learn={"kappa": 0.1}, learn_log=["nu"], n_observations=10)
    with pytest.raises(ValueError, match=r"^model\.learn_log: a coefficient learned in log space needs a positive"):
        PINN(heat, learn={"kappa": 0.0}, learn_log=["kappa"], n_observations=10)
    with pytest.raises(ValueError, match=r"^model\.adaptive: rad redraws"):
        PINN(heat, adaptive="rad")
    with pytest.raises(ValueError, match=r"^model\.derivatives: taylor needs a smooth activation"):
        PINN(heat, activation="relu", derivatives="taylor")


QUICK = ["experiment=pinn_burgers_quick", "trainer.callbacks.progress=null", "trainer.device=cpu"]


@pytest.mark.slow
def test_quick_burgers_preset_beats_the_classical_baseline_and_evaluates(sciml):
    """The quick preset (about a minute): far below the linear-heat prediction, then eval
    draws the error map, the residual and Raissi's slices, and solve ckpt= agrees with eval."""
    sciml("train", *QUICK, check=True, timeout=600)
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "burgers-pinn")
    metrics = json.loads((run / "metrics.json").read_text())
    baseline = raissi().baselines()["heat_equation_rel_l2"]
    assert metrics["val/rel_l2"] < 5e-3 < baseline / 10
    sciml("eval", f"run={run}", check=True)
    result = json.loads((run / "eval.json").read_text())
    assert result["metrics"]["rel_l2"] == pytest.approx(metrics["best/rel_l2"], rel=1e-9)
    for name in ("eval_best", "eval_best_residual", "eval_best_slices"):
        assert_figure(run / "plots" / f"{name}.png")
    sciml("solve", "problem=burgers", "problem.setup=raissi", f"ckpt={run}", "repeats=1", check=True)
    surrogate = json.loads(next((sciml.cwd / "outputs" / "solve").rglob("surrogate.json")).read_text())
    # the solver's grid is Raissi's grid: the same error as eval's
    assert surrogate["rel_l2_mean"] == pytest.approx(result["metrics"]["rel_l2"], rel=1e-3)


def test_tiny_burgers_run_learns_and_eval_reports_the_pinn_figures(sciml):
    args = [*TINY, "problem=burgers", "problem.setup=raissi", "model.hard_constraints=true",
            "model.derivatives=taylor", "optim.steps=150", "trainer.val_every=50", "trainer.dtype=float64"]
    sciml("train", *args, check=True)
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "burgers-pinn")
    metrics = json.loads((run / "metrics.json").read_text())
    # 150 Adam steps of a tiny net: not accurate yet, but better than the initial condition held
    assert metrics["val/rel_l2"] < raissi().baselines()["initial_condition_rel_l2"]
    sciml("eval", f"run={run}", check=True)
    for name in ("eval_best", "eval_best_residual", "eval_best_slices"):
        assert_figure(run / "plots" / f"{name}.png")


def test_inverse_heat_learns_the_diffusivity_and_logs_it(sciml):
    args = [*TINY, "model.learn={kappa:0.05}", "model.n_observations=500", "optim.steps=300",
            "optim.lr=5e-3", "trainer.val_every=100", "trainer.log_every=1", "trainer.dtype=float64"]
    sciml("train", *args, check=True)
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "heat-pinn")
    metrics = json.loads((run / "metrics.json").read_text())
    # from 50 % off to a few per cent in 300 Adam steps
    assert metrics["val/coef_rel_err/kappa"] < 0.05
    assert math.isclose(metrics["val/coef/kappa"], 0.1 * (1 + math.copysign(metrics["val/coef_rel_err/kappa"],
                                                                            metrics["val/coef/kappa"] - 0.1)))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    kappa = events.Scalars("coef/kappa")
    assert len(kappa) == 300 and kappa[0].value < 0.06 and abs(kappa[-1].value - metrics["val/coef/kappa"]) < 1e-3
    sciml("eval", f"run={run}", check=True)
    result = json.loads((run / "eval.json").read_text())
    assert result["metrics"]["coef_rel_err/kappa"] < 0.05


@pytest.mark.slow  # 30-55 s; the default suite is near its 15-minute budget
def test_compiled_objective_matches_the_eager_one():
    """``trainer.compile=true`` with Taylor derivatives compiles the whole objective (hard
    constraints included); the loss and its gradients stay those of the eager model."""
    problem = raissi()
    torch.manual_seed(3)
    eager = PINN(problem, width=8, depth=2, n_interior=64, derivatives="taylor", hard_constraints=True).double()
    compiled = PINN(problem, width=8, depth=2, n_interior=64, derivatives="taylor", hard_constraints=True).double()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile()
    for model in (eager, compiled):
        model.zero_grad()
        terms = model.loss(problem, model.batch(problem, 0, 0))
        terms["residual"].backward()
    torch.testing.assert_close(compiled.loss(problem, compiled.batch(problem, 0, 0))["residual"],
                               eager.loss(problem, eager.batch(problem, 0, 0))["residual"], rtol=1e-10, atol=0)
    for a, b in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)


def test_a_coefficient_learned_in_log_space_moves_by_relative_steps():
    heat = Heat().to("cpu", torch.float64)
    model = PINN(heat, width=8, depth=2, learn={"kappa": 0.05}, learn_log=["kappa"], n_observations=10).double()
    assert model.coefficients()["kappa"].item() == pytest.approx(0.05, rel=1e-6)  # built in float32
    assert model.learned["kappa"].item() == pytest.approx(math.log(0.05))
    # d kappa / d theta = kappa: the step is relative to the coefficient's size
    (grad,) = torch.autograd.grad(model.coefficients()["kappa"], [model.learned["kappa"]])
    assert grad.item() == pytest.approx(model.coefficients()["kappa"].item(), rel=1e-12)


@pytest.mark.parametrize("case", ["slit", "heat", "burgers_inverse"])
def test_the_residual_blocks_are_the_loss_terms_and_their_jacobian_gives_its_gradient(case):
    """``least_squares`` (what Levenberg-Marquardt steps on) restates ``loss``: per term the same
    sum of squares, and the weighted Jacobian's 2 J^T r is autograd's gradient of the weighted
    total, for the hard-constrained slit with its feature and the singular weight, soft initial
    and boundary terms, and observations with coefficients learned (one in log space)."""
    from sciml_cli.problems.poisson import Poisson
    from sciml_cli.training.optimizers import LevenbergMarquardt

    torch.manual_seed(0)
    if case == "slit":
        problem = Poisson(domain="slit").to("cpu", torch.float64)
        model = PINN(problem, width=8, depth=2, hard_constraints=True, domain_features=True, n_interior=64,
                     singular_power=3.0, loss_weights={"residual": 2.5})
    elif case == "heat":
        problem = Heat().to("cpu", torch.float64)
        model = PINN(problem, width=8, depth=2, derivatives="taylor", n_interior=64, n_initial=16, n_boundary=16,
                     loss_weights={"residual": 1.0, "initial": 3.0, "boundary": 0.5})
    else:
        problem = Burgers(setup="raissi").to("cpu", torch.float64)
        model = PINN(problem, width=8, depth=2, hard_constraints=True, n_interior=64, learn={"lambda1": 0.5, "lambda2": 0.01},
                     learn_log=["lambda2"], n_observations=32, loss_weights={"data": 100.0})
    model = model.double()
    batch = model.batch(problem, 0, 0)
    terms = model.loss(problem, batch)
    blocks = model.least_squares(problem, batch)
    params = tuple(p for p in model.parameters() if p.requires_grad)
    system = [(f, inputs, model.loss_weights.get(term, 1.0)) for term, f, inputs in blocks]
    parts = LevenbergMarquardt.residuals(system, tuple(p.detach() for p in params))
    sums: dict[str, float] = {}
    for (term, _, _), r in zip(blocks, parts):
        sums[term] = sums.get(term, 0.0) + r.square().sum().item()
    assert sums.keys() == terms.keys() and len(terms) == {"slit": 1, "heat": 3, "burgers_inverse": 2}[case]
    for term, value in terms.items():
        assert sums[term] == pytest.approx(value.item(), rel=1e-12)
    total = sum(model.loss_weights.get(k, 1.0) * v for k, v in terms.items())
    expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(total, params)])
    jac = LevenbergMarquardt.jacobian(system, tuple(p.detach() for p in params), chunk_size=16)
    r = torch.cat([p * w ** 0.5 for p, (_, _, w) in zip(parts, system)])
    assert torch.allclose(2 * jac.T @ r, expected, rtol=1e-9, atol=1e-12 * expected.abs().max())


def test_the_slit_feature_is_its_distance_and_needs_autograd():
    from sciml_cli.problems.poisson import Poisson

    slit = Poisson(domain="slit").to("cpu", torch.float64)
    points = torch.tensor([[0.5, -0.25], [-0.3, 0.4], [0.9, 0.01]], dtype=torch.float64)
    assert torch.allclose(slit.input_features(points)[:, 0], torch.tensor([0.25, 0.5, 0.01], dtype=torch.float64))
    assert Poisson(domain="lshape").feature_bounds == [] and slit.feature_bounds == [(0.0, math.sqrt(2.0))]
    model = PINN(slit, width=8, depth=2, hard_constraints=True, domain_features=True).double()
    assert model.net.hidden[0].in_features == 3
    with pytest.raises(ValueError, match=r"^model\.domain_features: the features' derivatives need derivatives=autograd"):
        PINN(slit, domain_features=True, derivatives="taylor")
    with pytest.raises(ValueError, match=r"^model\.domain_features: Heat offers no input features here"):
        PINN(Heat(), domain_features=True)
