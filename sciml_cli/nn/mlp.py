"""The fully connected network of physics-informed and variational methods, and its derivatives
with respect to its inputs.

Derivatives are named ``"u"``, ``"u_x"``, ``"u_xx"``, ``"u_xt"``, ...: the letters after the
underscore are coordinate names, one per differentiation (coordinates must be single letters).
:meth:`MLP.derivatives` computes any set of them by reverse-mode autograd (the reference) or, up
to second order, by forward propagation of first and second input derivatives through the layers
("Taylor mode"): one pass carries ``u``, its gradient and the asked-for second derivatives
together, which is exact to rounding and avoids autograd's double backward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from ..numerics.autodiff import autograd_derivatives, parse_derivative  # noqa: F401  (re-exported)
from .taylor import JETS3, TaylorMLP

Activation = Literal["tanh", "sin", "sigmoid", "softplus", "arctan", "elu", "relu", "relu3", "gaussian", "prelu",
                     "identity"]
Init = Literal["xavier_normal", "xavier_uniform", "kaiming_normal", "kaiming_uniform", "torch_default"]
Mode = Literal["autograd", "taylor"]
#: named derivatives of the network output, each ``[N, out_features]``
Derivatives = dict[str, Tensor]


class Sin(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(x)


class Arctan(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.atan(x)


class ReLU3(nn.Module):
    """``max(x, 0)^3``, the activation of the Deep Ritz method (E & Yu 2018): twice
    continuously differentiable, so second-order residuals stay defined."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x).pow(3)


class Gaussian(nn.Module):
    """``exp(-x^2)``, the radial basis activation of the UDE networks of Rackauckas et al. (2020)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.exp(-x * x)


def _gaussian(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.exp(-v * v)
    return g, -2 * v * g, (4 * v * v - 2) * g


def _tanh(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    t = torch.tanh(v)
    d1 = 1 - t * t
    return t, d1, -2 * t * d1


def _sin(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    s = torch.sin(v)
    return s, torch.cos(v), -s


def _sigmoid(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    s = torch.sigmoid(v)
    d1 = s * (1 - s)
    return s, d1, d1 * (1 - 2 * s)


def _softplus(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    s = torch.sigmoid(v)
    return nn.functional.softplus(v), s, s * (1 - s)


def _arctan(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    d1 = 1 / (1 + v * v)
    return torch.atan(v), d1, -2 * v * d1 * d1


def _elu(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    e = torch.exp(torch.clamp(v, max=0))
    pos = v > 0
    return torch.where(pos, v, e - 1), torch.where(pos, 1.0, e), torch.where(pos, 0.0, e)


def _relu(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    pos = (v > 0).to(v.dtype)
    return v * pos, pos, torch.zeros_like(v)


def _relu3(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r = torch.relu(v)
    return r * r * r, 3 * r * r, 6 * r


def _identity(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return v, torch.ones_like(v), torch.zeros_like(v)


#: activation -> (module, (f, f', f'') at once, or None where there is no closed form)
ACTIVATIONS: dict[str, tuple[type[nn.Module], Callable[[Tensor], tuple[Tensor, Tensor, Tensor]] | None]] = {
    "tanh": (nn.Tanh, _tanh),
    "sin": (Sin, _sin),
    "sigmoid": (nn.Sigmoid, _sigmoid),
    "softplus": (nn.Softplus, _softplus),
    "arctan": (Arctan, _arctan),
    "elu": (nn.ELU, _elu),
    "relu": (nn.ReLU, _relu),
    "relu3": (ReLU3, _relu3),
    "gaussian": (Gaussian, _gaussian),
    "prelu": (nn.PReLU, None),
    "identity": (nn.Identity, _identity),
}


def _input_map(in_features: int, input_bounds: Sequence[tuple[float, float]] | None) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` mapping each input's ``(low, high)`` to ``[-1, 1]`` (identity: ``None``)."""
    if input_bounds is None:
        return torch.ones(in_features), torch.zeros(in_features)
    bounds = torch.tensor(input_bounds, dtype=torch.get_default_dtype())
    scale = 2.0 / (bounds[:, 1] - bounds[:, 0])
    return scale, -1.0 - bounds[:, 0] * scale


class MLP(nn.Module):
    """``u = W_L s(... s(W_1 e(x) + b_1) ...) + b_L`` with an optional input embedding ``e``.

    Parameters
    ----------
    in_features, out_features
        Input coordinates ``d`` and outputs ``m``: :meth:`forward` maps ``[N, d]`` to ``[N, m]``.
    width, depth
        Hidden units per layer and number of hidden layers.
    activation
        Hidden nonlinearity. ``relu`` has a zero second derivative, so it cannot represent
        second-order PDE residuals; ``prelu`` has no closed-form Taylor propagation (autograd only).
    init
        Weight initialisation; biases start at zero. Glorot (``xavier_*``) suits tanh (Glorot &
        Bengio 2010), He (``kaiming_*``) ReLU-like units (He et al. 2015).
    input_bounds
        ``(low, high)`` per input; inputs are mapped affinely to ``[-1, 1]`` first, so every axis
        reaches the first layer on the same scale. ``None``: inputs are used as they are.
    fourier_features
        ``0``: no embedding. ``M > 0``: the (scaled) input ``x`` becomes
        ``[cos(2 pi x B), sin(2 pi x B)]`` with a fixed ``B ~ N(0, fourier_scale^2)`` of shape
        ``[d, M]`` (Tancik et al. 2020; for PINNs Wang, Wang & Perdikaris 2021), which lets the
        network fit high frequencies that a plain MLP learns slowly (spectral bias).
    fourier_scale
        Standard deviation of ``B``: the frequencies the embedding offers, per unit of scaled
        input.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        width: int = 32,
        depth: int = 4,
        activation: Activation = "tanh",
        init: Init = "xavier_normal",
        input_bounds: Sequence[tuple[float, float]] | None = None,
        fourier_features: int = 0,
        fourier_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        module, self._jet = ACTIVATIONS[activation]
        self.register_buffer("in_scale", None)
        self.register_buffer("in_shift", None)
        self.in_scale, self.in_shift = _input_map(in_features, input_bounds)
        if fourier_features:
            self.register_buffer("fourier_b", fourier_scale * torch.randn(in_features, fourier_features))
        else:
            self.fourier_b = None
        first = 2 * fourier_features if fourier_features else in_features
        self.hidden = nn.ModuleList(nn.Linear(first if i == 0 else width, width) for i in range(depth))
        self.acts = nn.ModuleList(module() for _ in range(depth))
        self.out = nn.Linear(width if depth else first, out_features)
        if init != "torch_default":
            for layer in [*self.hidden, self.out]:
                getattr(nn.init, init + "_")(layer.weight)
                nn.init.zeros_(layer.bias)

    def _embed(self, x: Tensor) -> Tensor:
        x = x * self.in_scale + self.in_shift
        if self.fourier_b is None:
            return x
        z = (2 * math.pi) * (x @ self.fourier_b)
        return torch.cat([torch.cos(z), torch.sin(z)], dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """``[N, d]`` -> ``[N, m]``."""
        v = self._embed(x)
        for layer, act in zip(self.hidden, self.acts):
            v = act(layer(v))
        return self.out(v)

    # -- derivatives with respect to the inputs -------------------------------------------------
    def derivatives(self, x: Tensor, wanted: Iterable[tuple[int, ...]], mode: Mode = "autograd"
                    ) -> dict[tuple[int, ...], Tensor]:
        """The derivatives ``wanted`` (sorted coordinate-index tuples, ``()`` for the value) of
        the output at ``x`` ``[N, d]``, each ``[N, m]``, differentiable with respect to the
        parameters.

        ``mode="autograd"``: nested reverse-mode gradients, any order. ``mode="taylor"``: one
        forward pass carrying first and second derivatives (orders up to 2; exact to rounding,
        several times cheaper than autograd's double backward for second-order residuals).
        """
        wanted = sorted(set(wanted), key=lambda k: (len(k), k))
        if mode == "taylor":
            return self._taylor(x, wanted)
        return self._autograd(x, wanted)

    def _autograd(self, x: Tensor, wanted: list[tuple[int, ...]]) -> dict[tuple[int, ...], Tensor]:
        return autograd_derivatives(self, x, wanted)

    def _taylor(self, x: Tensor, wanted: list[tuple[int, ...]]) -> dict[tuple[int, ...], Tensor]:
        if any(len(k) > 2 for k in wanted):
            raise ValueError("taylor derivatives go to second order; use autograd for higher ones")
        if self._jet is None:
            raise ValueError(f"activation {self.activation!r} has no Taylor propagation; use autograd")
        pairs = [k for k in wanted if len(k) == 2]
        first = sorted({i for k in wanted for i in k})
        pos = {i: n for n, i in enumerate(first)}
        n = x.shape[0]
        xs = x * self.in_scale + self.in_shift
        unit = torch.diag(self.in_scale)[first]  # [k1, d]: d xs / d x along each direction
        if self.fourier_b is None and self.activation in JETS3 and first:
            params = [p for layer in [*self.hidden, self.out] for p in (layer.weight, layer.bias)]
            s = TaylorMLP.apply(xs, unit, self.activation, [(pos[i], pos[j]) for i, j in pairs], *params)
            v, d1, d2 = s[0], s[1:1 + len(first)], s[1 + len(first):]
            return self._named(v, d1, d2, wanted, first, pos, pairs)
        # unfused: v [N, w], d1 [k1, N, w], d2 [k2, N, w] or None (zero); no zero tensors are
        # built, and directions are split by unbind (whose backward is a stack, not a scatter)
        if self.fourier_b is None:
            v, d1, d2 = xs, unit[:, None, :].expand(len(first), n, x.shape[1]), None
        else:
            b = (2 * math.pi) * self.fourier_b
            z, dz = xs @ b, (unit @ b)[:, None, :].expand(len(first), n, b.shape[1])
            cos = self._activate(z, dz, None, pairs, pos, lambda u: (torch.cos(u), -torch.sin(u), -torch.cos(u)))
            sin = self._activate(z, dz, None, pairs, pos, _sin)
            v, d1, d2 = (torch.cat([c, s], dim=-1) if c is not None else None for c, s in zip(cos, sin))
        for layer in self.hidden:
            v, d1, d2 = self._linear(layer, v, d1, d2)
            v, d1, d2 = self._activate(v, d1, d2, pairs, pos, self._jet)
        v, d1, d2 = self._linear(self.out, v, d1, d2)
        return self._named(v, d1, d2, wanted, first, pos, pairs)

    @staticmethod
    def _named(v, d1, d2, wanted, first, pos, pairs) -> dict[tuple[int, ...], Tensor]:
        """The stacked value and derivatives as the ``wanted`` index tuples."""
        out = {(): v}
        out.update({(i,): d1[pos[i]] for i in first if (i,) in wanted})
        out.update({p: d2[n_p] for n_p, p in enumerate(pairs)})
        return out

    @staticmethod
    def _activate(v: Tensor, d1: Tensor, d2: Tensor | None, pairs, pos, jet):
        """Chain rule to second order: ``s(v)``, ``s'(v) dv``, ``s''(v) dv_i dv_j + s'(v) d2v``."""
        f, f1, f2 = jet(v)
        new_d1 = f1 * d1
        new_d2 = None
        if pairs:
            dirs = d1.unbind(0)
            new_d2 = torch.stack([f2 * dirs[pos[i]] * dirs[pos[j]] for i, j in pairs])
            if d2 is not None:
                new_d2 = torch.addcmul(new_d2, f1, d2)
        return f, new_d1, new_d2

    @staticmethod
    def _linear(layer: nn.Linear, v: Tensor, d1: Tensor, d2: Tensor | None):
        """The bias enters the value only; derivatives go through the weight alone."""
        w = layer.weight.T
        return (torch.addmm(layer.bias, v, w), torch.matmul(d1, w),
                None if d2 is None else torch.matmul(d2, w))



class ResNet(nn.Module):
    """The network of the Deep Ritz method (E & Yu 2018, section 2.1): the input padded with
    zeros to ``width`` (mapped by a linear layer if it has more coordinates than that), then
    ``blocks`` residual blocks ``s <- s + act(W_2 act(W_1 s + b_1) + b_2)``, then a linear output.

    ``input_bounds`` maps the inputs to ``[-1, 1]`` first, as for :class:`MLP`.
    """

    def __init__(self, in_features: int, out_features: int, width: int = 10, blocks: int = 4,
                 activation: Activation = "relu3", init: Init = "xavier_normal",
                 input_bounds: Sequence[tuple[float, float]] | None = None) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        self.in_features, self.out_features, self.width = in_features, out_features, width
        self.register_buffer("in_scale", None)
        self.register_buffer("in_shift", None)
        self.in_scale, self.in_shift = _input_map(in_features, input_bounds)
        self.lift = nn.Linear(in_features, width) if in_features > width else None
        act = ACTIVATIONS[activation][0]
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), act(), nn.Linear(width, width), act())
                                    for _ in range(blocks))
        self.out = nn.Linear(width, out_features)
        if init != "torch_default":
            for layer in self.modules():
                if isinstance(layer, nn.Linear):
                    getattr(nn.init, init + "_")(layer.weight)
                    nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``[N, d]`` -> ``[N, m]``."""
        s = x * self.in_scale + self.in_shift
        s = self.lift(s) if self.lift is not None else nn.functional.pad(s, (0, self.width - self.in_features))
        for block in self.blocks:
            s = s + block(s)
        return self.out(s)
