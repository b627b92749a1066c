"""Error metrics between a prediction and a reference."""

from __future__ import annotations

import torch
from torch import Tensor


def error_metrics(prediction: Tensor, reference: Tensor) -> dict[str, float]:
    """Relative L2 (over all entries), max absolute error and RMSE, as floats."""
    diff = (prediction - reference).detach().double()
    ref = reference.detach().double()
    return {
        "rel_l2": (torch.linalg.vector_norm(diff) / torch.linalg.vector_norm(ref)).item(),
        "max_abs": diff.abs().max().item(),
        "rmse": diff.pow(2).mean().sqrt().item(),
    }


def relative_l2(prediction: Tensor, reference: Tensor, dim: int | tuple[int, ...] = -1) -> Tensor:
    """Per-sample relative L2 error over ``dim`` (the operator-learning loss of Li et al. 2021)."""
    num = torch.linalg.vector_norm(prediction - reference, dim=dim)
    return num / torch.linalg.vector_norm(reference, dim=dim)
