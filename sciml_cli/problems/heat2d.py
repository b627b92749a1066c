"""2D periodic heat equation as an operator-learning dataset.

    u_t = kappa Laplacian u,   (x, y) in [0, 1)^2 periodic,   u(., 0) = a,

with ``a`` drawn from the Gaussian random field ``sigma^2 (-Laplacian + tau^2 I)^(-alpha)``.
Each Fourier mode decays on its own, ``u_hat_k(T) = exp(-kappa |k|^2 T) a_hat_k``, so the
reference map ``a -> u(., T)`` is exact up to rounding for the grid's trigonometric interpolant.

Grids: ``x_i = i / n`` along axis -2, ``y_j = j / n`` along axis -1 (``indexing="ij"``).
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from ..constraints import PositiveFloat, PositiveInt
from ..numerics.spectral import grf_2d, rfft_wavenumbers, wavenumbers
from .base import SPLIT_SEEDS, OperatorData, Problem, Solution


class Heat2D(Problem, OperatorData):
    """The heat semigroup on the periodic unit square, ``a = u(., 0) -> u(., T)``.

    Parameters
    ----------
    kappa
        Diffusivity. With the defaults the lowest modes ``|k| = 2 pi`` keep
        ``exp(-0.01 (2 pi)^2) = 67 %`` of their amplitude and ``|k| = 6 pi`` about 3 %: a smoothing
        map with a non-trivial spectrum to learn.
    t_end
        The time ``T`` of the output field.
    alpha, tau, sigma
        Covariance ``sigma^2 (-Laplacian + tau^2 I)^(-alpha)`` of the input fields (``tau`` an
        angular wavenumber); defaults as Li et al. (2021) for Navier–Stokes vorticity.
    resolution
        Default grid of :meth:`solve`, points per side.
    """

    def __init__(
        self,
        kappa: PositiveFloat = 0.01,
        t_end: PositiveFloat = 1.0,
        alpha: PositiveFloat = 2.5,
        tau: PositiveFloat = 7.0,
        sigma: PositiveFloat = 7.0**1.5,
        resolution: PositiveInt = 64,
    ) -> None:
        super().__init__()
        self.kappa, self.t_end = float(kappa), float(t_end)
        self.alpha, self.tau, self.sigma = float(alpha), float(tau), float(sigma)
        if resolution < 2:
            raise ValueError(f"resolution: need at least 2 points per side, got {resolution}")
        self.resolution = int(resolution)

    def propagate(self, u: Tensor, t: float | Tensor) -> Tensor:
        """The exact solution operator ``S(t)`` applied to fields ``u`` ``[..., n, n]``, same shape.

        Multiplies each Fourier mode by ``exp(-kappa |k|^2 t)``; differentiable in ``u`` and ``t``.
        """
        n = u.shape[-1]
        if u.shape[-2] != n:
            raise ValueError(f"u: expected a square grid [..., n, n], got {tuple(u.shape)}")
        f = {"device": u.device, "dtype": u.dtype}
        k2 = wavenumbers(n, **f)[:, None] ** 2 + rfft_wavenumbers(n, **f)[None, :] ** 2
        return torch.fft.irfft2(torch.fft.rfft2(u) * torch.exp(-self.kappa * t * k2), s=(n, n))

    def initial_condition(self, n_samples: int, n: int, generator: torch.Generator) -> Tensor:
        """Input fields ``a`` from the Gaussian random field, ``[n_samples, n, n]``."""
        return grf_2d(
            n_samples, n, self.alpha, self.tau, self.sigma, generator=generator, **self.factory
        )

    def check_solve(self, resolution: int | None = None, n_samples: int = 1) -> None:
        self.check_resolution(resolution or self.resolution)
        if n_samples < 1:
            raise ValueError(f"n_samples: must be >= 1, got {n_samples}")

    def check_resolution(self, resolution: int) -> None:
        if resolution < 2:
            raise ValueError(f"resolution: need at least 2 points per side, got {resolution}")

    def solve(self, resolution: int | None = None, n_samples: int = 1, seed: int = 0) -> Solution:
        """Pairs ``{"a": [N, X, Y], "u": [N, X, Y]}`` with ``u = S(t_end) a``, grid ``{"x", "y"}``."""
        self.check_solve(resolution, n_samples)
        n = resolution or self.resolution
        start = time.perf_counter()
        a = self.initial_condition(n_samples, n, torch.Generator().manual_seed(seed))
        u = self.propagate(a, self.t_end)
        if u.device.type == "cuda":
            torch.cuda.synchronize(u.device)
        wall = time.perf_counter() - start
        ratio = torch.linalg.vector_norm(u, dim=(-2, -1)) / torch.linalg.vector_norm(
            a, dim=(-2, -1)
        )
        x = torch.arange(n, **self.factory) / n
        return Solution(
            fields={"a": a, "u": u},
            grid={"x": x, "y": x.clone()},
            attrs={
                "solver": "exact Fourier multiplier exp(-kappa |k|^2 t)",
                "kappa": self.kappa,
                "t_end": self.t_end,
                "mean_norm_ratio_u_over_a": ratio.mean().item(),
                "wall_time_s": wall,
            },
        )

    # -- operator-data view ------------------------------------------------------------------------
    in_channels = out_channels = 1
    n_dims = 2

    def operator_pairs(self, split: str, n_samples: int, resolution: int | None = None):
        """``(a, u, grid)`` as ``[N, 1, X, Y]``; exact and cheap, so generated on request
        (each resolution draws its own fields from the same distribution)."""
        solution = self.solve(resolution, n_samples, SPLIT_SEEDS[split])
        return solution.fields["a"][:, None], solution.fields["u"][:, None], solution.grid
