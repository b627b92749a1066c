"""Collocation sampling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

#: the Sobol seed of point sets that score a model (H1 quadrature, scattered test points):
#: negative, so that no training draw, whose seeds are derived from a non-negative run seed,
#: ever lands on them
SCORING_SEED = -1


def sobol(n: int, bounds: Sequence[tuple[float, float]], seed: int, **factory) -> Tensor:
    """``n`` scrambled Sobol points in the box ``bounds``, ``[n, len(bounds)]``.

    Quasi-random points cover the domain more evenly than uniform draws, which lowers the
    variance of the residual loss (e.g. Wu et al. 2023, "A comprehensive study of non-adaptive
    and residual-based adaptive sampling for PINNs"). Same ``seed`` gives the same points.
    """
    engine = torch.quasirandom.SobolEngine(len(bounds), scramble=True, seed=seed)
    unit = engine.draw(n, dtype=torch.float64)
    lo = torch.tensor([b[0] for b in bounds], dtype=torch.float64)
    hi = torch.tensor([b[1] for b in bounds], dtype=torch.float64)
    return (lo + (hi - lo) * unit).to(**factory)
