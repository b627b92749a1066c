"""Lotka–Volterra predator–prey system, the first example of universal differential equations.

    x' = alpha x - beta x y,      y' = gamma x y - delta y,       x, y > 0,

with the parameters, initial state, time span and noise model of Rackauckas et al. (2020),
"Universal Differential Equations for Scientific Machine Learning": alpha = 1.3, beta = 0.9,
gamma = 0.8, delta = 1.8, u0 = (0.44249296, 4.6280594), t in [0, 3] sampled every 0.1 and
Gaussian noise with a standard deviation of 5 % of each state's mean over the trajectory. In that
experiment the linear terms ``alpha x`` and ``-delta y`` are known and a network learns the
interaction terms, so this class exposes them separately (:meth:`linear_terms`,
:meth:`interaction_terms`).

The system has no closed-form solution but conserves

    V(x, y) = gamma x - delta ln x + beta y - alpha ln y,

which the reference solver (adaptive Dormand–Prince 5(4) from torchdiffeq) is checked against.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor
from torchdiffeq import odeint

from .. import progress
from ..constraints import NonNegativeFloat, PositiveFloat, PositiveInt
from .base import Problem, Solution


class LotkaVolterra(Problem):
    """Predator–prey dynamics; trajectories from one or many initial states.

    Parameters
    ----------
    alpha, beta, gamma, delta
        Prey growth, predation, predator growth per prey, predator death rates (1 / time).
        Defaults from Rackauckas et al. (2020).
    u0
        Initial state ``(x, y)`` used when one trajectory is asked for (``n_samples=1``).
    t_end
        Final time; samples are equispaced on ``[0, t_end]``.
    n_times
        Time samples, both ends included (31 gives the paper's step of 0.1 on ``[0, 3]``).
    noise
        Standard deviation of the additive Gaussian noise as a fraction of each state's mean
        over its trajectory (0.05 in the paper).
    u0_low, u0_high
        Box ``[low, high]`` per state from which initial states are drawn uniformly when
        ``n_samples > 1``. It surrounds the equilibrium ``(delta/gamma, alpha/beta)``.
    rtol, atol
        Tolerances of the adaptive integrator, per element of the state (max norm). In float32
        they are raised to ``100 eps`` because tighter ones cannot be met in that precision.
    """

    def __init__(
        self,
        alpha: PositiveFloat = 1.3,
        beta: PositiveFloat = 0.9,
        gamma: PositiveFloat = 0.8,
        delta: PositiveFloat = 1.8,
        u0: Sequence[float] = (0.44249296, 4.6280594),
        t_end: PositiveFloat = 3.0,
        n_times: PositiveInt = 31,
        noise: NonNegativeFloat = 0.05,
        u0_low: Sequence[float] = (0.5, 0.5),
        u0_high: Sequence[float] = (4.0, 5.0),
        rtol: PositiveFloat = 1e-10,
        atol: PositiveFloat = 1e-10,
    ) -> None:
        super().__init__()
        self.alpha, self.beta = float(alpha), float(beta)
        self.gamma, self.delta = float(gamma), float(delta)
        self.u0 = _pair("u0", u0)
        self.u0_low, self.u0_high = _pair("u0_low", u0_low), _pair("u0_high", u0_high)
        if any(lo >= hi for lo, hi in zip(self.u0_low, self.u0_high)):
            raise ValueError(f"u0_high: must exceed u0_low in each state, got {self.u0_low} and {self.u0_high}")
        self.t_end, self.n_times = float(t_end), int(n_times)
        if self.n_times < 2:
            raise ValueError(f"n_times: need at least 2 samples, got {self.n_times}")
        self.noise, self.rtol, self.atol = float(noise), float(rtol), float(atol)

    @property
    def params(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "delta": self.delta}

    # -- dynamics -----------------------------------------------------------------------------------
    def linear_terms(self, u: Tensor) -> Tensor:
        """The known part in the UDE experiment, ``(alpha x, -delta y)``; ``u`` is ``[..., 2]``."""
        return u * torch.tensor([self.alpha, -self.delta], dtype=u.dtype, device=u.device)

    def interaction_terms(self, u: Tensor) -> Tensor:
        """The part a network learns in the UDE experiment, ``(-beta x y, gamma x y)``."""
        xy = u[..., 0:1] * u[..., 1:2]
        return xy * torch.tensor([-self.beta, self.gamma], dtype=u.dtype, device=u.device)

    def rhs(self, t: Tensor | float, u: Tensor) -> Tensor:
        """``du/dt`` for states ``u`` of shape ``[..., 2]`` (autonomous: ``t`` is unused)."""
        return self.linear_terms(u) + self.interaction_terms(u)

    def invariant(self, u: Tensor) -> Tensor:
        """The conserved quantity ``V = gamma x - delta ln x + beta y - alpha ln y``, ``[...]``."""
        x, y = u[..., 0], u[..., 1]
        return self.gamma * x - self.delta * torch.log(x) + self.beta * y - self.alpha * torch.log(y)

    # -- reference solver ------------------------------------------------------------------------------
    def times(self, n_times: int | None = None) -> Tensor:
        return torch.linspace(0.0, self.t_end, n_times or self.n_times, **self.factory)

    def sample_initial_states(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` initial states uniform in the ``u0_low``/``u0_high`` box, ``[n, 2]``."""
        low = torch.tensor(self.u0_low, dtype=torch.float64)
        high = torch.tensor(self.u0_high, dtype=torch.float64)
        draw = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        return (low + (high - low) * draw).to(**self.factory)

    def integrate(self, u0: Tensor, t: Tensor) -> tuple[Tensor, int]:
        """Integrate a batch of initial states with adaptive Dormand–Prince 5(4).

        Parameters
        ----------
        u0
            Initial states, ``[N, 2]``.
        t
            Output times, ``[T]``, increasing, ``t[0]`` the initial time.

        Returns
        -------
        u, nfe
            States ``[N, T, 2]`` and the number of right-hand-side evaluations. The whole batch
            shares one step-size sequence; the error test uses the max norm, so every element
            meets ``rtol``/``atol`` whatever the batch size. The solver is made to step onto each
            output time, so outputs are step values rather than interpolants.
        """
        rtol, atol = self._tolerances(u0.dtype)
        nfe = 0

        def f(t_: Tensor, u: Tensor) -> Tensor:
            nonlocal nfe
            nfe += 1
            return self.rhs(t_, u)

        options = {"norm": lambda e: e.abs().max(), "step_t": t}
        span = float(t[-1] - t[0])
        with progress.track_steps(span, f"lotka_volterra: time to {span:g}") as bar:
            if bar.active:  # torchdiffeq calls this after each accepted step (already a host sync)
                f.callback_accept_step = lambda t0, y0, dt: bar.advance(float(dt))
            u = odeint(f, u0, t, rtol=rtol, atol=atol, method="dopri5", options=options)
            if bar.active:
                bar.advance(span - bar.completed)  # the rounding left by summing the steps
        return u.transpose(0, 1), nfe  # odeint puts time first: [T, N, 2]

    def _tolerances(self, dtype: torch.dtype) -> tuple[float, float]:
        floor = 100 * torch.finfo(dtype).eps
        return max(self.rtol, floor), max(self.atol, floor)

    def solve(self, resolution: int | None = None, n_samples: int = 1, seed: int = 0) -> Solution:
        """Trajectories on ``resolution`` equispaced times (default ``n_times``), clean and noisy.

        ``n_samples=1`` integrates from ``u0``; more draw initial states from the box. The
        generator seeded by ``seed`` draws the initial states first, then the noise.

        Returns
        -------
        Solution
            fields ``u`` and ``u_noisy`` ``[N, T, 2]`` (columns: prey ``x``, predator ``y``),
            grid ``t`` ``[T]``, attrs with the parameters, the noise level, the tolerances, the
            number of right-hand-side evaluations and the largest relative drift of ``V``.
        """
        n_times = self.n_times if resolution is None else int(resolution)
        if n_times < 2:
            raise ValueError(f"resolution: need at least 2 time samples, got {n_times}")
        if n_samples < 1:
            raise ValueError(f"n_samples: must be >= 1, got {n_samples}")
        gen = torch.Generator().manual_seed(int(seed))
        start = time.perf_counter()
        if n_samples == 1:
            u0 = torch.tensor([self.u0], **self.factory)
        else:
            u0 = self.sample_initial_states(n_samples, gen)
        t = self.times(n_times)
        u, nfe = self.integrate(u0, t)
        wall = time.perf_counter() - start
        scale = self.noise * u.mean(dim=1, keepdim=True)  # [N, 1, 2]: 5 % of each state's mean
        eps = torch.randn(u.shape, generator=gen, dtype=torch.float64).to(**self.factory)
        v = self.invariant(u)
        drift = ((v - v[:, :1]).abs() / v[:, :1].abs()).max().item()
        rtol, atol = self._tolerances(u.dtype)
        return Solution(
            fields={"u": u, "u_noisy": u + scale * eps},
            grid={"t": t},
            attrs={
                "solver": "dopri5 (torchdiffeq)",
                **self.params,
                "t_end": self.t_end,
                "noise_level": self.noise,
                "rtol": rtol,
                "atol": atol,
                "nfe": nfe,
                "invariant_rel_drift": drift,
                "wall_time_s": wall,
            },
        )


def _pair(name: str, values: Sequence[float]) -> tuple[float, float]:
    values = tuple(float(v) for v in values)
    if len(values) != 2 or min(values) <= 0:
        raise ValueError(f"{name}: need two positive numbers (x, y), got {list(values)}")
    return values
