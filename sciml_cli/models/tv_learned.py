"""TV-regularised gradient descent with learned weights: ``K`` unrolled steps
``a <- a - tau_k (grad D(a, b) + lambda grad TV(a))`` from FBP in which only ``lambda`` and the
steps ``tau_k`` are trained, end to end on the reconstruction error (the most rigid end of
"as learnable as you like" of the course material; a bilevel choice of the regularisation
weight in the spirit of Haber & Tenorio 2003). No network: a few dozen numbers.
"""

from __future__ import annotations

from torch import Tensor

from ..constraints import PositiveFloat, PositiveInt
from ..problems.base import InverseProblem
from .unrolled import Unrolled


class TVLearned(Unrolled):
    """Gradient descent on ``D + lambda R`` with learned ``lambda`` and steps.

    Parameters
    ----------
    iterations
        Unrolled steps ``K``.
    reg_weight
        Initial ``lambda``; null: the problem's ``reg_weight``.
    step_scale
        Initial steps as a multiple of ``1 / L`` (any value below 2 decreases the objective).
    batch_size, loss_weights
        See :class:`Unrolled`.
    """

    def __init__(
        self,
        problem: InverseProblem,
        iterations: PositiveInt = 100,
        reg_weight: PositiveFloat | None = None,
        step_scale: PositiveFloat = 1.0,
        batch_size: PositiveInt = 8,
        loss_weights: dict[str, float] | None = None,
    ) -> None:
        super().__init__(problem, batch_size=batch_size, loss_weights=loss_weights)
        self.iterations = int(iterations)
        self._learn_weights(problem, reg_weight, step_scale)

    def reconstruct(self, problem: InverseProblem, data: Tensor) -> Tensor:
        a = problem.initial(data)
        lam = self.log_reg_weight.exp()
        steps = self.log_steps.exp()
        for k in range(self.iterations):
            a = a - steps[k] * (problem.data_fidelity_gradient(a, data) + lam * problem.regulariser_gradient(a))
        return a
