"""Time steppers for linear systems ``du/dt = L u``."""

from __future__ import annotations

import torch
from torch import Tensor


def crank_nicolson(operator: Tensor, u0: Tensor, dt: float, n_steps: int, save_every: int = 1) -> Tensor:
    """Integrate ``du/dt = L u`` with the Crank–Nicolson scheme (second order, A-stable).

    ``(I - dt/2 L) u_{n+1} = (I + dt/2 L) u_n``; the left matrix is LU-factorised once.

    Parameters
    ----------
    operator
        ``L``, ``[n, n]``.
    u0
        Initial states, ``[B, n]``.
    dt, n_steps
        Step size and number of steps.
    save_every
        Keep every ``save_every``-th state; ``n_steps`` must be a multiple of it.

    Returns
    -------
    Tensor
        ``[B, n_steps // save_every + 1, n]``, starting with ``u0``.
    """
    if n_steps % save_every:
        raise ValueError(f"n_steps={n_steps} is not a multiple of save_every={save_every}")
    eye = torch.eye(operator.shape[0], dtype=operator.dtype, device=operator.device)
    lu, pivots = torch.linalg.lu_factor(eye - 0.5 * dt * operator)
    explicit = eye + 0.5 * dt * operator
    u = u0.T  # [n, B]: columns are states, as lu_solve expects
    saved = [u0]
    for step in range(1, n_steps + 1):
        u = torch.linalg.lu_solve(lu, pivots, explicit @ u)
        if step % save_every == 0:
            saved.append(u.T)
    return torch.stack(saved, dim=1)
