"""Value, first and second input derivatives of an MLP in one fused pass, with a hand-written
backward to the weights.

For a layer ``z = W h + b``, ``a = s(z)`` the derivatives with respect to the inputs propagate as
(directions ``i, j``; Taylor-mode differentiation, e.g. Griewank & Walther 2008, ch. 13)::

    z_i = W h_i,        z_ij = W h_ij
    a_i = s'(z) z_i,    a_ij = s''(z) z_i z_j + s'(z) z_ij

The value and every derivative go through each weight matrix in one matrix product, and the
backward pass is written out by the chain rule on these formulas, so one training step is a few
dozen tensor operations instead of autograd's double-backward graph of hundreds: on small PINN
networks, where the time goes into per-operation overhead rather than arithmetic, this is what
makes the step fast. :meth:`sciml_cli.nn.MLP.derivatives` uses it for ``mode="taylor"`` when the
activation has a closed-form third derivative and there is no Fourier embedding; the tests hold
it to autograd to rounding, values and parameter gradients alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def _tanh3(v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    t = torch.tanh(v)
    s1 = 1 - t * t
    s2 = -2 * t * s1
    return t, s1, s2, -2 * (s1 * s1 + t * s2)


def _sin3(v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    s, c = torch.sin(v), torch.cos(v)
    return s, c, -s, -c


def _sigmoid3(v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    s = torch.sigmoid(v)
    s1 = s * (1 - s)
    return s, s1, s1 * (1 - 2 * s), s1 * (1 - 6 * s1)


def _softplus3(v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    s = torch.sigmoid(v)
    s1 = s * (1 - s)
    return torch.nn.functional.softplus(v), s, s1, s1 * (1 - 2 * s)


def _arctan3(v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    q = 1 / (1 + v * v)
    return torch.atan(v), q, -2 * v * q * q, (6 * v * v - 2) * q * q * q


def _relu3_3(v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r = torch.relu(v)
    return r * r * r, 3 * r * r, 6 * r, 6 * (v > 0).to(v.dtype)


#: activation -> (s, s', s'', s''') at once
JETS3: dict[str, Callable[[Tensor], tuple[Tensor, Tensor, Tensor, Tensor]]] = {
    "tanh": _tanh3, "sin": _sin3, "sigmoid": _sigmoid3, "softplus": _softplus3, "arctan": _arctan3, "relu3": _relu3_3,
}


class TaylorMLP(torch.autograd.Function):
    """``(xs, unit, activation, pairs, W_1, b_1, ..., W_L, b_L) -> [1 + k1 + k2, N, m]``.

    ``xs`` ``[N, d]`` are the (already scaled) inputs, ``unit`` ``[k1, d]`` the derivative of
    ``xs`` along each of the ``k1`` wanted directions (a scaled unit row), ``pairs`` the second
    derivatives wanted as index pairs into those directions. The output stacks the value, the
    ``k1`` first and the ``k2`` second derivatives. Differentiable once, with respect to the
    weights and biases only (the points are data).
    """

    @staticmethod
    def forward(ctx, xs: Tensor, unit: Tensor, activation: str, pairs: Sequence[tuple[int, int]],
                *params: Tensor) -> Tensor:
        jet = JETS3[activation]
        weights, biases = params[0::2], params[1::2]
        n = xs.shape[0]
        # layer 0 sees (xs, unit broadcast, no second derivatives)
        z = torch.addmm(biases[0], xs, weights[0].T)
        z1 = (unit @ weights[0].T).unsqueeze(1)  # [k1, 1, w]: the same for every point
        z2 = None
        saved = []
        for w, b in zip(weights[1:], biases[1:]):
            t, s1, s2, s3 = jet(z)
            a1 = s1 * z1
            prods = torch.stack([z1[i] * z1[j] for i, j in pairs]).expand(len(pairs), n, -1) if pairs else None
            a2 = None
            if pairs:
                a2 = s2 * prods
                if z2 is not None:
                    a2 = torch.addcmul(a2, s1, z2)
            saved.append((s1, s2, s3, z1, z2, prods, t, a1, a2))
            z = torch.addmm(b, t, w.T)
            z1 = torch.matmul(a1, w.T)
            z2 = None if a2 is None else torch.matmul(a2, w.T)
        ctx.pairs, ctx.k1, ctx.n = tuple(pairs), unit.shape[0], n
        ctx.layers = saved
        ctx.save_for_backward(xs, unit, *params)
        parts = [z[None], z1.expand(-1, n, -1)]
        if z2 is not None:
            parts.append(z2)
        return torch.cat(parts)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        xs, unit, *params = ctx.saved_tensors
        weights = params[0::2]
        pairs, k1 = ctx.pairs, ctx.k1
        g, g1 = grad[0], grad[1:1 + k1]
        g2 = grad[1 + k1:] if pairs else None
        grads: list[Tensor | None] = [None] * len(params)
        for layer in range(len(weights) - 1, 0, -1):
            w = weights[layer]
            s1, s2, s3, z1, z2, prods, t, a1, a2 = ctx.layers[layer - 1]
            # the linear map: one product per stream for the weight gradient
            dw = g.T @ t + g1.flatten(0, 1).T @ a1.flatten(0, 1)
            if pairs:
                dw = dw + g2.flatten(0, 1).T @ a2.flatten(0, 1)
            grads[2 * layer], grads[2 * layer + 1] = dw, g.sum(0)
            dt, da1 = g @ w, torch.matmul(g1, w)
            da2 = torch.matmul(g2, w) if pairs else None
            # the activation, by the chain rule on a = s(z), a_i = s' z_i, a_ij = s'' z_i z_j + s' z_ij
            ds1 = (da1 * z1).sum(0)
            dz = dt * s1
            dz1 = da1 * s1
            dz2 = None
            if pairs:
                if z2 is not None:
                    ds1 = ds1 + (da2 * z2).sum(0)
                    dz2 = da2 * s1
                ds2 = (da2 * prods).sum(0)
                dz = dz + ds2 * s3
                d2 = da2 * s2
                extra = [torch.zeros_like(dz1[0]) for _ in range(k1)]
                for p, (i, j) in enumerate(pairs):
                    extra[i] = extra[i] + d2[p] * z1[j]
                    extra[j] = extra[j] + d2[p] * z1[i]
                dz1 = dz1 + torch.stack(extra)
            dz = dz + ds1 * s2
            g, g1, g2 = dz, dz1, dz2 if dz2 is not None else (torch.zeros_like(dz1[:len(pairs)]) if pairs else None)
        # layer 0: its inputs' derivatives are the constant unit rows, their second ones zero
        grads[0] = g.T @ xs + g1.sum(1).T @ unit
        grads[1] = g.sum(0)
        return (None, None, None, None, *grads)
