"""The heat problem: exact solution, residual, and Crank–Nicolson's second-order convergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sciml_cli.numerics.finite_difference import laplacian_dirichlet_1d
from sciml_cli.numerics.timestepping import crank_nicolson
from sciml_cli.problems.heat import Heat


@pytest.fixture
def heat():
    return Heat(kappa=0.1, t_end=1.0, amplitudes=[1.0, 0.0, 0.5]).to("cpu", torch.float64)


def test_exact_solution_satisfies_the_pde_and_conditions(heat):
    pts = heat.sample_interior(512, seed=0)
    exact = lambda p: heat.exact(p[:, :1], p[:, 1:])  # noqa: E731
    assert heat.residual_of(exact, pts).abs().max() < 1e-10
    # a wrong diffusivity leaves a residual: the check can fail
    assert heat.residual_of(exact, pts, {"kappa": 0.11}).abs().max() > 1e-2
    ic = heat.sample_initial(64, seed=1)
    bc = heat.sample_boundary(64, seed=2)
    assert heat.initial_residual(exact(ic), ic).abs().max() < 1e-14
    assert heat.boundary_residual(exact(bc), bc).abs().max() < 1e-14
    assert set(bc[:, 0].tolist()) == {0.0, 1.0}


def test_constraint_transform_meets_the_conditions_for_any_network(heat):
    ic, bc = heat.sample_initial(64, seed=1), heat.sample_boundary(64, seed=2)
    net = lambda p: torch.sin(3 * p[:, :1] + 2 * p[:, 1:]) + 5  # noqa: E731  (arbitrary, non-zero)
    for pts, check in ((ic, heat.initial_residual), (bc, heat.boundary_residual)):
        g, phi = heat.constraint(pts)
        assert check(g + phi * net(pts), pts).abs().max() < 1e-14
    g, phi = heat.constraint(heat.sample_interior(64, seed=3))
    assert phi.abs().min() > 0  # free in the interior


def test_sampling_is_seeded_and_inside_the_domain(heat):
    a, b = heat.sample_interior(100, seed=3), heat.sample_interior(100, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, heat.sample_interior(100, seed=4))
    assert (a[:, 0] >= 0).all() and (a[:, 0] <= 1).all() and (a[:, 1] >= 0).all() and (a[:, 1] <= 1).all()


def _cn_error(n: int, kappa: float = 0.1, t_end: float = 0.5) -> float:
    """Max error at t_end with dt = dx, against the exact series."""
    heat = Heat(kappa=kappa, t_end=t_end, amplitudes=[1.0, 0.3, 0.5]).to("cpu", torch.float64)
    dx = 1.0 / n
    x = torch.linspace(0, 1, n + 1, dtype=torch.float64)[1:-1]
    steps = round(t_end / dx)
    u = crank_nicolson(kappa * laplacian_dirichlet_1d(n - 1, dx, dtype=torch.float64),
                       heat.initial_condition(x)[None], t_end / steps, steps, save_every=steps)
    return (u[0, -1] - heat.exact(x, torch.tensor(t_end))).abs().max().item()


def test_crank_nicolson_converges_at_second_order():
    ns = [16, 32, 64, 128, 256]
    errors = [_cn_error(n) for n in ns]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(orders > 1.95) and np.all(orders < 2.05), (errors, orders)
    assert errors[-1] < 1e-5


def test_crank_nicolson_is_exact_for_the_discrete_eigenmode():
    # sin(k pi x) is an eigenvector of the discrete Laplacian with eigenvalue
    # -4/dx^2 sin^2(k pi dx / 2); CN multiplies it by (1 + dt lam/2)/(1 - dt lam/2) per step.
    n, k, dt, steps = 50, 3, 0.01, 20
    dx = 1.0 / n
    x = torch.linspace(0, 1, n + 1, dtype=torch.float64)[1:-1]
    lam = -4 / dx**2 * math.sin(k * math.pi * dx / 2) ** 2
    u = crank_nicolson(laplacian_dirichlet_1d(n - 1, dx, dtype=torch.float64),
                       torch.sin(k * math.pi * x)[None], dt, steps)
    factor = ((1 + dt * lam / 2) / (1 - dt * lam / 2)) ** steps
    torch.testing.assert_close(u[0, -1], factor * torch.sin(k * math.pi * x), rtol=0, atol=1e-13)


def test_solve_returns_the_reference_with_its_error(heat):
    sol = heat.solve(resolution=129)
    assert tuple(sol.fields["u"].shape) == (1, 101, 129)
    assert sol.fields["u"][0, :, 0].abs().max() == 0 and sol.fields["u"][0, :, -1].abs().max() == 0
    assert sol.attrs["rel_l2_vs_exact"] < 2e-4
    finer = heat.solve(resolution=257)
    assert finer.attrs["rel_l2_vs_exact"] < sol.attrs["rel_l2_vs_exact"] / 3.5


def test_the_baseline_is_crank_nicolson_on_nine_points_scored_at_its_nodes(heat):
    sol = heat.solve(resolution=9)
    x, t = sol.grid["x"], sol.grid["t"]
    exact = heat.exact(x[None, :], t[:, None])
    own = (torch.linalg.vector_norm(sol.fields["u"][0] - exact) / torch.linalg.vector_norm(exact)).item()
    assert heat.baselines() == {"crank_nicolson_9_rel_l2": pytest.approx(own, rel=1e-12)}
    assert 1e-2 < own < 2e-2  # 1.6e-2: what a learned model on this problem must beat


def test_solve_refuses_several_samples(heat):
    with pytest.raises(ValueError, match="n_samples"):
        heat.solve(n_samples=2)
