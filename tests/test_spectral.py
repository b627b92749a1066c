"""Spectral helpers and Gaussian random fields against exact results and their stated covariance."""

from __future__ import annotations

import math

import pytest
import torch

from sciml_cli.numerics.spectral import (
    dealias_mask,
    dealias_mask_2d,
    grf_1d,
    grf_2d,
    grf_eigenvalues,
    rfft_wavenumbers,
    spectral_derivative,
    wavenumbers,
)

F64 = {"dtype": torch.float64, "device": "cpu"}


def test_wavenumbers_fft_order():
    expected = 2 * math.pi / 2.0 * torch.tensor([0, 1, 2, 3, -4, -3, -2, -1], dtype=torch.float64)
    assert torch.equal(wavenumbers(8, length=2.0, **F64), expected)
    assert torch.equal(rfft_wavenumbers(8, length=2.0, **F64), expected[:5].abs())
    assert rfft_wavenumbers(9, **F64).shape == (5,)


def test_dealias_mask_counts():
    # modes kept: |m| < n/3
    assert int(dealias_mask(1024).sum()) == 342
    assert int(dealias_mask(6).sum()) == 2
    assert dealias_mask(64).dtype == torch.bool and dealias_mask(64).shape == (33,)
    m2 = dealias_mask_2d(12)
    assert m2.shape == (12, 7) and int(m2.sum()) == 7 * 4  # m_x in -3..3, m_y in 0..3


@pytest.mark.parametrize("n", [48, 64, 96])
def test_dealiased_product_is_exact_on_kept_modes(n):
    """A product of two fields limited to the kept band, taken on the n-point grid, equals the
    exact product (computed on a grid 3x finer, where nothing aliases) on every kept mode."""
    g = torch.Generator().manual_seed(n)
    mask = dealias_mask(n)
    half = n // 2 + 1

    def band_limited():
        c = torch.complex(torch.randn(half, generator=g, dtype=torch.float64),
                          torch.randn(half, generator=g, dtype=torch.float64)) * mask
        c[0] = c[0].real.clone()
        return c

    a, b = band_limited(), band_limited()
    on_grid = torch.fft.rfft(torch.fft.irfft(a, n) * torch.fft.irfft(b, n)) * mask
    fine = 3 * n  # values on the fine grid are the same trigonometric polynomials
    scale = fine / n
    exact = torch.fft.rfft(torch.fft.irfft(a * scale, fine) * torch.fft.irfft(b * scale, fine))
    exact = exact[:half] / scale * mask
    assert torch.allclose(on_grid, exact, atol=1e-11 * exact.abs().max())
    # without the mask the same product aliases: the check above is not vacuous
    a_full = torch.complex(torch.randn(half, generator=g, dtype=torch.float64),
                           torch.randn(half, generator=g, dtype=torch.float64))
    a_full[0], a_full[-1] = a_full[0].real.clone(), a_full[-1].real.clone()
    aliased = torch.fft.rfft(torch.fft.irfft(a_full, n) ** 2)
    padded = torch.fft.rfft(torch.fft.irfft(a_full * scale, fine) ** 2)[:half] / scale
    assert (aliased - padded).abs().max() > 1e-3


@pytest.mark.parametrize("length", [1.0, 2 * math.pi])
def test_spectral_derivative_of_sine_is_exact(length):
    n = 64
    x = torch.arange(n, dtype=torch.float64) * (length / n)
    k = 2 * math.pi * 5 / length
    u = torch.sin(k * x)[None].repeat(3, 1)
    d1 = spectral_derivative(u, 1, length)
    d2 = spectral_derivative(u, 2, length)
    d3 = spectral_derivative(u, 3, length)
    assert torch.allclose(d1, k * torch.cos(k * x), rtol=0, atol=1e-12 * k)
    assert torch.allclose(d2, -(k**2) * torch.sin(k * x), rtol=0, atol=1e-12 * k**2)
    assert torch.allclose(d3, -(k**3) * torch.cos(k * x), rtol=0, atol=1e-12 * k**3)


def test_spectral_derivative_along_axis_2d():
    n = 32
    x = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    u = torch.sin(2 * x)[:, None] * torch.cos(3 * x)[None, :]  # [x, y]
    du_dx = spectral_derivative(u, 1, 2 * math.pi, dim=0)
    du_dy = spectral_derivative(u, 1, 2 * math.pi, dim=1)
    s2, c2 = torch.sin(2 * x)[:, None], torch.cos(2 * x)[:, None]
    s3, c3 = torch.sin(3 * x)[None, :], torch.cos(3 * x)[None, :]
    assert torch.allclose(du_dx, 2 * c2 * c3, atol=1e-12)
    assert torch.allclose(du_dy, -3 * s2 * s3, atol=1e-12)


# GRF: |u_hat_m|^2 / E|u_hat_m|^2 is Exp(1) for each mode, so its mean over N samples has
# standard deviation 1/sqrt(N); the tolerances below are 5 of those.
N_1D, N_2D = 4000, 1000


@pytest.mark.parametrize(
    ("alpha", "tau", "sigma", "length"),
    [(2.5, 7.0, 49.0, 1.0), (2.0, 5.0, 25.0, 1.0), (2.0, 1.0, 1.0, 2 * math.pi)],
)
def test_grf_1d_spectrum_matches_covariance(alpha, tau, sigma, length):
    n = 64
    g = torch.Generator().manual_seed(0)
    u = grf_1d(N_1D, n, alpha, tau, sigma, g, length=length, **F64)
    assert u.shape == (N_1D, n) and u.dtype == torch.float64
    assert u.mean(dim=1).abs().max() < 1e-12 * u.abs().max()  # k = 0 mode removed
    u_hat = torch.fft.rfft(u)
    k = rfft_wavenumbers(n, length, **F64)
    expected = n**2 * grf_eigenvalues(k**2, alpha, tau, sigma) / length  # E|u_hat_m|^2
    ratio = (u_hat.abs() ** 2).mean(0)[1:-1] / expected[1:-1]
    assert (ratio - 1).abs().max() < 5 / math.sqrt(N_1D)
    assert u_hat[:, -1].abs().max() < 1e-10 * u_hat.abs().max()  # Nyquist removed
    # real and imaginary parts equally loaded (a real field, not a cosine series)
    frac = (u_hat.real[:, 1:-1] ** 2).mean(0) / (u_hat.abs()[:, 1:-1] ** 2).mean(0)
    assert (frac - 0.5).abs().max() < 5 * 0.5 / math.sqrt(N_1D)
    # ensemble mean is zero within sampling error at every point
    point_std = u.std(0)
    assert (u.mean(0).abs() / (point_std / math.sqrt(N_1D))).max() < 5


def test_grf_2d_spectrum_matches_covariance():
    n, alpha, tau, sigma = 32, 2.5, 7.0, 7.0**1.5
    g = torch.Generator().manual_seed(1)
    u = grf_2d(N_2D, n, alpha, tau, sigma, g, **F64)
    assert u.shape == (N_2D, n, n)
    assert u.mean(dim=(1, 2)).abs().max() < 1e-12 * u.abs().max()
    u_hat = torch.fft.rfft2(u)
    kx = wavenumbers(n, **F64)[:, None]
    ky = rfft_wavenumbers(n, **F64)[None, :]
    expected = n**4 * grf_eigenvalues(kx**2 + ky**2, alpha, tau, sigma)
    interior = torch.ones(n, n // 2 + 1, dtype=torch.bool)
    interior[0, 0] = False
    interior[n // 2, :] = False
    interior[:, -1] = False
    ratio = (u_hat.abs() ** 2).mean(0)[interior] / expected[interior]
    # on the ky = 0 column m and -m are one conjugate pair; every entry is still Exp(1)-scaled
    assert (ratio - 1).abs().max() < 5 / math.sqrt(N_2D)
    assert (ratio.mean() - 1).abs() < 5 / math.sqrt(N_2D * interior.sum().item())
    assert u_hat[:, ~interior].abs().max() < 1e-9 * u_hat.abs().max()
    assert (u.mean(0).abs() / (u.std(0) / math.sqrt(N_2D))).max() < 5


def test_grf_seeded_and_device_dtype():
    a = grf_2d(3, 16, 2.5, 7.0, 10.0, torch.Generator().manual_seed(5), dtype=torch.float32)
    b = grf_2d(3, 16, 2.5, 7.0, 10.0, torch.Generator().manual_seed(5), dtype=torch.float32)
    assert a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, grf_2d(3, 16, 2.5, 7.0, 10.0, torch.Generator().manual_seed(6), dtype=torch.float32))
    with pytest.raises(ValueError, match=r"^n_samples: must be >= 1, got 0$"):
        grf_1d(0, 16, 2.5, 7.0, 10.0, None)
    with pytest.raises(ValueError, match=r"^alpha: must be > 0, got -1"):
        grf_2d(1, 16, -1.0, 7.0, 10.0, None)
