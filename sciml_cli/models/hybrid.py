"""Hybrid solver-in-the-loop model (Um et al. 2020, "Solver-in-the-loop: learning from
differentiable physics to interact with iterative PDE-solvers"; Kochkov et al. 2021): a network
corrects a cheap coarse solver at every step,

    correct=state:    s' = C(s);  s <- s' + delta NN(s' / sigma, (s' - s) / rho)
    correct=forcing:  s <- C(s; f = (delta / dt) NN(s / sigma))     (a learned source inside the step)

where ``C`` is the problem's coarse step on the coarse grid, ``sigma`` the standard deviation of
the training states, ``rho`` that of the coarse step's increments and ``delta`` that of its
one-step error (the correction the network has to supply), so that the network works on values
of order one whatever the size of the coarse solver's error. The state correction sees the
coarse increment beside the state: a time-stepping error is a function of how the tendency
changes over the step (Heun's correction of Euler is the difference of the tendencies at both
ends), which the increment carries and a network would otherwise have to rebuild from the state. Training unrolls ``unroll`` steps from states of the restricted fine
reference and back-propagates through the solver; the loss is the mean squared error of every
unrolled state against the reference, in units of ``delta`` (of order one at the start, whatever
the size of the coarse solver's error: in units of the state a loss of 1e-8 would fall below
Adam's epsilon and stall the training). ``unroll=1`` is Um et al.'s
non-interacting baseline (a supervised one-step correction); ``unroll`` of 4 to 16 is the solver
in the loop, which learns to correct the states its own corrections lead to. ``detach=true``
stops the gradients between steps (each step still sees the states of the rollout).
``onestep_phase`` names an optimiser phase trained on one-step corrections before the unrolled
phases (``optim=adam_curriculum``): the unrolled loss then starts from the non-interacting
model's optimum instead of from the coarse solver, and its gradients through the unrolled steps
refine a correction that is already good on single steps.

The projection of the network starts at zero, so an untrained hybrid is its coarse solver,
exactly. Evaluation rolls out far beyond the training unroll on unseen initial conditions and
compares with the coarse solver alone and with the same solver on 2x and 4x finer grids.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..constraints import NonNegativeFloat, PositiveInt
from ..errors import ConfigError
from ..nn import FourierNet, PeriodicResNet, StencilMLP
from ..problems.base import DifferentiableSolver, Evaluation, Solution, whole_ratio
from .base import Model

#: training seeds: ``seed * SEED_STRIDE + step``
SEED_STRIDE = 10_000_019
#: finer grids the plain solver is compared on in ``sciml eval``, as multiples of the coarse one
FINER = (2, 4)


def _rel_l2(prediction: Tensor, reference: Tensor, dims: int) -> Tensor:
    """Relative L2 error over the last ``dims`` axes; ``inf`` where the prediction has blown up
    (so a diverged rollout averages to ``inf``, never to a ``nan`` that every comparison fails)."""
    diff = (prediction - reference).double().flatten(-dims)
    error = torch.linalg.vector_norm(diff, dim=-1) / torch.linalg.vector_norm(reference.double().flatten(-dims), dim=-1)
    return error.nan_to_num(nan=math.inf)


def _diverged_step(curve: Tensor) -> int | None:
    """The first step (from 1) whose mean error exceeds 100 %, where the rollout has lost the
    flow; ``None`` if it never does."""
    lost = (curve > 1).nonzero()
    return int(lost[0, 0]) + 1 if len(lost) else None


class Hybrid(Model):
    """A coarse differentiable solver with a learned correction, trained through unrolled steps.

    Parameters
    ----------
    problem
        Supplies the coarse step, the fine reference and the restriction (differentiable-solver
        view).
    unroll
        Solver steps per training sample (1: one-step supervised correction; 4-16: solver in
        the loop).
    correct
        ``state``: the network's output is added to the state after each coarse step;
        ``forcing``: it is a source term inside the step.
    detach
        Stop the gradients between unrolled steps.
    onestep_phase
        The optimiser phase, by name, whose training batches are single steps (``unroll`` 1);
        ``None``: every phase unrolls ``unroll`` steps.
    network
        ``cnn``: periodic residual CNN (``width``, ``blocks``, ``kernel``); ``fno``: Fourier
        layers (``width``, ``modes``, ``blocks`` layers); ``stencil``: one hidden layer of
        ``width`` on each point's ``kernel``-wide stencil, the cheapest per step.
    n_train, train_steps
        Training trajectories from random initial conditions and their length in coarse steps.
    n_val, val_steps, n_test, test_steps
        Unseen trajectories and rollout lengths for validation and ``sciml eval``.
    batch_size
        Sub-trajectories per training step.
    loss_weights
        Weight of the ``rollout`` term.
    """

    requires = (DifferentiableSolver,)
    loss_terms = ("rollout",)

    def __init__(
        self,
        problem: DifferentiableSolver,
        unroll: PositiveInt = 8,
        correct: Literal["state", "forcing"] = "state",
        detach: bool = False,
        onestep_phase: str | None = None,
        network: Literal["cnn", "fno", "stencil"] = "cnn",
        width: PositiveInt = 16,
        blocks: PositiveInt = 3,
        kernel: PositiveInt = 3,
        modes: PositiveInt = 8,
        n_train: PositiveInt = 32,
        train_steps: PositiveInt = 60,
        n_val: PositiveInt = 8,
        val_steps: PositiveInt = 50,
        n_test: PositiveInt = 16,
        test_steps: PositiveInt = 100,
        batch_size: PositiveInt = 16,
        loss_weights: dict[str, NonNegativeFloat] | None = None,
    ) -> None:
        super().__init__(loss_weights=loss_weights)
        if correct not in ("state", "forcing"):
            raise ValueError(f"correct: {correct!r} is not one of state, forcing")
        if network not in ("cnn", "fno", "stencil"):
            raise ValueError(f"network: {network!r} is not one of cnn, fno, stencil")
        if unroll > train_steps:
            raise ConfigError("model.unroll", f"{unroll} steps do not fit in training trajectories of "
                              f"model.train_steps={train_steps}")
        try:
            problem.check_solver()
        except ValueError as err:
            raise ConfigError("", f"problem.{err}") from None
        self.unroll, self.correct, self.detach = int(unroll), correct, bool(detach)
        self.onestep_phase = None if onestep_phase is None else str(onestep_phase)
        #: the unroll of the current phase's training batches (see :meth:`start_phase`)
        self.batch_unroll = self.unroll
        self.n_train, self.train_steps = int(n_train), int(train_steps)
        self.n_val, self.val_steps, self.n_test, self.test_steps = int(n_val), int(val_steps), int(n_test), int(test_steps)
        self.batch_size = int(batch_size)
        self.n_dims, self.resolution, self.dt = int(problem.n_dims), int(problem.coarse_resolution), float(problem.coarse_dt)
        channels = 2 if correct == "state" else 1
        if network != "fno" and kernel > self.resolution:
            raise ConfigError("model.kernel", f"{kernel} points are wider than the coarse grid's {self.resolution}")
        if network == "cnn":
            self.net: nn.Module = PeriodicResNet(self.n_dims, channels, 1, width=width, blocks=blocks, kernel=kernel)
        elif network == "stencil":
            self.net = StencilMLP(self.n_dims, channels, 1, width=width, kernel=kernel)
        else:
            if 2 * modes > self.resolution:
                raise ConfigError("model.modes", f"{modes} Fourier modes need {2 * modes} points per axis; the "
                                  f"coarse grid has {self.resolution}")
            self.net = FourierNet(self.n_dims, channels, 1, width=width, modes=modes, layers=blocks)
        #: standard deviations of the training states, of the coarse step's increments and of its
        #: one-step error on them (0 until fitted; the checkpoint carries them)
        self.register_buffer("scale", torch.zeros((), dtype=torch.float64))
        self.register_buffer("increment_scale", torch.zeros((), dtype=torch.float64))
        self.register_buffer("correction_scale", torch.zeros((), dtype=torch.float64))
        self._data: dict[str, tuple[tuple, Tensor]] = {}

    # -- the scheme ----------------------------------------------------------------------------------
    def advance(self, problem: DifferentiableSolver, state: Tensor,
                scales: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
        """One hybrid step of states ``[B, *S]`` on the coarse grid (``scales``: those of
        :meth:`scales` in the state's dtype, to spare the conversion at every step)."""
        sigma, rho, delta = self.scales(state.dtype) if scales is None else scales
        if self.correct == "forcing":
            forcing = (delta / self.dt) * self._network([state / sigma])
            return problem.coarse_step(state, self.dt, forcing)
        stepped = problem.coarse_step(state, self.dt)
        return torch.addcmul(stepped, delta, self._network([stepped / sigma, (stepped - state) / rho]))

    def scales(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """The spreads ``sigma``, ``rho``, ``delta`` (see the module) in ``dtype``."""
        return self.scale.to(dtype), self.increment_scale.to(dtype), self.correction_scale.to(dtype)

    def _network(self, fields: list[Tensor]) -> Tensor:
        """The network on the input fields ``[B, *S]``, one channel each; ``[B, *S]``."""
        if isinstance(self.net, FourierNet):  # its own layout, spatial axes first: no copies around it
            grid = torch.stack([field.movedim(0, -1) for field in fields], -1)
            return self.net.on_grid(grid).squeeze(-1).movedim(-1, 0)
        if isinstance(self.net, StencilMLP):
            return self.net.on_fields(fields).squeeze(1)
        return self.net(torch.stack(fields, 1)).squeeze(1)

    def rollout(self, problem: DifferentiableSolver, initial: Tensor, n_steps: int) -> Tensor:
        """``[B, n_steps + 1, *S]``: the initial states and ``n_steps`` hybrid steps."""
        states, scales = [initial], self.scales(initial.dtype)
        for _ in range(n_steps):
            states.append(self.advance(problem, states[-1], scales))
        return torch.stack(states, dim=1)

    # -- data ----------------------------------------------------------------------------------------
    def _split(self, problem: DifferentiableSolver, split: str) -> tuple[int, int]:
        return {"train": (self.n_train, self.train_steps), "val": (self.n_val, self.val_steps),
                "test": (self.n_test, self.test_steps)}[split]

    def trajectories(self, problem: DifferentiableSolver, split: str, kind: str = "reference",
                     resolution: int | None = None) -> Tensor:
        """The restricted reference (``kind="reference"``) or the plain coarse solver on
        ``resolution`` points (``kind="solver"``) for ``split``, ``[N, T + 1, *S]``, kept in memory."""
        n, steps = self._split(problem, split)
        key = (kind, split, resolution, n, steps, str(problem.device), problem.dtype)
        name = f"{kind}/{split}/{resolution}"
        cached = self._data.get(name)
        if cached is None or cached[0] != key:
            if kind == "reference":
                data = problem.reference_trajectories(split, n, steps)
            else:
                data = problem.solver_trajectories(split, n, steps, resolution)
            self._data[name] = key, data.to(**problem.factory)
        return self._data[name][1]

    @torch.no_grad()
    def fit_scale(self, problem: DifferentiableSolver) -> None:
        if float(self.scale) > 0:
            return
        data = self.trajectories(problem, "train").double()
        std = float(data.std())
        self.scale.fill_(std if std > 0 else 1.0)
        states = data[:, :-1].flatten(0, 1)
        stepped = torch.cat([problem.coarse_step(chunk, self.dt) for chunk in states.split(256)])
        rho, delta = float((stepped - states).std()), float((stepped - data[:, 1:].flatten(0, 1)).std())
        self.increment_scale.fill_(rho if rho > 0 else self.scale.item())
        self.correction_scale.fill_(delta if delta > 0 else 1e-3 * self.scale.item())

    def start_phase(self, problem: DifferentiableSolver, name: str) -> None:
        self.batch_unroll = 1 if name == self.onestep_phase else self.unroll

    def named_phases(self) -> dict[str, str]:
        return {} if self.onestep_phase is None else {"model.onestep_phase": self.onestep_phase}

    def batch(self, problem: DifferentiableSolver, step: int, seed: int) -> dict[str, Tensor]:
        """``batch_size`` sub-trajectories of the training reference: ``{"initial": [B, *S],
        "targets": [B, k, *S]}`` with ``k`` the current phase's unroll, drawn from a generator
        seeded by ``(seed, step)``."""
        self.fit_scale(problem)
        data = self.trajectories(problem, "train")
        unroll = self.batch_unroll
        g = torch.Generator().manual_seed(int(seed) * SEED_STRIDE + int(step))
        which = torch.randint(data.shape[0], (self.batch_size,), generator=g)
        start = torch.randint(data.shape[1] - unroll, (self.batch_size,), generator=g)
        times = start[:, None] + torch.arange(unroll + 1)
        window = data[which[:, None].to(data.device), times.to(data.device)]
        return {"initial": window[:, 0], "targets": window[:, 1:]}

    def loss(self, problem: DifferentiableSolver, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        state, errors = batch["initial"], []
        scales = self.scales(state.dtype)
        for k in range(batch["targets"].shape[1]):
            state = self.advance(problem, state.detach() if self.detach and k else state, scales)
            errors.append(((state - batch["targets"][:, k]) / scales[2]).pow(2).mean())
        return {"rollout": torch.stack(errors).mean()}

    # -- evaluation ----------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluation_grid(self, problem: DifferentiableSolver) -> int:
        return self.resolution

    def evaluate(self, problem: DifferentiableSolver, resolution: int | None = None, split: str = "test") -> Evaluation:
        """Roll out ``val_steps`` / ``test_steps`` hybrid steps from the unseen initial states
        of ``split`` and score every step against the restricted fine reference.

        Metrics: ``rel_l2`` (mean over samples and steps, the validation metric),
        ``rel_l2_last_step``, ``rel_l2_coarse`` (the coarse solver alone) and
        ``improvement_over_coarse``; ``diverged_step_<method>`` for each method (``hybrid``,
        ``coarse``, ``solver_2x``, ...) whose error passes 100 % during the rollout, the first such
        step (a blown-up rollout scores ``inf``); on the test split also ``rel_l2_solver_2x`` / ``_4x`` (the
        plain solver on 2x, 4x finer grids, its step shrunk alike), their wall times and the
        hybrid's (``seconds_*``, the whole rollout of every test sample), and ``as_accurate_as``:
        the finest of those grids (as a multiple of the coarse one, 1 for none) whose error the
        hybrid's does not exceed (1 when the hybrid diverged)."""
        if resolution not in (None, self.evaluation_grid(problem)):
            raise ValueError(f"resolution: the hybrid runs on its coarse grid (supported: {self.resolution})")
        self.fit_scale(problem)
        reference = self.trajectories(problem, split)
        n_steps = reference.shape[1] - 1
        dtype = next(self.parameters()).dtype
        start = time.perf_counter()
        prediction = self.rollout(problem, reference[:, 0].to(dtype), n_steps)
        if prediction.device.type == "cuda":
            torch.cuda.synchronize(prediction.device)
        seconds = time.perf_counter() - start
        per_step_all = _rel_l2(prediction[:, 1:], reference[:, 1:], self.n_dims)  # [N, T]
        per_step = per_step_all.mean(0)
        curves = {"hybrid": per_step}
        coarse = self.trajectories(problem, split, "solver", self.resolution)
        curves["coarse solver"] = _rel_l2(coarse[:, 1:], reference[:, 1:], self.n_dims).mean(0)
        keys = {"hybrid": "hybrid", "coarse solver": "coarse"}  # curve -> metric suffix
        hybrid_lost = _diverged_step(per_step)
        metrics = {
            "rel_l2": per_step.mean().item(),
            "rel_l2_last_step": per_step[-1].item(),
            "rel_l2_coarse": curves["coarse solver"].mean().item(),
            "max_abs_ratio": (prediction.abs().amax() / reference.abs().amax()).item(),
        }
        metrics["improvement_over_coarse"] = metrics["rel_l2_coarse"] / metrics["rel_l2"]
        if split == "test":
            metrics["seconds_hybrid"] = seconds
            accurate_as = 1
            for factor in FINER:
                n = factor * self.resolution
                if problem.fine_resolution % n:
                    continue
                start = time.perf_counter()
                finer = problem.solver_trajectories(split, reference.shape[0], n_steps, n)
                metrics[f"seconds_solver_{factor}x"] = time.perf_counter() - start
                curves[f"solver on {factor}x grid"] = _rel_l2(finer[:, 1:], reference[:, 1:], self.n_dims).mean(0)
                keys[f"solver on {factor}x grid"] = f"solver_{factor}x"
                metrics[f"rel_l2_solver_{factor}x"] = curves[f"solver on {factor}x grid"].mean().item()
                if metrics["rel_l2"] <= metrics[f"rel_l2_solver_{factor}x"] and hybrid_lost is None:
                    accurate_as = factor  # a diverged hybrid is as accurate as no solver, diverged or not
            metrics["as_accurate_as"] = float(accurate_as)
        for name, curve in curves.items():
            if (step := _diverged_step(curve)) is not None:
                metrics[f"diverged_step_{keys[name]}"] = float(step)
        x = torch.arange(self.resolution, dtype=torch.float64) / self.resolution
        grid = {"t": torch.arange(1, n_steps + 1, dtype=torch.float64) * self.dt,
                **{name: x for name in ("x", "y")[:self.n_dims]}}
        details = {"split": split, "steps": n_steps, "unroll": self.unroll, "dt": self.dt,
                   "curves": {k: [float(f"{v:.4g}") for v in c.tolist()] for k, c in curves.items()}}
        return Evaluation(metrics, prediction[:, 1:], reference[:, 1:], grid,
                          per_sample=per_step_all.mean(1), per_step=per_step, details=details)

    def figures(self, problem: DifferentiableSolver, evaluation: Evaluation, title: str) -> dict[str, Any]:
        """``""``: the error of every method against time; ``snapshots``: reference, coarse
        solver and hybrid of the first sample at four times of the rollout."""
        from .. import plotting

        curves = evaluation.details["curves"]
        t = evaluation.grid["t"]
        figures = {"": plotting.curves_figure(t, curves, "t", "relative L2 error", title=title, ceiling=10.0)}
        steps = evaluation.prediction.shape[1]
        picks = sorted({max(0, min(steps - 1, round(f * steps) - 1)) for f in (0.1, 0.25, 0.5, 1.0)})
        coarse = self.trajectories(problem, evaluation.details["split"], "solver", self.resolution)  # kept in memory
        rows = {"reference": evaluation.reference[0, picks], "coarse solver": coarse[0, 1:][picks]}
        rows["hybrid"] = evaluation.prediction[0, picks]
        figures["snapshots"] = plotting.snapshots_figure(rows, [float(t[i]) for i in picks], title=title)
        return figures

    # -- standing in for the solver ------------------------------------------------------------------
    def surrogate_resolution(self, problem: DifferentiableSolver) -> int | None:
        return problem.fine_resolution

    def surrogate(self, problem: DifferentiableSolver, solution: Solution, batch_size: int | None = None
                  ) -> tuple[Callable[[], Tensor], Tensor, dict[str, Any]]:
        """Roll the hybrid out from the restricted initial states of the solver's trajectories
        and predict their records restricted to the coarse grid. The facts compare the plain
        coarse solver on 1x, 2x and 4x grids on the same states: their errors and wall times,
        and the speedup of the hybrid over the cheapest of them that is at least as accurate
        (``speedup_at_equal_error``; absent when none is, and then the command's ``speedup``
        against the fine reference solver itself is the one at comparable error)."""
        states, record_dt = problem.trajectory_of(solution)
        per_record = whole_ratio(record_dt, self.dt)
        if per_record is None:
            raise ValueError(f"the solver's records every {record_dt:g} are not a whole number of the "
                             f"hybrid's steps of {self.dt:g}")
        dtype = next(self.parameters()).dtype
        reference = problem.restrict(states.to(dtype))
        initial = reference[:, 0]

        def rollout(step: Callable[[Tensor], Tensor], state: Tensor, sub: int = 1) -> Tensor:
            records = [problem.to_coarse(state)]
            for _ in range(reference.shape[1] - 1):
                for _ in range(per_record * sub):
                    state = step(state)
                records.append(problem.to_coarse(state))
            return torch.stack(records, dim=1)

        scales = self.scales(dtype)

        def predict() -> Tensor:
            with torch.no_grad():
                return rollout(lambda s: self.advance(problem, s, scales), initial)

        start = time.perf_counter()
        hybrid = predict()
        t_hybrid = time.perf_counter() - start
        error = _rel_l2(hybrid[:, 1:], reference[:, 1:], self.n_dims).mean().item()
        facts: dict[str, Any] = {"hybrid_steps": per_record * (reference.shape[1] - 1), "hybrid_dt": self.dt,
                                 "hybrid_rel_l2": error}
        total = float(solution.grid["t"][-1]) if "t" in solution.grid else record_dt * (reference.shape[1] - 1)
        # the solver's records before the first one the hybrid starts from (a spin-up) are not its work
        facts["reference_output_share"] = min(1.0, record_dt * (reference.shape[1] - 1) / total)
        equal = None
        for factor in (1, *FINER):
            n = factor * self.resolution
            if problem.fine_resolution % n:
                continue
            fine_state = problem.restrict(states[:, 0].to(dtype), n)
            start = time.perf_counter()
            with torch.no_grad():
                plain = rollout(lambda s, f=factor: problem.coarse_step(s, self.dt / f), fine_state, factor)
            seconds = time.perf_counter() - start
            facts[f"solver_{factor}x_rel_l2"] = _rel_l2(plain[:, 1:], reference[:, 1:], self.n_dims).mean().item()
            facts[f"solver_{factor}x_s"] = seconds
            if equal is None and math.isfinite(error) and facts[f"solver_{factor}x_rel_l2"] <= error:
                equal = factor
        if equal is not None:
            facts["equal_error_grid"] = equal
            facts["speedup_at_equal_error"] = facts[f"solver_{equal}x_s"] / t_hybrid
        return predict, reference, facts
