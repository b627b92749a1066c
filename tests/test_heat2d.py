"""2D periodic heat equation: exact modes, the semigroup property, and an independent finite-difference check."""

from __future__ import annotations

import math

import pytest
import torch

from sciml_cli.problems.heat2d import Heat2D

F64 = {"dtype": torch.float64, "device": "cpu"}


def _grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(n, **F64) / n
    return torch.meshgrid(x, x, indexing="ij")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()


def _finite_difference(a: torch.Tensor, kappa: float, t_end: float, dt: float) -> torch.Tensor:
    """Five-point Laplacian and classical RK4: independent of the Fourier code under test."""
    n = a.shape[-1]

    def rhs(u: torch.Tensor) -> torch.Tensor:
        lap = sum(torch.roll(u, s, dims=d) for s in (1, -1) for d in (-2, -1)) - 4 * u
        return kappa * n**2 * lap

    u = a
    for _ in range(round(t_end / dt)):
        k1 = rhs(u)
        k2 = rhs(u + 0.5 * dt * k1)
        k3 = rhs(u + 0.5 * dt * k2)
        k4 = rhs(u + dt * k3)
        u = u + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return u


@pytest.mark.parametrize(("mx", "my"), [(1, 0), (2, -3), (5, 7), (0, 16)])
def test_single_fourier_mode_is_exact(mx, my):
    p = Heat2D(kappa=0.02, t_end=0.7).to("cpu", torch.float64)
    x, y = _grid(32)
    phase = 2 * math.pi * (mx * x + my * y)
    a = torch.stack([torch.cos(phase), torch.sin(phase) + 0.5 * torch.cos(phase)])
    decay = math.exp(-0.02 * 4 * math.pi**2 * (mx**2 + my**2) * 0.7)
    assert (p.propagate(a, 0.7) - decay * a).abs().max().item() < 1e-14


def test_semigroup_property():
    p = Heat2D().to("cpu", torch.float64)
    a = p.initial_condition(3, 48, torch.Generator().manual_seed(2))
    once = p.propagate(a, 0.8)
    twice = p.propagate(p.propagate(a, 0.3), 0.5)
    assert _rel(twice, once) < 1e-14
    assert _rel(p.propagate(a, 0.0), a) < 1e-15


def test_finite_difference_converges_to_it_at_second_order():
    # A smooth, not band-limited initial field: the Fourier solution is exact to rounding on
    # these grids, so the difference is the five-point stencil's O(h^2) error.
    kappa, t_end = 0.01, 0.5
    p = Heat2D(kappa=kappa, t_end=t_end).to("cpu", torch.float64)
    errors = []
    for n in (16, 32, 64):
        x, y = _grid(n)
        a = torch.exp(torch.sin(2 * math.pi * x) + 0.5 * torch.cos(2 * math.pi * (x + 2 * y)))[None]
        errors.append(_rel(_finite_difference(a, kappa, t_end, dt=1e-3), p.propagate(a, t_end)))
    slopes = [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]
    assert all(abs(s - 2) < 0.1 for s in slopes), (errors, slopes)
    assert errors[-1] < 1e-3  # 4e-4 at n = 64


def test_solve_gives_the_pairs_and_agrees_with_finite_differences():
    p = Heat2D().to("cpu", torch.float64)
    sol = p.solve(resolution=64, n_samples=4, seed=0)
    a, u = sol.fields["a"], sol.fields["u"]
    assert a.shape == u.shape == (4, 64, 64) and list(sol.grid) == ["x", "y"]
    assert torch.allclose(sol.grid["x"], torch.arange(64, **F64) / 64)
    # the reported ratio is the mean over samples of ||u|| / ||a||, and by Parseval each ratio is
    # that of the input's Fourier modes damped by exp(-kappa |k|^2 t_end): computed from a alone
    k = 2 * math.pi * torch.fft.fftfreq(64, d=1 / 64, **F64)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    power = torch.fft.fft2(a).abs() ** 2
    ratio = (
        (power * torch.exp(-2 * p.kappa * p.t_end * k2)).sum((-2, -1)) / power.sum((-2, -1))
    ).sqrt()
    norms = torch.linalg.vector_norm(u, dim=(-2, -1)) / torch.linalg.vector_norm(a, dim=(-2, -1))
    assert torch.allclose(norms, ratio, rtol=1e-12, atol=0)
    assert sol.attrs["mean_norm_ratio_u_over_a"] == pytest.approx(ratio.mean().item(), rel=1e-12)
    # the map smooths but does not erase, in every sample: a non-trivial operator to learn
    assert ((0.2 < ratio) & (ratio < 0.9)).all(), ratio
    # the five-point stencil at n = 64 agrees to its O(h^2) error, 9e-4 here
    assert _rel(_finite_difference(a, p.kappa, p.t_end, dt=2e-3), u) < 2e-3
    # the seed fixes the data
    assert torch.equal(p.solve(resolution=64, n_samples=4, seed=0).fields["a"], a)
    assert not torch.equal(p.solve(resolution=64, n_samples=4, seed=1).fields["a"], a)


def test_invalid_arguments_name_the_key():
    with pytest.raises(ValueError, match="^resolution:"):
        Heat2D(resolution=1)
    with pytest.raises(ValueError, match="^n_samples:"):
        Heat2D().solve(n_samples=0)
