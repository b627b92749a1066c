"""Learned primal-dual reconstruction (Adler & Öktem 2018, "Learned primal-dual
reconstruction"): ``K`` unrolled iterations of a primal-dual scheme in which both proximal steps
are CNNs, one in measurement space and one in image space, each with a memory of channels::

    h <- h + Gamma_k(h, A f[1], g)        (dual, measurement space; g the linearised data)
    f <- f + Lambda_k(f, A^T h[0])        (primal, image space)

from ``f = 0`` (or every primal channel at the FBP, ``initial=fbp``, an option of the
authors' code that shortens training) and ``h = 0``; the reconstruction is ``f[0]``. Weights are
not shared between iterations (as in the paper). With ``zero_last`` (a deviation from the paper)
each CNN's last convolution starts at zero, so the untrained scheme returns its initial image and
every update starts as the identity of a residual network (Goyal et al. 2017; Zhang et al. 2019,
"Fixup"). For photon-count data the dual step sees the log data
``-log(b / I0)`` and the linear ``A`` (the paper linearises the same way for its
transmission experiment's operator input).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ..constraints import NonNegativeFloat, PositiveInt
from ..nn import ConvNet
from ..problems.base import InverseProblem
from .unrolled import Unrolled


class LPD(Unrolled):
    """Learned primal-dual.

    Parameters
    ----------
    iterations
        Unrolled iterations ``K`` (Adler & Öktem 2018: 10).
    primal_memory, dual_memory
        Channels of the primal and dual iterates (5 and 5).
    width, depth
        Each CNN: channels and 3 x 3 convolutions (32 and 3, PReLU).
    initial
        ``zero`` (the paper) or ``fbp``: the primal channels start at the FBP.
    zero_last
        Start each CNN's last convolution at zero (the paper: random like the others).
    batch_size, loss_weights
        See :class:`Unrolled`.
    """

    def __init__(
        self,
        problem: InverseProblem,
        iterations: PositiveInt = 10,
        primal_memory: PositiveInt = 5,
        dual_memory: PositiveInt = 5,
        width: PositiveInt = 32,
        depth: PositiveInt = 3,
        initial: Literal["zero", "fbp"] = "zero",
        zero_last: bool = False,
        batch_size: PositiveInt = 8,
        loss_weights: dict[str, NonNegativeFloat] | None = None,
    ) -> None:
        super().__init__(problem, batch_size=batch_size, loss_weights=loss_weights)
        if primal_memory < 2:
            raise ValueError(f"primal_memory: need at least 2 channels (one is projected), got {primal_memory}")
        self.iterations, self.primal_memory, self.dual_memory = int(iterations), int(primal_memory), int(dual_memory)
        self.initial = initial
        self.dual = nn.ModuleList(ConvNet(self.dual_memory + 2, self.dual_memory, width, depth, zero_last=zero_last)
                                  for _ in range(self.iterations))
        self.primal = nn.ModuleList(ConvNet(self.primal_memory + 1, self.primal_memory, width, depth,
                                            zero_last=zero_last) for _ in range(self.iterations))

    def reconstruct(self, problem: InverseProblem, data: Tensor) -> Tensor:
        g = problem.linearised(data)
        n = data.shape[0]
        if self.initial == "fbp":
            f = problem.initial(data)[:, None].repeat(1, self.primal_memory, 1, 1)
        else:
            f = g.new_zeros(n, self.primal_memory, self.size, self.size)
        h = g.new_zeros(n, self.dual_memory, *g.shape[-2:])
        for k in range(self.iterations):
            h = h + self.dual[k](torch.cat([h, problem.forward(f[:, 1])[:, None], g[:, None]], 1))
            f = f + self.primal[k](torch.cat([f, problem.adjoint(h[:, 0], self.size)[:, None]], 1))
        return f[:, 0]
