"""Poisson's problem: exact solutions, domains and their sampling, distance functions, the energy
functional and the five-point reference solver's order of convergence."""

from __future__ import annotations

import math

import h5py
import pytest
import torch

from sciml_cli.numerics import geometry
from sciml_cli.problems.poisson import Poisson

CASES = [("square", 2, "sine"), ("square", 2, "steady_heat"), ("cube", 10, "pairs"), ("square", 3, "sine"),
         ("lshape", 2, "singular"), ("slit", 2, "singular")]


def poisson(domain="square", dim=2, solution=None, **kw) -> Poisson:
    return Poisson(domain=domain, dim=dim, solution=solution, **kw).to("cpu", torch.float64)


@pytest.mark.parametrize("domain, dim, solution", CASES)
def test_exact_solutions_solve_the_equation_and_meet_the_data(domain, dim, solution):
    p = poisson(domain, dim, solution)
    x = p.sample_interior(500, 0)
    assert p.contains(x).all()
    r = p.residual_of(p.exact_solution, x)
    assert r.abs().max() < 1e-9 * max(1.0, p.source(x).abs().max().item())
    xb = p.sample_boundary(500, 1)
    assert (p.boundary_residual(p.exact_solution(xb), xb)).abs().max() == 0
    assert p.exact_solution(x).abs().max() > 0.1  # non-trivial


def test_singular_solutions_vanish_on_the_inner_edges():
    for domain, edges in (("lshape", [((0, 0), (1, 0)), ((0, 0), (0, -1))]), ("slit", [((0, 0), (1, 0))])):
        p = poisson(domain)
        s = torch.linspace(0, 1, 101, dtype=torch.float64)[:, None]
        for a, b in edges:
            pts = torch.tensor(a, dtype=torch.float64) + s * (torch.tensor(b, dtype=torch.float64) - torch.tensor(a, dtype=torch.float64))
            assert p.exact_solution(pts).abs().max() < 1e-12


@pytest.mark.parametrize("domain, dim", [("square", 2), ("cube", 10), ("lshape", 2), ("slit", 2)])
def test_boundary_samples_are_uniform_by_arc_length_and_lie_on_the_boundary(domain, dim):
    p = poisson(domain, dim)
    xb = p.sample_boundary(4000, 3)
    assert p.contains(xb).all()
    assert p.geometry.distance(xb).max() < 1e-20
    if isinstance(p.geometry, geometry.Polygon):
        # the share of points on each segment is its share of the length
        pieces = torch.stack(p.geometry.segment_distances(xb), dim=1).argmin(dim=1)
        share = torch.bincount(pieces, minlength=len(p.geometry.segments)).double() / len(xb)
        lengths = torch.tensor(p.geometry.lengths, dtype=torch.float64)
        torch.testing.assert_close(share, lengths / lengths.sum(), atol=2e-3, rtol=0)
    else:
        on_face = torch.stack([d.abs() < 1e-12 for d in p.geometry.face_distances(xb)], dim=1).double().mean(0)
        torch.testing.assert_close(on_face, torch.full_like(on_face, 1 / (2 * dim)), atol=2e-3, rtol=0)


@pytest.mark.parametrize("domain", ["lshape", "slit"])
def test_interior_samples_fill_the_domain_by_area(domain):
    p = poisson(domain)
    x = p.sample_interior(8000, 4)
    assert p.contains(x).all() and len(x) == 8000
    quadrants = ((x[:, 0] > 0).long() * 2 + (x[:, 1] > 0).long())
    share = torch.bincount(quadrants, minlength=4).double() / len(x)
    expected = torch.tensor([1, 1, 0, 1] if domain == "lshape" else [1, 1, 1, 1], dtype=torch.float64)
    torch.testing.assert_close(share, expected / expected.sum(), atol=3e-3, rtol=0)


@pytest.mark.parametrize("domain, dtype, n, seed", [
    ("lshape", torch.float64, 4000, 1939), ("slit", torch.float64, 4000, 1939), ("square", torch.float64, 4000, 1939),
    ("lshape", torch.float32, 2000, 2613), ("square", torch.float32, 2000, 3 * 871)])
def test_interior_samples_never_lie_on_the_boundary(domain, dtype, n, seed):
    """Seed 1939 draws a Sobol coordinate of exactly 0, a point on the bounding box's edge; the
    float32 cases draw a point within 3e-8 of an edge, which the cast rounds onto it. The distance
    function's derivatives are nan or meaningless there, which turned a resampled PINN's loss nan."""
    p = Poisson(domain=domain).to("cpu", dtype)
    x = p.sample_interior(n, seed)
    assert x.dtype == dtype and len(x) == n
    x64 = x.double()
    if domain == "square":
        assert (x64.abs() < 1).all()
    else:
        assert torch.stack(p.geometry.segment_distances(x64)).amin() > 0
    x = x.requires_grad_(True)
    g, phi = p.constraint(x)
    first = torch.autograd.grad((g + phi).sum(), x, create_graph=True)[0]
    second = torch.autograd.grad(first.sum(), x)[0]
    assert torch.isfinite(first).all() and torch.isfinite(second).all()


@pytest.mark.parametrize("domain, dim", [("square", 2), ("cube", 10), ("lshape", 2), ("slit", 2)])
def test_distance_function_vanishes_on_the_boundary_and_is_positive_inside(domain, dim):
    p = poisson(domain, dim)
    inside = p.geometry.distance(p.sample_interior(2000, 5))
    assert inside.min() > 0
    assert p.geometry.distance(p.sample_boundary(2000, 6)).max() < 1e-20
    # like a distance near the boundary: about the true distance at a small step inwards
    if domain == "square":
        x = torch.tensor([[0.3, 1 - 1e-4]], dtype=torch.float64)
        assert p.geometry.distance(x).item() == pytest.approx(1e-4, rel=1e-2)


@pytest.mark.parametrize("domain, dim, solution", CASES)
def test_constraint_transform_meets_the_data_for_any_network(domain, dim, solution):
    p = poisson(domain, dim, solution)
    xb = p.sample_boundary(2000, 7)
    g, phi = p.constraint(xb)
    torch.testing.assert_close(g, p.boundary_value(xb), atol=1e-10, rtol=0)
    assert phi.abs().max() < 1e-20
    # inside: finite, and not the solution itself (built from the boundary data alone)
    x = p.sample_interior(2000, 8)
    g, phi = p.constraint(x)
    assert torch.isfinite(g).all() and (phi > 0).all()
    if solution == "pairs":  # multilinear: the lift reproduces it, so it is not offered
        assert (g - p.exact_solution(x)).abs().max() < 1e-12 and not p.offers_constraint
    elif solution != "sine":
        assert (g - p.exact_solution(x)).abs().max() > 1e-3 and p.offers_constraint


@pytest.mark.parametrize("domain", ["lshape", "slit"])
def test_the_singular_distance_lets_a_bounded_network_output_reach_the_corner(domain):
    """``u = g + phi N``: near the singular point the exact solution's ``N = (u - g) / phi``
    grows like ``r^(alpha - 1)`` with the plain distance function and stays bounded with
    ``singular_distance`` (which still vanishes on the whole boundary and nowhere inside)."""
    plain, scaled = poisson(domain), poisson(domain, singular_distance=True)
    theta = torch.tensor([0.3, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)  # inside both domains
    ratios = {}
    for name, p in (("plain", plain), ("scaled", scaled)):
        outputs = []
        for r in (1e-2, 1e-6):
            x = r * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
            assert p.contains(x).all()
            g, phi = p.constraint(x)
            outputs.append(((p.exact_solution(x) - g) / phi).abs().max())
        ratios[name] = (outputs[1] / outputs[0]).item()
    grow = 1e4 ** (1 - plain.alpha)  # r from 1e-2 to 1e-6
    assert 0.8 * grow < ratios["plain"] < 1.5 * grow, ratios
    assert ratios["scaled"] < 1.5, ratios  # the approximate distance is not exactly r there
    assert scaled.constraint(scaled.sample_boundary(2000, 6))[1].abs().max() < 1e-15
    assert (scaled.constraint(scaled.sample_interior(2000, 5))[1] > 0).all()
    with pytest.raises(ValueError, match="singular_distance: domain=square has no singular point"):
        poisson("square", singular_distance=True)

@pytest.mark.parametrize("domain", ["lshape", "slit"])
def test_lift_of_the_data_is_smooth_inside(domain):
    """Twice differentiable across the lines where the projection passes a segment's end: the
    second derivatives along a line through the domain have no jumps (finite differences of
    the autograd Hessian stay small against its size)."""
    p = poisson(domain)
    t = torch.linspace(-0.95, 0.95, 2001, dtype=torch.float64)
    line = torch.stack([t, torch.full_like(t, 0.37)], dim=1).requires_grad_(True)  # crosses x = 0 above the corner
    g = p.constraint(line)[0]
    (d1,) = torch.autograd.grad(g.sum(), line, create_graph=True)
    (d2,) = torch.autograd.grad(d1[:, 0].sum(), line)
    jumps = (d2[1:, 0] - d2[:-1, 0]).abs().max()
    assert torch.isfinite(d2).all() and jumps < 0.05 * d2[:, 0].abs().max() + 1e-6, jumps


@pytest.mark.parametrize("domain, dim", [("square", 2), ("square", 3), ("cube", 10)])
def test_energy_quadrature_converges_to_the_exact_energy(domain, dim):
    p = poisson(domain, dim)
    errors = []
    for n in (2**10, 2**16):
        x = p.sample_interior(n, 0).requires_grad_(True)
        u = p.exact_solution(x)
        (grad,) = torch.autograd.grad(u.sum(), x)
        errors.append(abs(p.measure * p.energy_density(u, grad, x).mean().item() - p.energy()) / abs(p.energy()))
    # scrambled Sobol: better than Monte Carlo's n^(-1/2), i.e. a factor > 8 over 64 x the points
    assert errors[1] < 1e-3 and errors[1] < errors[0] / 8, errors


def test_the_exact_solution_minimises_the_energy():
    """Dirichlet's principle on the L-shape: any perturbation vanishing on the boundary raises E."""
    p = poisson("lshape")
    x = p.sample_interior(2**16, 1).requires_grad_(True)

    def energy(eps: float) -> float:
        bump = p.geometry.distance(x).unsqueeze(1) * torch.cos(2 * x[:, :1] + x[:, 1:])
        u = p.exact_solution(x) + eps * bump
        (grad,) = torch.autograd.grad(u.sum(), x)
        return p.measure * p.energy_density(u, grad, x).mean().item()

    e0 = energy(0.0)
    assert energy(0.05) > e0 and energy(-0.05) > e0


def test_five_point_solver_is_second_order_on_the_smooth_solution():
    p = poisson("square")
    errors = [p.solve(n).attrs["max_abs_vs_exact"] for n in (17, 33, 65)]
    rates = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(1.95 < r < 2.05 for r in rates), rates


def test_five_point_solver_converges_at_the_rates_the_corner_allows():
    """u ~ r^(2/3) at the re-entrant corner: h^(4/3) in the L2 norm, h^(2/3) in the max norm
    (the error is largest next to the corner)."""
    p = poisson("lshape")
    runs = [p.solve(n).attrs for n in (33, 65, 129)]
    l2 = [math.log2(a["rel_l2_vs_exact"] / b["rel_l2_vs_exact"]) for a, b in zip(runs, runs[1:])]
    mx = [math.log2(a["max_abs_vs_exact"] / b["max_abs_vs_exact"]) for a, b in zip(runs, runs[1:])]
    assert all(1.15 < r < 1.45 for r in l2), l2
    assert all(0.6 < r < 0.72 for r in mx), mx


def test_five_point_solver_converges_at_the_rates_the_slit_allows():
    """u ~ r^(1/2) at the crack tip, the slit's nodes Dirichlet nodes: h^1 in the L2 norm,
    h^(1/2) in the max norm (Grisvard's alpha = 1/2, as the L-shape's 2/3 above)."""
    p = poisson("slit")
    runs = [p.solve(n).attrs for n in (33, 65, 129)]
    l2 = [math.log2(a["rel_l2_vs_exact"] / b["rel_l2_vs_exact"]) for a, b in zip(runs, runs[1:])]
    mx = [math.log2(a["max_abs_vs_exact"] / b["max_abs_vs_exact"]) for a, b in zip(runs, runs[1:])]
    assert all(0.9 < r < 1.1 for r in l2), l2  # measured 0.94, 0.97 (0.98 to 257)
    assert all(0.44 < r < 0.55 for r in mx), mx  # measured 0.47, 0.48 (0.49)


@pytest.mark.parametrize("domain", ["square", "cube"])
def test_five_point_solver_is_exact_on_the_quadratic_solution(domain):
    """u = x y is a quadratic: the five-point stencil has no truncation error on it."""
    assert poisson(domain, 2, "pairs").solve(17).attrs["max_abs_vs_exact"] < 1e-12


def test_five_point_solver_is_second_order_on_the_steady_heat_plate():
    p = poisson("square", 2, "steady_heat")
    errors = [p.solve(n).attrs["max_abs_vs_exact"] for n in (17, 33, 65)]
    rates = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(1.95 < r < 2.05 for r in rates), rates


def test_solver_fails_cleanly_where_it_cannot_run():
    with pytest.raises(ValueError, match="^problem.dim: "):
        poisson("cube", 10).solve()
    with pytest.raises(ValueError, match="^resolution: "):
        poisson("lshape").solve(64)


@pytest.mark.parametrize("kwargs, key", [({"domain": "lshape", "dim": 3}, "dim"), ({"domain": "slit", "solution": "sine"}, "solution"),
                                         ({"solution": "steady_heat", "dim": 3}, "solution")])
def test_unsupported_combinations_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=f"^{key}: "):
        Poisson(**kwargs)


def test_reference_marks_points_outside_the_domain():
    grid, u = poisson("lshape").reference(33)
    assert torch.isnan(u[17:, :16]).all() and not torch.isnan(u[:17]).any()
    grid, u = poisson("cube", 10).reference(17)
    assert u.shape == (17, 17) + (1,) * 8  # the central slice


def test_solve_command_writes_the_finite_difference_solution(sciml):
    sciml("solve", "problem=poisson", "problem.domain=lshape", "resolution=65", check=True)
    (path,) = (sciml.cwd / "outputs").rglob("*.h5")
    with h5py.File(path) as f:
        u = f["fields/u"][()]
        rel_l2 = f.attrs["rel_l2_vs_exact"]
        x = f["grid/x"][()]
    assert u.shape == (1, 65, 65) and len(x) == 65
    expected = poisson("lshape").solve(65)
    torch.testing.assert_close(torch.as_tensor(u), expected.fields["u"].double(), equal_nan=True)
    assert rel_l2 == pytest.approx(expected.attrs["rel_l2_vs_exact"], rel=1e-12) and 1e-4 < rel_l2 < 3e-3


@pytest.mark.parametrize("seed", [-1, -3, -5])
def test_the_scoring_quadrature_integrates_the_crack_tip_h1_norm(monkeypatch, seed):
    """|grad u|^2 = 1 / (4 r) for u = r^(1/2) sin(theta / 2): on the slit square the H1 norm
    squared is 2 ln(1 + sqrt 2) + (2 / 3)(sqrt 2 + ln(1 + sqrt 2)) in closed form. Uniform points
    estimate it with infinite variance (an H1 error moved by half with their seed); the
    quadrature adds points in polar coordinates around the tip and weights both sets."""
    from sciml_cli.numerics import sampling

    monkeypatch.setattr(sampling, "SCORING_SEED", seed)
    p = Poisson(domain="slit").to("cpu", torch.float64)
    points, weights = p.scoring_quadrature(16384)
    assert len(points) > 16384 and p.contains(points).all() and (weights > 0).all()
    x = points.clone().requires_grad_(True)
    u = p.exact_solution(x)
    (du,) = torch.autograd.grad(u.sum(), x)
    norm = (weights * (u.pow(2).sum(1) + du.pow(2).sum(1))).sum().item()
    root2 = math.sqrt(2.0)
    exact = 2 * math.log(1 + root2) + 2 / 3 * (root2 + math.log(1 + root2))
    assert norm == pytest.approx(exact, rel=1e-3)
    assert weights.sum().item() == pytest.approx(p.measure, rel=1e-3)
    smooth = Poisson(domain="square").to("cpu", torch.float64)
    points, weights = smooth.scoring_quadrature(64)  # no singular point: the plain points, equal weights
    assert len(points) == 64 and torch.allclose(weights, torch.full((64,), 4.0 / 64, dtype=torch.float64))
