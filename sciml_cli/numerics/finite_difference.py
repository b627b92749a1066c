"""Finite-difference operators."""

from __future__ import annotations

import torch
from torch import Tensor


def laplacian_dirichlet_1d(n_interior: int, dx: float, **factory) -> Tensor:
    """Second-order central Laplacian on the interior nodes with zero Dirichlet ends, ``[n, n]``."""
    main = torch.full((n_interior,), -2.0 / dx**2, **factory)
    off = torch.full((n_interior - 1,), 1.0 / dx**2, **factory)
    return torch.diag(main) + torch.diag(off, 1) + torch.diag(off, -1)


def poisson_dirichlet_2d(inside: Tensor, boundary: Tensor, f: Tensor, g: Tensor, h: float) -> Tensor:
    """Solve ``-Laplace u = f`` with ``u = g`` on the boundary nodes by the second-order
    five-point stencil on a uniform grid of spacing ``h`` (a sparse direct solve, SciPy's SuperLU).

    ``inside`` and ``boundary`` are ``[nx, ny]`` masks of the grid nodes in the closed domain and
    on its boundary (a domain whose boundary runs along grid lines, e.g. the L-shape or the slit
    square on a grid through the origin); every neighbour of an interior node must be in the
    domain. ``f`` and ``g`` are ``[nx, ny]`` (read at interior and boundary nodes respectively).
    Returns ``u`` ``[nx, ny]``, NaN outside the domain.
    """
    import numpy as np
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    inside_np, boundary_np = inside.cpu().numpy(), boundary.cpu().numpy()
    unknown = inside_np & ~boundary_np
    f_np, g_np = f.detach().cpu().double().numpy(), g.detach().cpu().double().numpy()
    index = -np.ones(unknown.shape, dtype=np.int64)
    index[unknown] = np.arange(unknown.sum())
    i, j = np.nonzero(unknown)
    rows, cols, vals = [index[i, j]], [index[i, j]], [np.full(len(i), 4.0 / h**2)]
    rhs = f_np[i, j].copy()
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        ni, nj = i + di, j + dj
        if (ni < 0).any() or (nj < 0).any() or (ni >= unknown.shape[0]).any() or (nj >= unknown.shape[1]).any() \
                or not inside_np[ni, nj].all():
            raise ValueError("poisson_dirichlet_2d: an interior node has a neighbour outside the domain")
        free = unknown[ni, nj]
        rows.append(index[i, j][free])
        cols.append(index[ni, nj][free])
        vals.append(np.full(int(free.sum()), -1.0 / h**2))
        rhs[~free] += g_np[ni[~free], nj[~free]] / h**2
    n = len(i)
    a = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    u = np.full(unknown.shape, np.nan)
    u[boundary_np & inside_np] = g_np[boundary_np & inside_np]
    u[i, j] = spsolve(a.tocsc(), rhs)
    return torch.as_tensor(u, dtype=f.dtype, device=f.device)
