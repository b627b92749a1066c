"""Physics-informed neural network (Raissi, Perdikaris & Karniadakis 2019).

A fully connected network ``u_theta(x, t)`` trained on the mean squared PDE residual at
collocation points plus the initial- and boundary-condition residuals.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ..constraints import NonNegativeInt, PositiveInt
from ..problems.base import Evaluation, PhysicsResidual
from .base import Model

Activation = Literal["tanh", "sigmoid", "relu", "prelu", "elu", "softplus", "arctan", "identity"]
Init = Literal["xavier_normal", "xavier_uniform", "kaiming_normal", "kaiming_uniform", "torch_default"]


class Arctan(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.atan(x)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "arctan": Arctan,
    "identity": nn.Identity,
}


class PINN(Model):
    """Fully connected PINN.

    Parameters
    ----------
    problem
        Supplies the input coordinates, their bounds and the number of outputs.
    width, depth
        Hidden units per layer and number of hidden layers.
    activation
        Hidden nonlinearity. ``relu`` has a zero second derivative, so it cannot represent
        second-order PDE residuals; it is offered for first-order problems and comparison.
    init
        Weight initialisation; biases start at zero. Glorot (``xavier_*``) suits tanh
        (Glorot & Bengio 2010), He (``kaiming_*``) suits ReLU-like units (He et al. 2015).
    n_interior, n_initial, n_boundary
        Collocation points per term, drawn from a scrambled Sobol sequence.
    resample_every
        Draw fresh points every this many steps; 0 keeps one set (needed by L-BFGS).
    loss_weights
        Weights of the ``residual``, ``initial`` and ``boundary`` terms.
    """

    view = PhysicsResidual

    def __init__(
        self,
        problem: PhysicsResidual,
        width: PositiveInt = 32,
        depth: PositiveInt = 4,
        activation: Activation = "tanh",
        init: Init = "xavier_normal",
        n_interior: PositiveInt = 2000,
        n_initial: PositiveInt = 200,
        n_boundary: PositiveInt = 200,
        resample_every: NonNegativeInt = 0,
        loss_weights: dict[str, float] | None = None,
    ) -> None:
        super().__init__(loss_weights or {"residual": 1.0, "initial": 1.0, "boundary": 1.0})
        d_in = len(problem.coords)
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(d_in if i == 0 else width, width), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(width, problem.n_outputs))
        self.net = nn.Sequential(*layers)
        self._initialise(init)
        bounds = torch.tensor(problem.bounds, dtype=torch.get_default_dtype())
        # inputs are mapped to [-1, 1] so the first layer sees the same scale on every axis
        self.register_buffer("lo", bounds[:, 0])
        self.register_buffer("hi", bounds[:, 1])
        self.n_interior, self.n_initial, self.n_boundary = n_interior, n_initial, n_boundary
        self.resample_every = resample_every
        self._cache: tuple[tuple, dict[str, Tensor]] | None = None

    def _initialise(self, init: str) -> None:
        if init == "torch_default":
            return
        for m in self.net:
            if isinstance(m, nn.Linear):
                getattr(nn.init, init + "_")(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, points: Tensor) -> Tensor:
        """``[N, d]`` points -> ``[N, n_outputs]`` values."""
        return self.net(2.0 * (points - self.lo) / (self.hi - self.lo) - 1.0)

    def batch(self, problem: PhysicsResidual, step: int, seed: int) -> dict[str, Tensor]:
        draw = step // self.resample_every if self.resample_every else 0
        key = (seed, draw, problem.device, problem.dtype)
        if self._cache is None or self._cache[0] != key:
            s = 3 * (seed * 1_000_003 + draw)  # distinct Sobol scrambles per term and draw
            self._cache = key, {
                "interior": problem.sample_interior(self.n_interior, s),
                "initial": problem.sample_initial(self.n_initial, s + 1),
                "boundary": problem.sample_boundary(self.n_boundary, s + 2),
            }
        return self._cache[1]

    def loss(self, problem: PhysicsResidual, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {
            "residual": problem.residual(self, batch["interior"]).pow(2).mean(),
            "initial": problem.initial_residual(self, batch["initial"]).pow(2).mean(),
            "boundary": problem.boundary_residual(self, batch["boundary"]).pow(2).mean(),
        }

    @torch.no_grad()
    def evaluate(self, problem: PhysicsResidual, resolution: int | None = None, split: str = "test") -> Evaluation:
        grid, reference = problem.reference(resolution)
        axes = [grid[c] for c in problem.coords]
        points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(axes))
        chunk = 65536
        pred = torch.cat([self(points[i : i + chunk]) for i in range(0, len(points), chunk)])
        pred = pred.reshape(reference.shape)
        return Evaluation(problem.metrics(pred, reference), pred, reference, grid)
