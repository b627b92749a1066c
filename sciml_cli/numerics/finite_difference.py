"""Finite-difference operators."""

from __future__ import annotations

import torch
from torch import Tensor


def laplacian_dirichlet_1d(n_interior: int, dx: float, **factory) -> Tensor:
    """Second-order central Laplacian on the interior nodes with zero Dirichlet ends, ``[n, n]``."""
    main = torch.full((n_interior,), -2.0 / dx**2, **factory)
    off = torch.full((n_interior - 1,), 1.0 / dx**2, **factory)
    return torch.diag(main) + torch.diag(off, 1) + torch.diag(off, -1)
