"""Derivatives of network outputs with respect to their inputs."""

from __future__ import annotations

import torch
from torch import Tensor


def gradient(y: Tensor, x: Tensor) -> Tensor:
    """``d y / d x`` for ``y`` of shape ``[N]`` or ``[N, 1]`` and ``x`` of shape ``[N, d]``.

    Each ``y[i]`` depends only on ``x[i]``, so the gradient of ``y.sum()`` is the row-wise
    Jacobian. The graph is kept so that higher derivatives and the loss can be differentiated.
    """
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    return g
