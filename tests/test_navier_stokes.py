"""2D Navier–Stokes (vorticity form): exact flows, time order, differentiability, the reference solver."""

from __future__ import annotations

import math

import pytest
import torch

from sciml_cli.numerics.spectral import dealias_mask_2d
from sciml_cli.problems.navier_stokes import NavierStokes

F64 = {"dtype": torch.float64, "device": "cpu"}


def _problem(**overrides) -> NavierStokes:
    args = {"t_end": 1.0, "record_every": 1.0, "dt": 0.01, "resolution": 32, "fine_resolution": 32}
    return NavierStokes(**{**args, **overrides}).to("cpu", torch.float64)


def _grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(n, **F64) / n
    return torch.meshgrid(x, x, indexing="ij")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()


def _courant(w: torch.Tensor, dt: float) -> float:
    """Advective Courant number ``max(|u|, |v|) dt / dx`` of vorticity ``w`` ``[B, n, n]`` over
    the batch, with ``(u, v) = (psi_y, -psi_x)``, ``-Laplacian psi = w``, from a full complex FFT
    (first derivatives of the Nyquist mode dropped: they are not real grid functions)."""
    n = w.shape[-1]
    k = 2 * math.pi * torch.fft.fftfreq(n, d=1 / n, **F64)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    psi_hat = torch.fft.fft2(w) / torch.where(k2 > 0, k2, math.inf)
    k[n // 2] = 0.0
    u = torch.fft.ifft2(1j * k[None, :] * psi_hat).real
    v = torch.fft.ifft2(-1j * k[:, None] * psi_hat).real
    return (max(u.abs().max().item(), v.abs().max().item())) * dt * n


def _cn_factor(z: float) -> float:
    """Crank–Nicolson's amplification of ``w' = -lambda w`` for ``z = lambda dt``."""
    return (1.0 - z / 2.0) / (1.0 + z / 2.0)


@pytest.mark.parametrize("scheme", ["cn_heun", "cn_euler"])
@pytest.mark.parametrize("m", [1, 3])
def test_taylor_green_decays_exactly(scheme, m):
    # u = U (cos kx sin ky, -sin kx cos ky) is divergence free with vorticity
    # w = v_x - u_y = -2 k U cos kx cos ky, and psi = w / (2 k^2) makes u . grad w vanish, so
    # w_t = nu Laplacian w = -2 nu k^2 w: w(t) = w(0) exp(-2 nu k^2 t) solves the unforced equation.
    n, k, nu, dt, steps = 32, 2 * math.pi * m, 1e-2 / m**2, 5e-4, 400
    p = _problem(viscosity=nu, forcing_amplitude=0.0, scheme=scheme)
    x, y = _grid(n)
    amplitude = torch.tensor([1.0, 3.0], **F64)[:, None, None]
    w0 = -2 * k * amplitude * torch.cos(k * x) * torch.cos(k * y)
    u, v = p.velocity(w0)
    assert torch.allclose(u, amplitude * torch.cos(k * x) * torch.sin(k * y), atol=1e-13)
    assert torch.allclose(v, -amplitude * torch.sin(k * x) * torch.cos(k * y), atol=1e-13)

    w = w0
    for _ in range(steps):
        w = p.step(w, dt)
    decay = 2 * nu * k**2
    exact = w0 * math.exp(-decay * steps * dt)
    assert math.exp(-decay * steps * dt) < 0.9  # a visible decay, not a near-identity check
    # the time error is Crank–Nicolson's, steps * (decay dt)^3 / 12 ~ 2e-9 relative
    assert _rel(w, exact) < 1e-8
    # and nothing else: the discrete advection of this flow vanishes to rounding
    assert _rel(w, w0 * _cn_factor(decay * dt) ** steps) < 1e-12


def test_forced_single_mode_approaches_steady_state_exactly():
    # f = A (sin + cos)(2 pi (x + y)) is one wave vector k = 2 pi (1, 1), |k|^2 = 8 pi^2; a
    # vorticity along it has u . grad w = 0, so from rest w(t) = f (1 - exp(-nu |k|^2 t)) / (nu |k|^2).
    n, nu, dt, steps = 16, 1e-2, 2.5e-4, 800
    p = _problem(viscosity=nu, forcing_amplitude=0.1)
    lam = nu * 8 * math.pi**2
    f = p.forcing(n, **F64)
    w = torch.zeros(1, n, n, **F64)
    for _ in range(steps):
        w = p.step(w, dt)
    t = steps * dt
    # CN's time error: steps (lam dt)^3 / 12 exp(-lam t) / (1 - exp(-lam t)) ~ 3e-9 relative
    assert _rel(w[0], f * (1 - math.exp(-lam * t)) / lam) < 1e-8
    # CN with a constant source: w_n = w_s (1 - r^n), r its amplification factor
    assert _rel(w[0], f * (1 - _cn_factor(lam * dt) ** steps) / lam) < 1e-12


def test_advection_matches_the_analytic_jacobian():
    # psi = A sin(k1.x) + B cos(k2.x), w = -Laplacian psi:
    # u . grad w = psi_y w_x - psi_x w_y = A B (k1 x k2)(|k2|^2 - |k1|^2) cos(k1.x) sin(k2.x).
    n, big_a, big_b = 32, 0.7, -1.3
    k1 = 2 * math.pi * torch.tensor([1.0, 2.0], **F64)
    k2 = 2 * math.pi * torch.tensor([3.0, -1.0], **F64)
    x, y = _grid(n)
    th1, th2 = k1[0] * x + k1[1] * y, k2[0] * x + k2[1] * y
    k1s, k2s = (k1**2).sum(), (k2**2).sum()
    w = big_a * k1s * torch.sin(th1) + big_b * k2s * torch.cos(th2)
    cross = k1[0] * k2[1] - k1[1] * k2[0]
    exact = big_a * big_b * cross * (k2s - k1s) * torch.cos(th1) * torch.sin(th2)
    p = _problem()
    assert _rel(p.advection(w[None])[0], exact) < 1e-12
    u, v = p.velocity(w[None])
    assert torch.allclose(
        u[0], big_a * k1[1] * torch.cos(th1) - big_b * k2[1] * torch.sin(th2), atol=1e-12
    )
    assert torch.allclose(
        v[0], -big_a * k1[0] * torch.cos(th1) + big_b * k2[0] * torch.sin(th2), atol=1e-12
    )


@pytest.mark.parametrize(
    ("scheme", "order", "amplitude"), [("cn_heun", 2, 10.0), ("cn_euler", 1, 1.0)]
)
def test_time_order_on_a_forced_nonlinear_flow(scheme, order, amplitude):
    # Random smooth initial vorticity, forcing on, advection comparable to or larger than the
    # viscous term (amplitude 10: Courant number 0.6 at dt = 1/20); errors against dt = 1/1280.
    n = 32
    p = _problem(scheme=scheme)
    w0 = amplitude * p.initial_vorticity(2, n, torch.Generator().manual_seed(1))
    assert (p.advection(w0).norm() > 0.1 * w0.norm()).item()

    def run(dt: float) -> torch.Tensor:
        w_hat = torch.fft.rfft2(w0)
        for _ in range(round(1.0 / dt)):
            w_hat = p.step_spectral(w_hat, dt)
        return torch.fft.irfft2(w_hat, s=(n, n))

    reference = run(1 / 1280)
    errors = [_rel(run(dt), reference) for dt in (1 / 20, 1 / 40, 1 / 80)]
    slopes = [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]
    assert all(abs(s - order) < 0.15 for s in slopes), (errors, slopes)


def test_step_is_differentiable():
    p = _problem(viscosity=1e-2)
    w = 0.5 * p.initial_vorticity(2, 8, torch.Generator().manual_seed(3)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w: p.step(w, 0.05), (w,), eps=1e-6, atol=1e-8)
    # gradient through dt as well, as a learned correction of the step size would need
    dt = torch.tensor(0.05, **F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda dt: p.step(w.detach(), dt), (dt,), eps=1e-6, atol=1e-8)


def test_step_in_physical_and_spectral_space_agree_in_float32():
    p = _problem()
    w = p.initial_vorticity(3, 16, torch.Generator().manual_seed(0))
    spectral = torch.fft.irfft2(p.step_spectral(torch.fft.rfft2(w), 0.01), s=(16, 16))
    w32 = p.step(w.float(), 0.01)
    assert w32.dtype == torch.float32
    assert _rel(w32.double(), spectral) < 1e-5


def test_solve_records_subsamples_and_matches_step():
    p = _problem(t_end=0.2, record_every=0.1, dt=0.01, resolution=8, fine_resolution=16)
    sol = p.solve(n_samples=3, seed=5)
    w = sol.fields["w"]
    assert w.shape == (3, 3, 8, 8) and w.dtype == torch.float64
    assert torch.allclose(sol.grid["t"], torch.tensor([0.0, 0.1, 0.2], **F64))
    assert torch.allclose(sol.grid["x"], torch.arange(8, **F64) / 8)
    assert sol.attrs["n_steps"] == 20

    # the recorded fields are the point-wise subsampling of repeated `step`s on the fine grid
    state = p.initial_vorticity(3, 16, torch.Generator().manual_seed(5))
    assert _rel(w[:, 0], state[:, ::2, ::2]) < 1e-14  # up to an rfft2/irfft2 round trip
    courant = [_courant(state, 0.01)]
    for record in (1, 2):
        for _ in range(10):
            state = p.step(state, 0.01)
        assert _rel(w[:, record], state[:, ::2, ::2]) < 1e-12
        courant.append(_courant(state, 0.01))
    # max_cfl is the largest Courant number of the fine-grid records, a stable step here
    assert sol.attrs["max_cfl"] == pytest.approx(max(courant), rel=1e-10)
    assert max(courant) < 1

    # batching bounds memory, not the numbers; the seed fixes them
    again = _problem(
        t_end=0.2, record_every=0.1, dt=0.01, resolution=8, fine_resolution=16, batch_size=2
    )
    assert torch.allclose(again.solve(n_samples=3, seed=5).fields["w"], w, rtol=0, atol=1e-13)
    assert not torch.allclose(p.solve(n_samples=3, seed=6).fields["w"], w)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"dt": 0.3}, "dt"),
        ({"record_every": 0.3}, "record_every"),
        ({"resolution": 24}, "resolution"),
        ({"resolution": 64}, "resolution"),
        ({"scheme": "rk4"}, "scheme"),
    ],
)
def test_invalid_arguments_name_the_key(overrides, key):
    with pytest.raises(ValueError, match=f"^{key}:"):
        _problem(**overrides)


def test_solve_refuses_a_resolution_that_does_not_divide_the_fine_grid():
    with pytest.raises(ValueError, match="^resolution:"):
        _problem().solve(resolution=12)


@pytest.mark.parametrize("scheme", ["cn_heun", "cn_euler"])
def test_an_extra_forcing_enters_the_step_as_the_problem_s_own(scheme):
    """``forcing=`` (a learned source, ``model.correct=forcing``) is added to f inside the step:
    Li et al.'s forcing passed that way to an unforced problem gives the forced problem's step."""
    forced, unforced = (NavierStokes(forcing_amplitude=a, scheme=scheme) for a in (0.1, 0.0))
    w = forced.initial_vorticity(3, 32, torch.Generator().manual_seed(0)).to(**F64)
    f = forced.forcing(32, **F64)
    torch.testing.assert_close(unforced.step(w, 0.05, forcing=f.expand_as(w)), forced.step(w, 0.05),
                               rtol=0, atol=1e-14)
    assert (forced.step(w, 0.05) - unforced.step(w, 0.05)).abs().max() > 1e-3  # the forcing matters


def test_dealiased_advection_keeps_the_exact_product_s_modes_up_to_the_cut():
    """Vorticity made of modes up to just below n / 3 (15 of 48): the 2/3 rule keeps exactly the
    modes of u . grad w that no aliased product reaches, so they equal the modes of the product
    on a grid 3x finer, where nothing aliases; the others are zero. Low-mode tests cannot see
    aliasing; this one would."""
    n, fine = 48, 144
    g = torch.Generator().manual_seed(0)
    modes = [(15, 3), (-14, 15), (2, -15), (9, 11), (1, 0), (0, 13)]
    amplitudes = torch.randn(len(modes), 2, generator=g, **F64)

    def vorticity(m: int) -> torch.Tensor:
        x, y = _grid(m)
        phase = [2 * math.pi * (kx * x + ky * y) for kx, ky in modes]
        return sum(a * torch.cos(p) + b * torch.sin(p) for (a, b), p in zip(amplitudes, phase))[None]

    p = _problem()
    coarse = torch.fft.rfft2(p.advection(vorticity(n))[0]) / n**2
    exact = torch.fft.rfft2(p.advection(vorticity(fine))[0]) / fine**2
    significant = 1e-3 * exact.abs().max()
    # a product with modes beyond the cut (31 here), of which the coarse grid keeps 17
    assert (exact.abs() > significant).sum() > (coarse.abs() > significant).sum() > 10
    rows = torch.fft.fftfreq(n, d=1.0 / n).long() % fine
    kept = dealias_mask_2d(n)
    on_coarse_modes = exact[rows][:, : n // 2 + 1]
    assert coarse[~kept].abs().max() < 1e-15
    torch.testing.assert_close(coarse[kept], on_coarse_modes[kept], rtol=0, atol=1e-12 * exact.abs().max().item())

