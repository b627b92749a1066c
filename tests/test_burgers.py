"""Burgers: the Cole–Hopf reference (raissi) and the pseudo-spectral ETDRK4 solver (fno)."""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor

from sciml_cli import config
from sciml_cli.numerics.spectral import grf_1d
from sciml_cli.problems.burgers import GRF_PARAMS, Burgers, etdrk4_coefficients

F64 = {"dtype": torch.float64}


@pytest.fixture(scope="module")
def raissi() -> Burgers:
    return Burgers(setup="raissi").to("cpu", torch.float64)


@pytest.fixture(scope="module")
def fno() -> Burgers:
    return Burgers(setup="fno").to("cpu", torch.float64)


# -- raissi: exact solution ---------------------------------------------------------------------


def _cole_hopf_quad(x: float, t: float, nu: float) -> float:
    """The Cole–Hopf integrals over eta by adaptive quadrature (scipy), independent of the
    Gauss–Hermite nodes. The exponent is shifted by its maximum on a fine grid so neither
    integral overflows; the integrand is negligible beyond |eta| = 12 sqrt(4 nu t)."""
    from scipy.integrate import quad

    c, width = 1.0 / (2.0 * math.pi * nu), math.sqrt(4.0 * nu * t)

    def log_g(eta):
        return -c * np.cos(np.pi * (x - eta)) - eta**2 / width**2

    lo, hi = -12 * width, 12 * width
    grid = np.linspace(lo, hi, 20001)
    shift = log_g(grid).max()
    peak = float(grid[np.argmax(log_g(grid))])
    opts = {"limit": 400, "epsabs": 0.0, "epsrel": 1e-13, "points": [peak, -peak, 0.0]}
    num = quad(lambda e: math.sin(math.pi * (x - e)) * math.exp(log_g(e) - shift), lo, hi,
               **opts)[0]
    den = quad(lambda e: math.exp(log_g(e) - shift), lo, hi, **opts)[0]
    return -num / den


@pytest.mark.parametrize(
    ("x", "t"),
    [(0.001, 1.0), (-0.004, 1.0), (0.01, 1.0), (0.005, 0.5), (0.002, 0.35), (0.03, 0.4),
     (0.2, 0.7), (-0.5, 0.9), (0.8, 0.05), (0.01, 0.2)],
)
def test_exact_matches_adaptive_quadrature(raissi, x, t):
    """Gauss–Hermite against scipy.integrate.quad, including points inside the shock layer
    (width ~ nu = 0.003 at x = 0 for t >~ 0.4, where |u_x| reaches ~ 150)."""
    ref = _cole_hopf_quad(x, t, raissi.nu)
    got = raissi.exact(torch.tensor(x, **F64), torch.tensor(t, **F64)).item()
    assert abs(got - ref) < 1e-12


def test_exact_initial_and_boundary_conditions(raissi):
    x = torch.linspace(-1, 1, 257, **F64)
    u0 = raissi.exact(x, torch.zeros((), **F64))
    assert torch.allclose(u0, -torch.sin(math.pi * x), rtol=0, atol=1e-14)
    t = torch.linspace(0, 1, 101, **F64)
    ends = raissi.exact(torch.tensor([[-1.0], [1.0]], **F64), t[None, :])
    assert ends.abs().max() < 1e-12
    # odd in x for every t (the initial condition is)
    xs = torch.linspace(0, 1, 65, **F64)[:, None]
    u_pos, u_neg = raissi.exact(xs, t[None, :]), raissi.exact(-xs, t[None, :])
    assert torch.allclose(u_pos, -u_neg, rtol=0, atol=1e-13)


def _residual_fd(p: Burgers, x: Tensor, t: Tensor, h: float) -> tuple[Tensor, Tensor]:
    """u_t + u u_x - nu u_xx by fourth-order central differences with step h; also the size of
    the largest term, to scale by."""
    def u(dx, dt):
        return p.exact(x + dx, t + dt)

    d1 = lambda f: (f(-2) - 8 * f(-1) + 8 * f(1) - f(2)) / (12 * h)
    u_x = d1(lambda s: u(s * h, 0.0))
    u_t = d1(lambda s: u(0.0, s * h))
    u_xx = (-u(2 * h, 0.0) + 16 * u(h, 0.0) - 30 * u(0.0, 0.0) + 16 * u(-h, 0.0)
            - u(-2 * h, 0.0)) / (12 * h**2)
    u0 = u(0.0, 0.0)
    res = u_t + u0 * u_x - p.nu * u_xx
    scale = torch.stack([u_t.abs(), (u0 * u_x).abs(), (p.nu * u_xx).abs()]).amax(0)
    return res, scale


def test_exact_satisfies_pde_away_from_shock(raissi):
    g = torch.Generator().manual_seed(0)
    side = torch.randint(0, 2, (200,), generator=g) * 2 - 1
    x = side * (0.15 + 0.8 * torch.rand(200, generator=g, **F64))
    t = 0.05 + 0.9 * torch.rand(200, generator=g, **F64)
    res, scale = _residual_fd(raissi, x, t, h=1e-3)
    assert (res.abs() / scale.clamp_min(1.0)).max() < 1e-8


def test_exact_satisfies_pde_in_shock_layer(raissi):
    """Inside the layer |u_x| ~ 1/nu, so a small step; the residual is relative to u u_x."""
    x = torch.tensor([-0.006, -0.002, 0.0005, 0.003, 0.008], **F64)
    t = torch.tensor([0.5, 0.7, 0.9, 0.6, 0.95], **F64)
    res, scale = _residual_fd(raissi, x, t, h=2e-5)
    assert (scale > 4).all()  # inside the layer: terms far larger than O(1)
    assert (res.abs() / scale).max() < 1e-6


def test_raissi_solve_grid(raissi):
    sol = raissi.solve()
    assert sol.fields["u"].shape == (1, 100, 256)
    assert list(sol.grid) == ["t", "x"]
    assert torch.allclose(sol.grid["t"], torch.arange(100, **F64) / 100)
    assert torch.allclose(sol.grid["x"], torch.linspace(-1, 1, 256, **F64))
    assert torch.allclose(sol.fields["u"][0, 0], -torch.sin(math.pi * sol.grid["x"]), atol=1e-14)
    assert raissi.solve(resolution=512).fields["u"].shape == (1, 100, 512)
    with pytest.raises(ValueError, match=r"^n_samples: the raissi setup has one initial condition"):
        raissi.solve(n_samples=2)


# -- fno: pseudo-spectral ETDRK4 ------------------------------------------------------------------


def _periodic_cole_hopf(x: Tensor, t: float, nu: float) -> Tensor:
    """An exact periodic solution: u = -2 nu phi_x / phi with phi a positive solution of the heat
    equation, phi = 1 + 0.5 e^{-nu k1^2 t} cos(k1 x) + 0.3 e^{-nu k2^2 t} sin(k2 x)."""
    k1, k2 = 2 * math.pi, 4 * math.pi
    e1, e2 = 0.5 * math.exp(-nu * k1**2 * t), 0.3 * math.exp(-nu * k2**2 * t)
    phi = 1 + e1 * torch.cos(k1 * x) + e2 * torch.sin(k2 * x)
    phi_x = -e1 * k1 * torch.sin(k1 * x) + e2 * k2 * torch.cos(k2 * x)
    return -2 * nu * phi_x / phi


def test_etdrk4_coefficients_match_closed_forms():
    z = torch.tensor([-30.0, -5.0, -1.5], **F64)
    c = etdrk4_coefficients(z, 1.0)
    e = torch.exp(z)
    assert torch.allclose(c["Q"], (torch.exp(z / 2) - 1) / z, rtol=1e-13)
    assert torch.allclose(c["f1"], (-4 - z + e * (4 - 3 * z + z**2)) / z**3, rtol=1e-12)
    assert torch.allclose(c["f2"], (2 + z + e * (z - 2)) / z**3, rtol=1e-12)
    assert torch.allclose(c["f3"], (-4 - 3 * z - z**2 + e * (4 - z)) / z**3, rtol=1e-12)
    # a complex linear part (dispersion, an advection's i k) is integrated on the whole circle
    zc = torch.tensor([-1.5 + 2j, -0.01 + 30j, 0.3 - 0.2j], dtype=torch.complex128)
    cc, ec = etdrk4_coefficients(zc, 1.0), torch.exp(zc)
    assert torch.allclose(cc["E"], ec, rtol=1e-14)
    assert torch.allclose(cc["Q"], (torch.exp(zc / 2) - 1) / zc, rtol=1e-12)
    assert torch.allclose(cc["f1"], (-4 - zc + ec * (4 - 3 * zc + zc**2)) / zc**3, rtol=1e-11)
    assert torch.allclose(cc["f2"], (2 + zc + ec * (zc - 2)) / zc**3, rtol=1e-11)
    assert torch.allclose(cc["f3"], (-4 - 3 * zc - zc**2 + ec * (4 - zc)) / zc**3, rtol=1e-11)
    # at L = 0 ETDRK4 is classical RK4: weights 1/6, 2/6, 1/6 (2 f2 covers two stages)
    c0 = etdrk4_coefficients(torch.zeros(1, **F64), 0.1)
    for key, value in (("Q", 0.05), ("f1", 0.1 / 6), ("f2", 0.1 / 6), ("f3", 0.1 / 6)):
        assert abs(c0[key].item() - value) < 1e-15


def test_etdrk4_fourth_order_against_exact_solution(fno):
    """Halving dt divides the error by ~16 (Cox & Matthews 2002), against an exact solution."""
    n, t = 64, 1.0
    x = torch.arange(n, **F64) / n
    u0 = _periodic_cole_hopf(x, 0.0, fno.nu)[None]
    exact = _periodic_cole_hopf(x, t, fno.nu)
    dts = [0.04, 0.02, 0.01, 0.005]
    errors = [(fno.evolve(u0, t, dt=dt)[0] - exact).abs().max().item() for dt in dts]
    orders = [math.log2(a / b) for a, b in itertools.pairwise(errors)]
    assert all(3.6 < p < 4.4 for p in orders), orders
    assert errors[-1] < 1e-9 * u0.abs().max().item()


def test_spatial_convergence_is_spectral(fno):
    """A GRF initial condition with 16 modes, the same function on every grid: the error at
    x = j/16 against a 1024-point run decays exponentially and reaches rounding by 96 points."""
    alpha, tau, sigma = GRF_PARAMS["paper"]  # the rougher, larger field
    a32 = grf_1d(4, 32, alpha, tau, sigma, torch.Generator().manual_seed(3), **F64)

    def on_grid(n):
        c = torch.zeros(4, n // 2 + 1, dtype=torch.complex128)
        c[:, :17] = torch.fft.rfft(a32) * (n / 32)
        return torch.fft.irfft(c, n=n)

    ref = fno.evolve(on_grid(1024), 1.0, dt=0.01)[:, ::64]
    scale = ref.abs().max().item()
    err = {n: (fno.evolve(on_grid(n), 1.0, dt=0.01)[:, :: n // 16] - ref).abs().max().item() / scale
           for n in (32, 48, 64, 96)}
    assert err[32] > 1e-9  # the coarse grid is not already exact: the decay below is real
    assert err[48] < err[32] / 10 and err[64] < err[48] / 100
    assert err[96] < 1e-13


def test_energy_decays_at_the_viscous_rate(fno):
    """d/dt int u^2/2 = -nu int u_x^2 for periodic Burgers: the energy never increases, and its
    drop over each interval matches the dissipation integral (Simpson in time)."""
    n, m = 256, 200
    u = fno.random_initial_conditions(4, seed=1, n=n)
    k = torch.fft.rfftfreq(n, 1.0 / n, **F64) * 2 * math.pi
    w = torch.ones(n // 2 + 1, **F64) * 2
    w[0] = 1
    w[-1] = 1

    def energy_and_dissipation(v):
        c = torch.fft.rfft(v) / n  # Parseval with the rfft's half spectrum
        return 0.5 * (w * c.abs() ** 2).sum(-1), fno.nu * (w * (k * c.abs()) ** 2).sum(-1)

    # the rough initial data lose their high modes fast: the time samples must be fine early on
    h = 1.0 / (2 * m)
    states = [u]
    for _ in range(2 * m):
        states.append(fno.evolve(states[-1], h, dt=h))
    e, d = zip(*(energy_and_dissipation(v) for v in states))
    e, d = torch.stack(e), torch.stack(d)  # [2m + 1, N]
    assert (e[1:] <= e[:-1]).all()
    drop = e[0:-2:2] - e[2::2]
    simpson = h / 3 * (d[0:-2:2] + 4 * d[1:-1:2] + d[2::2])
    # the first intervals are left out: there modes up to k ~ 800 decay on time scales
    # 1 / (nu k^2) ~ 1e-5, far below h, and Simpson's rule does not resolve the dissipation
    skip = m // 20  # t < 0.05
    assert torch.allclose(drop[skip:], simpson[skip:], rtol=1e-5)
    assert e[-1].max() < 0.01 * e[0].min()  # decays to a few percent in amplitude by t = 1
    mean = torch.stack([v.mean(-1) for v in states])
    assert mean.abs().max() < 1e-14  # int u dx is conserved (zero here)


def test_heat_baseline_is_exact_in_the_linear_limit(fno):
    u0 = 1e-6 * fno.random_initial_conditions(3, seed=2, n=128)
    heat = fno.heat_prediction(u0, 1.0)
    true = fno.evolve(u0, 1.0)
    rel = (torch.linalg.vector_norm(heat - true, dim=-1) / torch.linalg.vector_norm(true, dim=-1))
    assert rel.max() < 1e-5  # the nonlinear term is O(amplitude) relative to the linear one


def test_fno_solve_fields_and_attrs():
    p = Burgers(fine_resolution=256, dt=0.01).to("cpu", torch.float64)
    sol = p.solve(resolution=64, n_samples=5, seed=7)
    assert sol.fields["a"].shape == sol.fields["u"].shape == (5, 64)
    assert torch.allclose(sol.grid["x"], torch.arange(64, **F64) / 64)
    u0 = p.random_initial_conditions(5, seed=7)
    assert torch.equal(sol.fields["a"], u0[:, ::4])  # subsampled from the fine grid
    u1 = p.evolve(u0, 1.0)
    assert torch.allclose(sol.fields["u"], u1[:, ::4], rtol=0, atol=1e-15)
    # the stored baseline: the linear heat equation's relative L2 error on the solver grid, and
    # the mean amplitude ratio |u(1)| / |u(0)|
    norm = functools.partial(torch.linalg.vector_norm, dim=-1)
    heat_error = (norm(p.heat_prediction(u0, 1.0) - u1) / norm(u1)).mean().item()
    assert sol.attrs["baseline_heat_rel_l2"] == pytest.approx(heat_error, rel=1e-12)
    assert heat_error > 1e-3  # at this amplitude the nonlinear term matters (linear limit: 1e-5)
    assert sol.attrs["amplitude_ratio"] == pytest.approx((norm(u1) / norm(u0)).mean().item(), rel=1e-12)
    assert sol.attrs["dt"] == 0.01 and sol.attrs["n_steps"] == 100
    again = p.solve(resolution=64, n_samples=5, seed=7)
    assert torch.equal(again.fields["u"], sol.fields["u"])
    assert not torch.equal(p.solve(resolution=64, n_samples=5, seed=8).fields["a"], sol.fields["a"])
    with pytest.raises(ValueError, match=r"^resolution: must divide fine_resolution=256, got 100"):
        p.solve(resolution=100)


def test_grf_choice_sets_the_amplitude():
    released = Burgers(grf="released", fine_resolution=256).random_initial_conditions(400, 0)
    paper = Burgers(grf="paper", fine_resolution=256).random_initial_conditions(400, 0)
    # pointwise variance sum_m 2 lambda_m over 0 < m < n/2 (L = 1)
    for u, name in ((released, "released"), (paper, "paper")):
        alpha, tau, sigma = GRF_PARAMS[name]
        m = torch.arange(1, 128, **F64)
        var = (2 * sigma**2 * ((2 * math.pi * m) ** 2 + tau**2) ** (-alpha)).sum().item()
        assert abs(u.var().item() / var - 1) < 0.15


def test_config_builds_the_problem():
    cfg = OmegaConf.load(config.config_dir() / "problem" / "burgers.yaml")
    cfg.data_dir = "outputs/data"  # in a composed config this is ${paths.data}
    p = config.instantiate(cfg)
    assert isinstance(p, Burgers) and p.setup == "fno" and p.nu == 0.1 and p.resolution == 1024
    r = config.instantiate(OmegaConf.merge(cfg, {"setup": "raissi"}))
    assert r.nu == pytest.approx(0.01 / math.pi) and r.resolution == 256


def test_float32_run_matches_float64():
    """Same seed, same fields in both dtypes (noise is drawn in float64), solver agrees to
    single-precision accuracy."""
    p = Burgers(fine_resolution=256)
    s32 = p.to("cpu", torch.float32).solve(resolution=64, n_samples=3, seed=4)
    s64 = p.to("cpu", torch.float64).solve(resolution=64, n_samples=3, seed=4)
    assert s32.fields["u"].dtype == torch.float32
    diff = s32.fields["u"].double() - s64.fields["u"]
    assert torch.linalg.vector_norm(diff) < 1e-5 * torch.linalg.vector_norm(s64.fields["u"])


@pytest.mark.parametrize("scheme", ["etdrk4", "fd2"])
def test_a_step_with_a_source_matches_the_forced_heat_equation(fno, scheme):
    """The ``forcing`` of a step (what a learned forcing passes, ``model.correct=forcing``): from
    u = 0 under a small source F sin(2 pi m x) the mode-m amplitude follows u_t = nu u_xx + F,
    (1 - exp(-nu k^2 t)) F / (nu k^2), k = 2 pi m; the nonlinear term feeds mode m only at third
    order in F. ETD integrates a constant source exactly, so ETDRK4 matches to rounding; fd2
    matches to its second order (central differences; Heun's time step, kept within its explicit
    diffusion limit, h^2 / 4 nu), the error quartering when the grid is halved."""
    m, amplitude, t = 2, 1e-5, 0.2

    def mode_m(n: int) -> float:
        steps = 20 if scheme == "etdrk4" else math.ceil(t / (0.25 / n**2 / fno.nu))
        x = torch.arange(n, **F64) / n
        source = amplitude * torch.sin(2 * math.pi * m * x)[None]
        u = torch.zeros(1, n, **F64)
        for _ in range(steps):
            u = fno.step(u, t / steps, scheme, forcing=source)
        return (2.0 / n) * (u[0] * torch.sin(2 * math.pi * m * x)).sum().item()

    decay = fno.nu * (2 * math.pi * m) ** 2
    exact = (1 - math.exp(-decay * t)) * amplitude / decay
    if scheme == "etdrk4":
        assert mode_m(32) == pytest.approx(exact, rel=1e-9)
    else:
        errors = [abs(mode_m(n) - exact) / exact for n in (16, 32, 64)]
        assert errors[0] < 0.05  # measured 0.044: 16 points give mode 2 eight points a wavelength
        assert all(3.6 < a / b < 4.4 for a, b in itertools.pairwise(errors)), errors

