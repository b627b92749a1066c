"""Neural ordinary differential equations (Chen et al. 2018): ``du/dt = f_theta(u)`` with an MLP,
integrated by torchdiffeq and trained on observed trajectories through the solver.

The loss is the mean squared misfit of the integrated trajectory to the observations, each state
scaled by its range in the data (so predator and prey count alike). Gradients flow by
backpropagation through the solver's operations (exact for the discrete scheme) or by the adjoint
method (``adjoint``; memory independent of the number of steps). Long windows can be trained on
mini-batches of short sub-trajectories that start at observed states (``segments``), which keeps
early training away from the poor local minima of one long shooting problem.

A neural ODE fits the window it saw and has no reason to be right outside it: the UDE
(:mod:`sciml_cli.models.ude`) keeps the known terms and learns only the rest.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import Tensor, nn

from ..constraints import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from ..nn import MLP
from ..nn.mlp import Activation, Init
from ..numerics.metrics import error_metrics
from ..numerics.ode import Method, check_solver, integrate
from ..problems.base import Evaluation, Trajectories
from .base import Model

log = logging.getLogger(__name__)
#: the loss of a trajectory the solver could not finish
DIVERGED = 1e10


class NeuralODE(Model):
    """``du/dt = s * MLP(u)``, inputs mapped from the data's range to ``[-1, 1]`` and outputs
    scaled by ``s`` = range / time window per state, so an O(1) network output crosses the data's
    range once over the window.

    Parameters
    ----------
    problem
        Supplies the observed trajectories (the trajectories view).
    width, depth, activation, init
        The MLP (:class:`sciml_cli.nn.MLP`): hidden units, hidden layers, nonlinearity
        (``gaussian`` is the radial basis function of Rackauckas et al. 2020) and initialisation.
    method, step_size, rtol, atol
        The torchdiffeq solver: ``euler``, ``midpoint``, ``rk4`` with ``step_size``;
        ``bosh3``, ``dopri5``, ``dopri8`` with the tolerances.
    adjoint
        Gradients by the adjoint method instead of backpropagation through the solver.
    learn_u0
        Learn the initial state, starting from the first observation (which is noisy too);
        otherwise integrate from the first observation as measured.
    segments, segment_length, segments_until
        ``null``: fit whole trajectories. ``B``: each step fits ``B`` sub-trajectories of
        ``segment_length`` samples, each started at its first observed state, at random offsets
        drawn from the step and the seed; from step ``segments_until`` on (``null``: never) the
        whole trajectories, e.g. for L-BFGS after Adam on segments.
    loss_weights
        Weight of the ``data`` term.
    max_steps
        An adaptive solve gives up after this many steps (its trajectory is then NaN, its loss
        :data:`DIVERGED`): a line search that probes diverging or stiff coefficients costs
        seconds, not minutes and gigabytes. The presets' fits take 10-50 steps.
    """

    requires = (Trajectories,)
    loss_terms = ("data",)

    def __init__(
        self,
        problem: Trajectories,
        width: PositiveInt = 32,
        depth: PositiveInt = 2,
        activation: Activation = "tanh",
        init: Init = "xavier_normal",
        method: Method = "dopri5",
        step_size: PositiveFloat | None = None,
        rtol: PositiveFloat = 1e-6,
        atol: PositiveFloat = 1e-8,
        adjoint: bool = False,
        learn_u0: bool = True,
        segments: PositiveInt | None = None,
        segment_length: PositiveInt = 10,
        segments_until: NonNegativeInt | None = None,
        loss_weights: dict[str, NonNegativeFloat] | None = None,
        max_steps: PositiveInt = 2000,
    ) -> None:
        super().__init__({"data": 1.0, **(loss_weights or {})})
        check_solver(method, step_size, rtol, atol)
        self.method, self.step_size, self.rtol, self.atol = method, step_size, rtol, atol
        self.max_steps = max_steps
        self.adjoint = bool(adjoint)
        data = problem.trajectories()
        n_times = data.t.numel()
        if segments is not None and segment_length < 2:
            raise ValueError(f"model.segment_length: need at least 2 samples, got {segment_length}")
        if segments is not None and segment_length > n_times:
            raise ValueError(f"model.segment_length: the data have {n_times} samples, got {segment_length}")
        if segments is not None and not _uniform(data.t):
            raise ValueError("model.segments: sub-trajectories need equispaced observation times")
        self.segments, self.segment_length, self.segments_until = segments, segment_length, segments_until
        self.state_names = tuple(problem.state_names)
        bounds = problem.state_bounds()
        n = len(bounds)
        span = float(data.t[-1] - data.t[0])
        ranges = torch.tensor([max(hi - lo, 1e-12) for lo, hi in bounds])
        self.register_buffer("state_scale", ranges)
        self.register_buffer("out_scale", ranges / span)
        self.net = MLP(n, n, width, depth, activation, init, input_bounds=bounds)
        u0 = data.observed[:, 0].detach().clone().to(torch.get_default_dtype())
        if learn_u0:
            self.u0 = nn.Parameter(u0)
        else:
            self.register_buffer("u0", u0)
        self._problem = problem

    # -- dynamics ---------------------------------------------------------------------------------
    def rhs(self, u: Tensor) -> Tensor:
        """``du/dt`` at states ``u`` ``[..., S]``."""
        return self.out_scale * self.net(u)

    def trajectory(self, u0: Tensor, t: Tensor) -> Tensor:
        """States ``[N, T, S]`` from initial states ``u0`` ``[N, S]`` at times ``t`` ``[T]``."""
        return self._integrate(self.rhs, u0, t)

    def _integrate(self, f, u0: Tensor, t: Tensor) -> Tensor:
        return integrate(f, u0, t, self.method, self.step_size, self.rtol, self.atol,
                         adjoint=self.adjoint, params=self.parameters(),
                         max_steps=self.max_steps).transpose(0, 1)

    def _safe_trajectory(self, u0: Tensor, t: Tensor, f=None) -> Tensor:
        """The trajectory, or NaN where the solver gave up (a diverging or stiff candidate; the
        loss is then :data:`DIVERGED` and validation scores it as worst)."""
        try:
            return self._integrate(f or self.rhs, u0, t)
        except AssertionError as err:  # torchdiffeq's "underflow in dt", "max_num_steps exceeded"
            log.warning("ODE solver failed (%s); the trajectory is NaN", err)
            return torch.full((u0.shape[0], t.numel(), u0.shape[1]), math.nan, dtype=u0.dtype, device=u0.device)

    def _window_and_after(self, data, f=None) -> Tensor:
        """The trajectory ``[N, T + T2, S]`` from the (learned) initial state over the fit
        window, then on from its last state over the extrapolation window: a model that blows up
        after the window is still scored inside it."""
        inside = self._safe_trajectory(self.u0, data.t, f)
        t = torch.cat([data.t[-1:], data.t_extrapolate])
        after = self._safe_trajectory(inside[:, -1], t, f)[:, 1:]
        return torch.cat([inside, after], 1)

    # -- training ---------------------------------------------------------------------------------
    def batch(self, problem: Trajectories, step: int, seed: int) -> dict[str, Tensor]:
        data = problem.trajectories()
        if self.segments is None or (self.segments_until is not None and step >= self.segments_until):
            return {"target": data.observed, "whole": torch.ones(())}
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        n, t = data.observed.shape[:2]
        which = torch.randint(0, n, (self.segments,), generator=gen)
        start = torch.randint(0, t - self.segment_length + 1, (self.segments,), generator=gen)
        idx = start[:, None] + torch.arange(self.segment_length)
        return {"target": data.observed[which[:, None], idx]}  # [B, L, S]

    def shard(self, batch: dict[str, Tensor], rank: int, world: int) -> dict[str, Tensor]:
        """Disjoint sub-trajectories per rank; the whole trajectory (one sample) is every
        rank's."""
        return batch if "whole" in batch else super().shard(batch, rank, world)

    def loss(self, problem: Trajectories, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        target = batch["target"]
        t = problem.trajectories().t
        if "whole" in batch:
            pred = self._safe_trajectory(self.u0, t)
        else:
            pred = self._safe_trajectory(target[:, 0], t[: target.shape[1]] - t[0])
        if not torch.isfinite(pred).all():
            # a point where the solver gave up, as L-BFGS line searches probe: a loss above any
            # trajectory's, without gradient, so the search steps back instead of the run stopping
            anchor = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            return {"data": anchor + DIVERGED}
        return {"data": ((pred - target) / self.state_scale).pow(2).mean()}

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self, problem: Trajectories, resolution: int | None = None, split: str = "test") -> Evaluation:
        """From the (learned) initial state over the fit window and the extrapolation window,
        against the noise-free truth: ``rel_l2`` in the fit window (the validation metric),
        ``rel_l2_extrapolation`` after it, ``rel_l2_data`` against the noisy observations."""
        with torch.no_grad():
            data = problem.trajectories()
            t = torch.cat([data.t, data.t_extrapolate])
            pred = self._window_and_after(data)
            metrics, reference = _scores(pred, data)
        return Evaluation(metrics, pred[0], reference[0], {"t": t})

    def figures(self, problem: Trajectories, evaluation: Evaluation, title: str) -> dict[str, Any]:
        from .. import plotting

        data = problem.trajectories()
        curves = {"neural ODE": evaluation.prediction}
        return {"": plotting.trajectory_figure(data, curves, self.state_names, title)}


def _uniform(t: Tensor) -> bool:
    dt = t.diff()
    return bool((dt - dt[0]).abs().max() <= 1e-4 * dt[0].abs()) if dt.numel() else True


def _rel(a: Tensor, b: Tensor) -> float:
    return error_metrics(a, b)["rel_l2"]


def _scores(pred: Tensor, data) -> tuple[dict[str, float], Tensor]:
    """Metrics of a trajectory ``[N, T + T2, S]`` over the fit window and after it, and the truth
    on the same times."""
    n = data.t.numel()
    metrics = {"rel_l2": _rel(pred[:, :n], data.truth),
               "rel_l2_extrapolation": _rel(pred[:, n:], data.truth_extrapolate),
               "rel_l2_data": _rel(pred[:, :n], data.observed)}
    return metrics, torch.cat([data.truth, data.truth_extrapolate], dim=1)
