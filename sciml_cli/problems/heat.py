"""1D heat equation with zero Dirichlet ends.

    u_t = kappa u_xx,   x in [0, 1], t in [0, T],   u(0, t) = u(1, t) = 0,
    u(x, 0) = sum_k a_k sin(k pi x),

whose exact solution is the decaying series ``sum_k a_k exp(-kappa (k pi)^2 t) sin(k pi x)``.
The reference solver is Crank–Nicolson in time on a second-order central difference in space.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Annotated

import torch
from torch import Tensor

from ..constraints import Bound, NonNegativeFloat, PositiveFloat
from ..errors import ConfigError
from ..numerics.finite_difference import laplacian_dirichlet_1d
from ..numerics.timestepping import crank_nicolson
from .base import PhysicsResidual, Problem, Solution


class Heat(Problem, PhysicsResidual):
    """The 1D heat equation on [0, 1] x [0, T] with a sine-series initial condition.

    Parameters
    ----------
    kappa
        Diffusivity.
    t_end
        Final time ``T``.
    amplitudes
        ``a_k`` of ``sin(k pi x)`` for ``k = 1, 2, ...``.
    resolution
        Spatial points (ends included) of the reference grid used for validation.
    n_times
        Time slices of the reference grid (``t = 0`` and ``t = T`` included).
    noise
        Observation noise: Gaussian, with standard deviation ``noise`` times that of the
        solution over the domain (as Raissi et al. 2019 add noise), for inverse problems.
    """

    coords = ("x", "t")
    derivatives = ("u_t", "u_xx")

    def __init__(
        self,
        kappa: PositiveFloat = 0.1,
        t_end: PositiveFloat = 1.0,
        amplitudes: Sequence[float] = (1.0, 0.0, 0.5),
        resolution: Annotated[int, Bound(3, inclusive=True)] = 256,  # the two ends and a point between
        n_times: Annotated[int, Bound(2, inclusive=True)] = 101,
        noise: NonNegativeFloat = 0.0,
    ) -> None:
        super().__init__()
        if not any(amplitudes):
            raise ValueError("amplitudes: at least one must be non-zero")
        self.kappa, self.t_end = float(kappa), float(t_end)
        self.amplitudes = [float(a) for a in amplitudes]
        self.resolution, self.n_times = int(resolution), int(n_times)
        self.noise = float(noise)

    # -- physics ---------------------------------------------------------------------------
    def _series(self, x: Tensor, t: Tensor | float) -> Tensor:
        u = torch.zeros_like(x)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        for k, a in enumerate(self.amplitudes, start=1):
            if a:
                u = u + a * torch.exp(-self.kappa * (k * math.pi) ** 2 * t) * torch.sin(k * math.pi * x)
        return u

    def initial_condition(self, x: Tensor) -> Tensor:
        return self._series(x, 0.0)

    def exact(self, x: Tensor, t: Tensor) -> Tensor:
        """Exact solution at matching (broadcastable) ``x`` and ``t``."""
        return self._series(x, t)

    # -- physics-residual view ---------------------------------------------------------------
    @property
    def bounds(self) -> list[tuple[float, float]]:
        return [(0.0, 1.0), (0.0, self.t_end)]

    def coefficients(self) -> dict[str, float]:
        return {"kappa": self.kappa}

    def residual(self, fields: Mapping[str, Tensor], points: Tensor,
                 coefficients: Mapping[str, Tensor | float]) -> Tensor:
        return fields["u_t"] - coefficients["kappa"] * fields["u_xx"]

    def initial_residual(self, u: Tensor, points: Tensor) -> Tensor:
        return u - self.initial_condition(points[:, 0:1])

    def boundary_residual(self, u: Tensor, points: Tensor) -> Tensor:
        return u

    def constraint(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """``u = u_0(x) + x (1 - x) t N``: the sine series vanishes at both ends."""
        x, t = points[:, 0:1], points[:, 1:2]
        return self.initial_condition(x), x * (1 - x) * t

    def observations(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """``n`` uniformly random points of the domain with the exact solution plus noise."""
        g = torch.Generator().manual_seed(int(seed) + 7919)
        unit = torch.rand(n, 2, generator=g, dtype=torch.float64)
        points = (unit * torch.tensor([1.0, self.t_end], dtype=torch.float64)).to(**self.factory)
        u = self.exact(points[:, 0:1], points[:, 1:2])
        if self.noise:
            _, ref = self.reference()
            u = u + self.noise * ref.std() * torch.randn(n, 1, generator=g, dtype=torch.float64).to(**self.factory)
        return points, u

    def reference(self, resolution: int | None = None) -> tuple[dict[str, Tensor], Tensor]:
        if resolution is not None and resolution < 3:  # the ends are zero: nothing left to score
            raise ConfigError("resolution", f"need at least 3 points, got {resolution}")
        x = torch.linspace(0.0, 1.0, resolution or self.resolution, **self.factory)
        t = torch.linspace(0.0, self.t_end, self.n_times, **self.factory)
        grid = {"x": x, "t": t}
        return grid, self.exact(x[:, None], t[None, :])

    def baselines(self) -> dict[str, float]:
        """Crank–Nicolson on 9 points (7 unknowns, ``n_times - 1`` steps): its relative L2 error
        at its own nodes, a classical solve with fewer values than the networks here have weights."""
        return {"crank_nicolson_9_rel_l2": self.solve(resolution=9).attrs["rel_l2_vs_exact"]}

    # -- reference solver ------------------------------------------------------------------------
    def check_solve(self, resolution: int | None = None, n_samples: int = 1) -> None:
        if n_samples != 1:
            raise ValueError("n_samples: the 1D heat problem has one initial condition, use 1")
        nx = resolution or self.resolution
        if nx < 3:
            raise ValueError(f"resolution: need at least 3 points, got {nx}")

    def solve(self, resolution: int | None = None, n_samples: int = 1, seed: int = 0) -> Solution:
        """Crank–Nicolson with ``dt`` close to ``dx`` so both errors are second order."""
        self.check_solve(resolution, n_samples)
        nx = resolution or self.resolution
        start = time.perf_counter()
        dx = 1.0 / (nx - 1)
        intervals = self.n_times - 1
        save_every = max(1, math.ceil(self.t_end / dx / intervals))
        n_steps = intervals * save_every
        dt = self.t_end / n_steps
        x = torch.linspace(0.0, 1.0, nx, **self.factory)
        t = torch.linspace(0.0, self.t_end, self.n_times, **self.factory)
        lap = self.kappa * laplacian_dirichlet_1d(nx - 2, dx, **self.factory)
        inner = crank_nicolson(lap, self.initial_condition(x[1:-1])[None], dt, n_steps, save_every)
        u = torch.nn.functional.pad(inner, (1, 1))  # zero Dirichlet ends
        wall = time.perf_counter() - start
        exact = self.exact(x[None, :], t[:, None])
        err = (torch.linalg.vector_norm(u[0] - exact) / torch.linalg.vector_norm(exact)).item()
        return Solution(
            fields={"u": u},
            grid={"t": t, "x": x},
            attrs={
                "solver": "crank-nicolson",
                "dt": dt,
                "dx": dx,
                "n_steps": n_steps,
                "wall_time_s": wall,
                "rel_l2_vs_exact": err,
            },
        )
