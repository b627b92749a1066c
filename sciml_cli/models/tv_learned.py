"""TV-regularised gradient descent with learned weights: ``K`` unrolled steps on
``D(a, b) + lambda TV(a)`` from FBP in which only ``lambda``, the steps ``tau_k`` and (with
``acceleration=nesterov``) the momenta ``beta_k`` are trained, end to end on the reconstruction
error (the most rigid end of "as learnable as you like" of the course material; a bilevel choice of
the regularisation weight in the spirit of Haber & Tenorio 2003). No network: a few hundred
numbers at most::

    none:      a <- a - tau_k grad J(a)
    nesterov:  a' = y - tau_k grad J(y);  y <- a' + beta_k (a' - a);  a <- a'

Nesterov's accelerated gradient (Nesterov 1983; the momentum schedule ``k / (k + 3)`` of
Chambolle & Dossal 2015 as the start) reaches in 100 steps what plain gradient descent needs
thousands of steps for on the smoothed TV, whose gradient's Lipschitz constant grows like
``1 / tv_epsilon``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..constraints import NonNegativeFloat, PositiveFloat, PositiveInt
from ..problems.base import InverseProblem
from .unrolled import Unrolled

#: the first momenta of the schedule are 0; a logit needs them inside (0, 1)
_MOMENTUM_FLOOR = 1e-3


class TVLearned(Unrolled):
    """(Accelerated) gradient descent on ``D + lambda R`` with learned ``lambda``, steps and
    momenta.

    Parameters
    ----------
    iterations
        Unrolled steps ``K``.
    reg_weight
        Initial ``lambda``; null: the problem's ``reg_weight``.
    step_scale
        Initial steps as a multiple of ``1 / L`` (any value below 2 decreases the objective of
        plain gradient descent).
    acceleration
        ``nesterov``: momentum ``beta_k`` per step, learned through a logistic function so it
        stays in (0, 1), starting at ``k / (k + 3)``; ``none``: plain gradient descent.
    batch_size, loss_weights
        See :class:`Unrolled`.
    """

    def __init__(
        self,
        problem: InverseProblem,
        iterations: PositiveInt = 100,
        reg_weight: PositiveFloat | None = None,
        step_scale: PositiveFloat = 1.0,
        acceleration: Literal["none", "nesterov"] = "nesterov",
        batch_size: PositiveInt = 8,
        loss_weights: dict[str, NonNegativeFloat] | None = None,
    ) -> None:
        super().__init__(problem, batch_size=batch_size, loss_weights=loss_weights)
        self.iterations = int(iterations)
        self.acceleration = acceleration
        self._learn_weights(problem, reg_weight, step_scale)
        if acceleration == "nesterov":
            beta = [min(max(k / (k + 3), _MOMENTUM_FLOOR), 1 - _MOMENTUM_FLOOR) for k in range(self.iterations)]
            self.momentum_logit = nn.Parameter(torch.tensor([math.log(b / (1 - b)) for b in beta],
                                                            dtype=torch.float64))

    def momenta(self) -> Tensor | None:
        """``beta_k`` of the accelerated scheme (None without acceleration)."""
        return torch.sigmoid(self.momentum_logit) if self.acceleration == "nesterov" else None

    def learned(self) -> dict[str, Any]:
        out = super().learned()
        beta = self.momenta()
        if beta is not None:
            beta = beta.detach().cpu().tolist()
            out.update(momentum_last=beta[-1], momentum=[round(b, 6) for b in beta])
        return out

    def reconstruct(self, problem: InverseProblem, data: Tensor) -> Tensor:
        a = problem.initial(data)
        lam = self.log_reg_weight.exp()
        steps = self.log_steps.exp()
        beta = self.momenta()
        y = a
        for k in range(self.iterations):
            step = y - steps[k] * (problem.data_fidelity_gradient(y, data) + lam * problem.regulariser_gradient(y))
            y = step if beta is None else step + beta[k] * (step - a)
            a = step
        return a
