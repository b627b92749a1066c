"""The Deep Ritz method (E & Yu 2018): a network that minimises the problem's variational energy.

For ``-Laplace u = f`` the solution minimises the Dirichlet energy
``E(u) = int_Omega |grad u|^2 / 2 - f u dx`` among functions with the boundary data. The method
estimates ``E`` by quadrature on points drawn afresh at every step (E & Yu use new Monte-Carlo
points each step; here scrambled Sobol points, a randomised quasi-Monte-Carlo rule), so the
optimiser sees an unbiased, low-variance estimate of the true energy rather than a fixed
discretisation of it, and imposes the boundary data by a penalty
``penalty * int_boundary (u - g)^2 ds`` or exactly through ``u = g + phi N`` with ``phi`` a
distance function (``hard_constraints``).

Compared with the PINN on the same problem, the energy needs first derivatives only and is
meaningful for solutions with singular gradients (the L-shape, the slit), where the strong form's
residual is not square integrable.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..constraints import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from ..nn import MLP, ResNet
from ..nn.mlp import Activation, Init
from ..problems.base import EnergyFunctional
from .field import FieldModel


class DRM(FieldModel):
    """Deep Ritz method.

    Parameters
    ----------
    problem
        Supplies the coordinates, the domain, the energy density and the boundary data.
    network
        ``resnet``: E & Yu's residual blocks (two layers of ``width`` with a skip connection,
        ``depth`` blocks). ``mlp``: the fully connected network of :class:`sciml_cli.nn.MLP`
        with ``depth`` hidden layers (the PINN's, for like-for-like comparisons).
    width, depth, activation, init
        The network's width, its blocks (``resnet``) or hidden layers (``mlp``), nonlinearity
        (E & Yu use ``relu3``, ``max(x, 0)^3``) and initialisation.
    hard_constraints
        Exact boundary data through the problem's distance-function transform; the boundary term
        then vanishes and is left out.
    penalty
        Weight ``beta`` of the boundary penalty (E & Yu use 500).
    n_interior, n_boundary
        Quadrature points per step in the domain and on the boundary.
    resample_every
        Fresh points every this many steps (1, E & Yu's choice).
    resample_until, fixed_scale
        From step ``resample_until`` on (``null``: never) one fixed set of ``fixed_scale`` times
        as many points is used: L-BFGS needs a fixed objective, and a finer quadrature of it
        keeps the minimiser of the discrete energy close to that of the true one.
    loss_weights
        Weight of the ``energy`` term (the boundary term's is ``penalty``).
    """

    requires = (EnergyFunctional,)
    loss_terms = ("energy", "boundary")

    def __init__(
        self,
        problem: EnergyFunctional,
        network: Literal["resnet", "mlp"] = "resnet",
        width: PositiveInt = 10,
        depth: PositiveInt = 4,
        activation: Activation = "relu3",
        init: Init = "xavier_normal",
        hard_constraints: bool = False,
        penalty: PositiveFloat = 500.0,
        n_interior: PositiveInt = 1000,
        n_boundary: PositiveInt = 400,
        resample_every: PositiveInt = 1,
        resample_until: NonNegativeInt | None = None,
        fixed_scale: PositiveInt = 1,
        loss_weights: dict[str, NonNegativeFloat] | None = None,
    ) -> None:
        weights = {"energy": 1.0, **(loss_weights or {})}
        weights["boundary"] = float(penalty)
        super().__init__(weights)
        if problem.n_outputs != 1:
            raise ValueError(f"model: the Deep Ritz method here takes scalar problems; {type(problem).__name__} has "
                             f"{problem.n_outputs} outputs")
        self.check_constraint(problem, hard_constraints)
        self.coords = tuple(problem.coords)
        d = len(self.coords)
        if network == "resnet":
            self.net = ResNet(d, 1, width, depth, activation, init, input_bounds=problem.bounds)
        else:
            self.net = MLP(d, 1, width, depth, activation, init, input_bounds=problem.bounds)
        self.hard, self.penalty = bool(hard_constraints), float(penalty)
        self.n_interior, self.n_boundary, self.resample_every = n_interior, n_boundary, resample_every
        self.resample_until, self.fixed_scale = resample_until, fixed_scale
        self.terms = ["energy"] + ([] if self.hard else ["boundary"])
        self._problem = problem
        self._cache: tuple | None = None

    def batch(self, problem: EnergyFunctional, step: int, seed: int) -> dict[str, Tensor]:
        fixed = self.resample_until is not None and step >= self.resample_until
        draw = -1 if fixed else step // self.resample_every
        key = (seed, draw, problem.device, problem.dtype)
        if self._cache is None or self._cache[0] != key:
            s = 2 * (seed * 1_000_003 + draw) + (10_000_019 if fixed else 0)  # distinct scrambles per draw and set
            scale = self.fixed_scale if fixed else 1
            batch = {"interior": problem.sample_interior(scale * self.n_interior, s)}
            if not self.hard:
                batch["boundary"] = problem.sample_boundary(scale * self.n_boundary, s + 1)
            self._cache = (key, batch)
        return self._cache[1]

    def loss(self, problem: EnergyFunctional, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``energy``: the domain's measure times the mean energy density (the quadrature of
        ``E``); ``boundary``: the boundary's measure times the mean squared misfit of the data."""
        x = batch["interior"].detach().requires_grad_(True)
        with torch.enable_grad():
            u = self(x)
            (grad,) = torch.autograd.grad(u.sum(), x, create_graph=True)
        terms = {"energy": problem.measure * problem.energy_density(u, grad, x).mean()}
        if not self.hard:
            xb = batch["boundary"]
            terms["boundary"] = problem.boundary_measure * (self(xb) - problem.boundary_value(xb)).pow(2).mean()
        return terms
