"""Derivatives of functions of points with respect to the points, by reverse-mode autograd.

Derivatives are named ``"u"``, ``"u_x"``, ``"u_xx"``, ``"u_xt"``, ...: the letters after the
underscore are coordinate names (single letters), one per differentiation; internally a sorted
tuple of coordinate indices (``"u_xt"`` -> ``(0, 1)`` for coordinates ``("x", "t")``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor


def parse_derivative(name: str, coords: Sequence[str]) -> tuple[int, ...]:
    """``"u_xt"`` -> the sorted coordinate indices ``(0, 1)`` for ``coords = ("x", "t")``;
    ``"u"`` -> ``()``."""
    head, _, letters = name.partition("_")
    if head != "u" or (not letters and "_" in name):
        raise ValueError(f"derivative {name!r}: expected 'u' or 'u_<coordinates>', e.g. 'u_xx'")
    unknown = [c for c in letters if c not in coords]
    if unknown:
        raise ValueError(f"derivative {name!r}: no coordinate {unknown[0]!r} (coordinates: {', '.join(coords)})")
    return tuple(sorted(coords.index(c) for c in letters))


def autograd_derivatives(fn: Callable[[Tensor], Tensor], x: Tensor, wanted: Iterable[tuple[int, ...]]
                         ) -> dict[tuple[int, ...], Tensor]:
    """Derivatives ``wanted`` (sorted coordinate-index tuples) of ``fn`` ``[N, d] -> [N, m]``
    at ``x`` by nested reverse-mode gradients, each ``[N, m]``, with the graph kept.

    Each output row depends on its input row only, so the gradient of a column's sum is the
    row-wise Jacobian; one backward gives every direction at once.
    """
    x = x.detach().requires_grad_(True)
    u = fn(x)
    out: dict[tuple[int, ...], list[Tensor]] = {}
    for c in range(u.shape[1]):
        memo: dict[tuple[int, ...], Tensor] = {(): u[:, c]}

        def get(key: tuple[int, ...]) -> Tensor:
            if key not in memo:
                (g,) = torch.autograd.grad(get(key[:-1]).sum(), x, create_graph=True, materialize_grads=True)
                for i in range(x.shape[1]):
                    memo[tuple(sorted(key[:-1] + (i,)))] = g[:, i]
            return memo[key]

        for key in wanted:
            out.setdefault(key, []).append(get(key))
    return {k: torch.stack(v, dim=1) for k, v in out.items()}
