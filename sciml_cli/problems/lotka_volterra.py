"""Lotka–Volterra predator–prey system, the first example of universal differential equations.

    x' = alpha x - beta x y,      y' = gamma x y - delta y,       x, y > 0.

Two setups (``setup=``), each the default of every value it sets:

- ``ude_paper``: Rackauckas et al. (2020), "Universal Differential Equations for Scientific
  Machine Learning", scenario 1: alpha, beta, gamma, delta = 1.3, 0.9, 0.8, 1.8,
  u0 = (0.44249296, 4.6280594), t in [0, 3] sampled every 0.1, Gaussian noise with a standard
  deviation of 5 % of each state's mean; about half a period (5.47), extrapolated to t = 6.
- ``course``: the textbook parameters alpha, beta, gamma, delta = 1.1, 0.4, 0.1, 0.4 from
  x0 = y0 = 10; t in [0, 20] sampled every 0.25 covers 1.4 periods (14.34), with the same 5 %
  noise, extrapolated over one more window to t = 40.

In both, the linear terms ``alpha x`` and ``-delta y`` are known (``known_terms``) and a network
learns the interaction terms (the trajectories view; also :meth:`linear_terms`,
:meth:`interaction_terms`).

The system has no closed-form solution but conserves

    V(x, y) = gamma x - delta ln x + beta y - alpha ln y,

which the reference solver (adaptive Dormand–Prince 5(4) from torchdiffeq) is checked against.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor
from torchdiffeq import odeint

from .. import progress
from ..constraints import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from ..numerics.metrics import error_metrics
from .base import Problem, Solution, Term, Trajectories, TrajectoryData

COEFFICIENTS = ("alpha", "beta", "gamma", "delta")
#: what each setup sets (every value stays overridable)
SETUPS: dict[str, dict] = {
    "ude_paper": {"alpha": 1.3, "beta": 0.9, "gamma": 0.8, "delta": 1.8, "u0": (0.44249296, 4.6280594),
                  "t_end": 3.0, "n_times": 31, "noise": 0.05, "t_extrapolate": 6.0},
    "course": {"alpha": 1.1, "beta": 0.4, "gamma": 0.1, "delta": 0.4, "u0": (10.0, 10.0),
               "t_end": 20.0, "n_times": 81, "noise": 0.05, "t_extrapolate": 40.0},
}


class LotkaVolterra(Problem, Trajectories):
    """Predator–prey dynamics; trajectories from one or many initial states.

    Parameters
    ----------
    setup
        ``ude_paper`` or ``course`` (see the module): the default of every argument left ``None``.
    alpha, beta, gamma, delta
        Prey growth, predation, predator growth per prey, predator death rates (1 / time).
    u0
        Initial state ``(x, y)`` used when one trajectory is asked for (``n_samples=1``).
    t_end
        Final time; samples are equispaced on ``[0, t_end]``.
    n_times
        Time samples, both ends included (31 gives the paper's step of 0.1 on ``[0, 3]``).
    noise
        Standard deviation of the additive Gaussian noise as a fraction of each state's mean
        over its trajectory (0.05 in the paper).
    t_extrapolate
        End of the extrapolation window ``(t_end, t_extrapolate]`` over which models are scored
        outside their data, sampled at the data's step.
    known_terms
        Coefficients whose terms a UDE is given (default ``alpha`` and ``delta``, the linear
        terms); the others it learns.
    noise_seed
        Seed of the noise of the observed trajectory (the trajectories view).
    u0_low, u0_high
        Box ``[low, high]`` per state from which initial states are drawn uniformly when
        ``n_samples > 1``. It surrounds the equilibrium ``(delta/gamma, alpha/beta)``.
    rtol, atol
        Tolerances of the adaptive integrator, per element of the state (max norm). In float32
        they are raised to ``100 eps`` because tighter ones cannot be met in that precision.
    """

    state_names = ("x", "y")

    def __init__(
        self,
        setup: Literal["ude_paper", "course"] = "ude_paper",
        alpha: PositiveFloat | None = None,
        beta: PositiveFloat | None = None,
        gamma: PositiveFloat | None = None,
        delta: PositiveFloat | None = None,
        u0: Sequence[float] | None = None,
        t_end: PositiveFloat | None = None,
        n_times: PositiveInt | None = None,
        noise: NonNegativeFloat | None = None,
        t_extrapolate: PositiveFloat | None = None,
        known_terms: Sequence[str] = ("alpha", "delta"),
        noise_seed: NonNegativeInt = 0,
        u0_low: Sequence[float] = (0.5, 0.5),
        u0_high: Sequence[float] = (4.0, 5.0),
        rtol: PositiveFloat = 1e-10,
        atol: PositiveFloat = 1e-10,
    ) -> None:
        super().__init__()
        if setup not in SETUPS:
            raise ValueError(f"setup: {setup!r} is not one of {', '.join(SETUPS)}")
        given = {"alpha": alpha, "beta": beta, "gamma": gamma, "delta": delta, "u0": u0, "t_end": t_end,
                 "n_times": n_times, "noise": noise, "t_extrapolate": t_extrapolate}
        v = {k: SETUPS[setup][k] if x is None else x for k, x in given.items()}
        self.setup = setup
        self.alpha, self.beta = float(v["alpha"]), float(v["beta"])
        self.gamma, self.delta = float(v["gamma"]), float(v["delta"])
        self.u0 = _pair("u0", v["u0"])
        t_end, n_times, noise = v["t_end"], v["n_times"], v["noise"]
        self.t_extrapolate = float(v["t_extrapolate"])
        if self.t_extrapolate <= float(t_end):
            raise ValueError(f"t_extrapolate: must exceed t_end = {t_end}, got {self.t_extrapolate}")
        unknown = [k for k in known_terms if k not in COEFFICIENTS]
        if unknown:
            raise ValueError(f"known_terms: {unknown[0]!r} is not one of {', '.join(COEFFICIENTS)}")
        self.known_terms = tuple(known_terms)
        self.noise_seed = int(noise_seed)
        self._data: tuple | None = None
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

    # -- trajectories view ------------------------------------------------------------------------
    def terms(self) -> list[Term]:
        return [Term(0, (1, 0), "alpha"), Term(0, (1, 1), "beta", -1.0),
                Term(1, (1, 1), "gamma"), Term(1, (0, 1), "delta", -1.0)]

    def coefficients(self) -> dict[str, float]:
        return self.params

    def trajectories(self) -> TrajectoryData:
        """The one trajectory from ``u0``: ``n_times`` noisy samples on ``[0, t_end]`` (noise
        scaled by each state's mean there, drawn from ``noise_seed``), then the truth at the same
        step up to ``t_extrapolate``. Integrated in float64, then cast."""
        key = (self.device, self.dtype)
        if self._data is None or self._data[0] != key:
            dt = self.t_end / (self.n_times - 1)
            n_extra = max(1, round((self.t_extrapolate - self.t_end) / dt))
            t = torch.arange(self.n_times + n_extra, dtype=torch.float64) * dt
            u, _ = self.integrate(torch.tensor([self.u0], dtype=torch.float64), t)  # works in u0's dtype
            fit = u[:, : self.n_times]
            gen = torch.Generator().manual_seed(self.noise_seed)
            eps = torch.randn(fit.shape, generator=gen, dtype=torch.float64)
            observed = fit + self.noise_std(fit) * eps
            cast = {"device": self.device, "dtype": self.dtype}
            self._data = (key, TrajectoryData(
                t=t[: self.n_times].to(**cast), observed=observed.to(**cast), truth=fit.to(**cast),
                t_extrapolate=t[self.n_times:].to(**cast), truth_extrapolate=u[:, self.n_times:].to(**cast)))
        return self._data[1]

    def noise_std(self, u: Tensor) -> Tensor:
        """Standard deviation ``[N, 1, S]`` of the noise on trajectories ``u`` ``[N, T, S]``:
        ``noise`` times each state's mean over its trajectory."""
        return self.noise * u.mean(dim=1, keepdim=True)

    def baselines(self) -> dict[str, float]:
        """``noisy_data_rel_l2``: the observations against the truth (what a fit must denoise
        below); ``constant_extrapolation_rel_l2``: the last observation held over the
        extrapolation window."""
        d = self.trajectories()
        held = d.observed[:, -1:].expand_as(d.truth_extrapolate)
        return {"noisy_data_rel_l2": error_metrics(d.observed, d.truth)["rel_l2"],
                "constant_extrapolation_rel_l2": error_metrics(held, d.truth_extrapolate)["rel_l2"]}

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

    def check_solve(self, resolution: int | None = None, n_samples: int = 1) -> None:
        n_times = self.n_times if resolution is None else int(resolution)
        if n_times < 2:
            raise ValueError(f"resolution: need at least 2 time samples, got {n_times}")
        if n_samples < 1:
            raise ValueError(f"n_samples: must be >= 1, got {n_samples}")

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
        self.check_solve(resolution, n_samples)
        n_times = self.n_times if resolution is None else int(resolution)
        gen = torch.Generator().manual_seed(int(seed))
        start = time.perf_counter()
        if n_samples == 1:
            u0 = torch.tensor([self.u0], **self.factory)
        else:
            u0 = self.sample_initial_states(n_samples, gen)
        t = self.times(n_times)
        u, nfe = self.integrate(u0, t)
        wall = time.perf_counter() - start
        scale = self.noise_std(u)  # [N, 1, 2]
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
