"""Fourier pseudo-spectral helpers on periodic grids, and Gaussian random fields.

Grids are uniform and periodic, ``x_j = j L / n`` for ``j = 0, ..., n - 1``; the last axis (or
the last two axes) of a tensor is the grid. Wavenumbers are angular, ``k = 2 pi m / L``.

Gaussian random fields follow the covariance used by Li et al. (2021, Fourier neural operator)
for their Burgers and Navier–Stokes data, ``C = sigma^2 (-Laplacian + tau^2 I)^(-alpha)``: the
field is the Karhunen–Loeve sum ``u = sum_m sqrt(lambda_m) xi_m e_m`` over the Fourier
eigenfunctions ``e_m(x) = exp(i k_m . x) / L^(d/2)`` with eigenvalues
``lambda_m = sigma^2 (|k_m|^2 + tau^2)^(-alpha)``, evaluated on the grid.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def _device_only(factory: dict[str, Any]) -> dict[str, Any]:
    return {"device": factory["device"]} if "device" in factory else {}


def _real_factory(factory: dict[str, Any]) -> dict[str, Any]:
    """``factory`` with a real floating dtype (default float64: wavenumbers are exact integers
    times ``2 pi / L`` and feed spectral derivatives that we test to 1e-12)."""
    dtype = factory.get("dtype") or torch.float64
    if not dtype.is_floating_point:
        dtype = torch.float64
    return {**_device_only(factory), "dtype": dtype}


def wavenumbers(n: int, length: float = 1.0, **factory: Any) -> Tensor:
    """Angular wavenumbers of an ``n``-point FFT in FFT order, ``[n]``.

    ``2 pi / length * (0, 1, ..., n/2 - 1, -n/2, ..., -1)`` for even ``n`` (as
    :func:`torch.fft.fftfreq` orders them); units of 1 / length.
    """
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    f = _real_factory(factory)
    return torch.fft.fftfreq(n, d=1.0 / n, **f) * (2.0 * math.pi / length)


def rfft_wavenumbers(n: int, length: float = 1.0, **factory: Any) -> Tensor:
    """Angular wavenumbers of an ``n``-point real FFT, ``2 pi / length * (0, ..., n // 2)``,
    ``[n // 2 + 1]``."""
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    f = _real_factory(factory)
    return torch.fft.rfftfreq(n, d=1.0 / n, **f) * (2.0 * math.pi / length)


def dealias_mask(n: int, **factory: Any) -> Tensor:
    """Orszag's 2/3 rule over the modes of an ``n``-point real FFT, bool ``[n // 2 + 1]``.

    Keeps the integer modes ``|m| < n / 3``: the product of two such fields has modes
    ``|m| < 2n/3``, whose aliases ``m -+ n`` then land outside the kept band, so a quadratic
    term computed on the grid is exact on the kept modes. Only the device of ``factory`` is used.
    """
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    m = torch.arange(n // 2 + 1, **_device_only(factory))
    return 3 * m < n


def dealias_mask_2d(n: int, **factory: Any) -> Tensor:
    """The 2/3 rule over the modes of an ``n x n`` :func:`torch.fft.rfft2`, bool ``[n, n // 2 + 1]``
    (both integer modes ``|m_x|, |m_y| < n / 3``)."""
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    m = torch.fft.fftfreq(n, d=1.0 / n, **_device_only(factory)).abs()
    return (3 * m < n)[:, None] & dealias_mask(n, **factory)[None, :]


def spectral_derivative(u: Tensor, order: int = 1, length: float = 1.0, dim: int = -1) -> Tensor:
    """``d^order u / dx^order`` of a real periodic field along ``dim``, by FFT; same shape as ``u``.

    Exact (to rounding) for trigonometric polynomials the grid resolves. For odd orders the
    Nyquist mode (even ``n``) is dropped: its derivative is not representable on the grid.
    """
    if order < 0:
        raise ValueError(f"order: must be >= 0, got {order}")
    n = u.shape[dim]
    k = rfft_wavenumbers(n, length, device=u.device, dtype=u.dtype)
    factor = (1j * k) ** order
    if order % 2 == 1 and n % 2 == 0:
        factor[-1] = 0.0
    shape = [1] * u.ndim
    shape[dim] = k.numel()
    u_hat = torch.fft.rfft(u, dim=dim)
    return torch.fft.irfft(u_hat * factor.reshape(shape), n=n, dim=dim)


def grf_eigenvalues(k2: Tensor, alpha: float, tau: float, sigma: float) -> Tensor:
    """``sigma^2 (|k|^2 + tau^2)^(-alpha)``: eigenvalues of the covariance
    ``sigma^2 (-Laplacian + tau^2 I)^(-alpha)`` at squared angular wavenumbers ``k2`` (any
    shape)."""
    return sigma**2 * (k2 + tau**2) ** (-alpha)


def _grf(
    n_samples: int,
    n: int,
    dim: int,
    alpha: float,
    tau: float,
    sigma: float,
    generator: torch.Generator | None,
    length: float,
    factory: dict[str, Any],
) -> Tensor:
    for name, value in (("n_samples", n_samples), ("n", n)):
        if value < 1:
            raise ValueError(f"{name}: must be >= 1, got {value}")
    for name, value in (("alpha", alpha), ("length", length)):
        if not value > 0:
            raise ValueError(f"{name}: must be > 0, got {value}")
    f = _real_factory(factory)
    # Noise is drawn in float64 on the CPU from the caller's generator, so a seed gives the same
    # fields on every device and in every dtype; the spectral arithmetic runs on the target.
    shape = (n_samples,) + (n,) * dim
    re = torch.randn(shape, generator=generator, dtype=torch.float64)
    im = torch.randn(shape, generator=generator, dtype=torch.float64)
    noise = torch.complex(re.to(**f), im.to(**f))

    m = torch.fft.fftfreq(n, d=1.0 / n, **f)
    k = m * (2.0 * math.pi / length)
    k2 = torch.zeros((n,) * dim, **f)
    keep = torch.ones((n,) * dim, dtype=torch.bool, device=k2.device)
    for axis in range(dim):
        view = [1] * dim
        view[axis] = n
        k2 = k2 + k.reshape(view) ** 2
        # Nyquist modes are dropped: their sine half vanishes on the grid and their derivative
        # is not representable, so the sampled field is the exact grid restriction of the
        # Karhunen–Loeve sum over |m_i| < n / 2.
        keep = keep & (2 * m.abs().reshape(view) < n)
    sqrt_eig = torch.sqrt(grf_eigenvalues(k2, alpha, tau, sigma)) * keep
    sqrt_eig.reshape(-1)[0] = 0.0  # mean zero
    # With complex coefficients of E|z|^2 = 2 lambda, the real part of the sum has exactly the
    # covariance sum_m lambda_m cos(k_m . (x - y)) / L^d: no explicit Hermitian symmetry needed
    # (the same construction as Li et al.'s released generator).
    coeff = noise * sqrt_eig * (n**dim / length ** (dim / 2.0))
    dims = tuple(range(-dim, 0))
    return torch.fft.ifftn(coeff, dim=dims).real


def grf_1d(
    n_samples: int,
    n: int,
    alpha: float,
    tau: float,
    sigma: float,
    generator: torch.Generator | None,
    length: float = 1.0,
    **factory: Any,
) -> Tensor:
    """Samples of a periodic Gaussian random field on ``[0, length)``, ``[n_samples, n]``.

    Mean zero, covariance ``sigma^2 (-d^2/dx^2 + tau^2 I)^(-alpha)`` (so ``tau`` is a wavenumber
    and ``sigma`` the amplitude, in the units of the field). Li et al. (2021) state
    ``sigma=25, tau=5, alpha=2`` for Burgers; their released generator uses ``sigma=49, tau=7,
    alpha=2.5``. The ``k = 0`` and Nyquist modes are zero.

    Parameters
    ----------
    n_samples, n
        Number of fields and grid points.
    alpha, tau, sigma
        Covariance parameters as above.
    generator
        Source of the Gaussian noise (a CPU generator; the result is then moved to ``device``).
    length
        Period ``L``.
    **factory
        ``device`` and ``dtype`` of the result (default float64).
    """
    return _grf(n_samples, n, 1, alpha, tau, sigma, generator, length, factory)


def grf_2d(
    n_samples: int,
    n: int,
    alpha: float,
    tau: float,
    sigma: float,
    generator: torch.Generator | None,
    length: float = 1.0,
    **factory: Any,
) -> Tensor:
    """Samples of a periodic Gaussian random field on ``[0, length)^2``, ``[n_samples, n, n]``.

    Mean zero, covariance ``sigma^2 (-Laplacian + tau^2 I)^(-alpha)``; the axes are ``(x, y)``
    with ``x_j = j L / n``. Li et al. (2021) use ``alpha=2.5, tau=7, sigma=7^1.5`` for the
    Navier–Stokes vorticity. The ``k = 0`` mode and every mode with ``|m_x| = n/2`` or
    ``|m_y| = n/2`` are zero. Other parameters as :func:`grf_1d`.
    """
    return _grf(n_samples, n, 2, alpha, tau, sigma, generator, length, factory)


def restrict(u: Tensor, n: int, n_dims: int = 1) -> Tensor:
    """Spectral truncation of a periodic field to ``n`` points per axis: the coarse grid
    function whose Fourier modes are those of ``u`` with ``|m| < n / 2`` (the coarse Nyquist
    mode, which a real grid function cannot carry as a general complex coefficient, dropped).

    ``u`` is ``[..., m]`` (``n_dims = 1``) or ``[..., m, m]`` (``n_dims = 2``) with ``n <= m``;
    ``n`` even. Restriction commutes with sampling for band-limited fields (a field with modes
    ``|k| < n / 2`` is returned as its own samples on the coarse grid), is a projection
    (restricting twice equals once), and keeps the mean exactly.
    """
    if n_dims not in (1, 2):
        raise ValueError(f"n_dims: 1 or 2, got {n_dims}")
    m = u.shape[-1]
    if n % 2 or n < 2 or n > m or (n_dims == 2 and u.shape[-2] != m):
        raise ValueError(f"restrict: cannot restrict a grid of {tuple(u.shape[-n_dims:])} to an even {n} per axis")
    half = n // 2
    if n_dims == 1:
        coarse = torch.fft.rfft(u)[..., :half + 1].clone()
        coarse[..., half] = 0
        return torch.fft.irfft(coarse * (n / m), n=n)
    full = torch.fft.rfft2(u)
    rows = torch.cat([torch.arange(half, device=u.device), torch.arange(m - half + 1, m, device=u.device)])
    coarse = full[..., rows, :half + 1]  # the row of mode -n/2 and the column n/2: zero below
    coarse = torch.cat([coarse[..., :half, :], coarse.new_zeros(*coarse.shape[:-2], 1, half + 1),
                        coarse[..., half:, :]], dim=-2)
    coarse[..., half] = 0
    return torch.fft.irfft2(coarse * (n * n / (m * m)), s=(n, n))
