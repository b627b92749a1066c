"""Learned gradient descent (Adler & Öktem 2017, "Solving ill-posed inverse problems using
iterative deep neural networks"), with a learned regularisation weight and step sizes.

``K`` unrolled iterations, each a gradient step on ``D(a, b) + lambda R(a)`` corrected by a small
CNN that sees the iterate, both gradients and a memory of ``m`` channels::

    g_D = grad D(a, b),  g_R = grad R(a)
    (c, s) = CNN_k(a, tau_k g_D, tau_k lambda g_R, s)
    a <- a - tau_k (g_D + lambda g_R) + c

``tau_k`` and ``lambda`` are learned in log space (the "learn the regularisation weight too" of
the course material). The last convolution starts at zero, so an untrained model is plain
gradient descent with the step ``1 / L`` and the problem's ``lambda``, and the network learns a
correction of it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ..constraints import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from ..nn import ConvNet
from ..problems.base import InverseProblem
from .unrolled import Unrolled


class LGD(Unrolled):
    """Learned gradient descent.

    Parameters
    ----------
    iterations
        Unrolled iterations ``K`` (Adler & Öktem: 10).
    memory
        Memory channels carried between iterations (Adler & Öktem: 5).
    width, depth
        The CNN of each iteration: channels and convolutions (3 x 3, PReLU; 32 and 3).
    share_weights
        One CNN for every iteration (Adler & Öktem 2017) or one per iteration.
    initial
        First iterate: ``fbp`` or ``zero``.
    reg_weight
        Initial ``lambda``; null: the problem's ``reg_weight``.
    learn_reg_weight, learn_steps
        Learn ``lambda`` / the steps ``tau_k`` (else they stay at their start: the problem's
        ``lambda`` and ``1 / L``).
    batch_size, loss_weights
        See :class:`Unrolled`.
    """

    def __init__(
        self,
        problem: InverseProblem,
        iterations: PositiveInt = 10,
        memory: NonNegativeInt = 5,
        width: PositiveInt = 32,
        depth: PositiveInt = 3,
        share_weights: bool = True,
        initial: Literal["fbp", "zero"] = "fbp",
        reg_weight: PositiveFloat | None = None,
        learn_reg_weight: bool = True,
        learn_steps: bool = True,
        batch_size: PositiveInt = 8,
        loss_weights: dict[str, NonNegativeFloat] | None = None,
    ) -> None:
        super().__init__(problem, batch_size=batch_size, loss_weights=loss_weights)
        self.iterations, self.memory, self.initial = int(iterations), int(memory), initial
        self._learn_weights(problem, reg_weight, learn_reg_weight=learn_reg_weight, learn_steps=learn_steps)
        n_nets = 1 if share_weights else self.iterations
        self.nets = nn.ModuleList(ConvNet(3 + self.memory, 1 + self.memory, width, depth, zero_last=True)
                                  for _ in range(n_nets))

    def reconstruct(self, problem: InverseProblem, data: Tensor) -> Tensor:
        a = problem.initial(data) if self.initial == "fbp" else data.new_zeros(data.shape[0], self.size, self.size)
        memory = a.new_zeros(a.shape[0], self.memory, *a.shape[-2:])
        lam = self.log_reg_weight.exp()
        for k in range(self.iterations):
            tau = self.log_steps[k].exp()
            g_data = tau * problem.data_fidelity_gradient(a, data)
            g_reg = tau * lam * problem.regulariser_gradient(a)
            out = self.nets[k % len(self.nets)](torch.cat([a[:, None], g_data[:, None], g_reg[:, None], memory], 1))
            a = a - (g_data + g_reg) + out[:, 0]
            memory = out[:, 1:]
        return a
