"""Convolutional networks: the small CNN of learned iterative reconstruction (Adler & Öktem 2017,
2018), and the periodic ones of solver-in-the-loop corrections (a residual CNN, and a one-layer
MLP on each point's stencil for grids so small that every operation counts)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class ConvNet(nn.Module):
    """``depth`` convolutions (``kernel`` x ``kernel``, zero padding that keeps the size), ``width``
    channels between them, a PReLU with one slope per channel after each but the last (Adler &
    Öktem: depth 3, width 32).

    ``zero_last``: start the last convolution at zero, so the network first outputs zero (an
    unrolled scheme then starts as its classical iteration).
    """

    #: on the CPU, convolve channels-last images: oneDNN's kernels are faster on them than on
    #: channels-first ones (``scripts/bench_ct.py --layout``); the output keeps that layout
    channels_last_on_cpu = True

    def __init__(self, in_channels: int, out_channels: int, width: int = 32, depth: int = 3,
                 kernel: int = 3, zero_last: bool = False) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth: need at least one convolution, got {depth}")
        if kernel % 2 == 0:
            raise ValueError(f"kernel: must be odd to keep the image size, got {kernel}")
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(depth - 1):
            layers += [nn.Conv2d(channels, width, kernel, padding=kernel // 2), nn.PReLU(width)]
            channels = width
        last = nn.Conv2d(channels, out_channels, kernel, padding=kernel // 2)
        if zero_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last_on_cpu and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.layers(x)


class PeriodicResNet(nn.Module):
    """A residual CNN on periodic grids in one or two dimensions: a lifting convolution, ``blocks``
    residual blocks of two convolutions with a GELU between them, and a projecting convolution,
    all with circular padding, so the network is translation-equivariant on the torus and its
    output wraps around like the solution (the correction network of solver-in-the-loop
    training, Um et al. 2020, who use a ResNet of 5 x 5 convolutions).

    ``[B, in_channels, *S]`` -> ``[B, out_channels, *S]``; ``zero_last`` starts the projection at
    zero, so a hybrid model starts as its plain solver.
    """

    def __init__(self, n_dims: int, in_channels: int, out_channels: int, width: int = 16, blocks: int = 3,
                 kernel: int = 3, zero_last: bool = True) -> None:
        super().__init__()
        if n_dims not in (1, 2):
            raise ValueError(f"n_dims: 1 or 2, got {n_dims}")
        if kernel % 2 == 0:
            raise ValueError(f"kernel: must be odd to keep the grid size, got {kernel}")
        conv = nn.Conv1d if n_dims == 1 else nn.Conv2d

        def layer(c_in: int, c_out: int) -> nn.Module:
            return conv(c_in, c_out, kernel, padding=kernel // 2, padding_mode="circular")

        self.lift = layer(in_channels, width)
        self.blocks = nn.ModuleList(nn.Sequential(layer(width, width), nn.GELU(), layer(width, width))
                                    for _ in range(blocks))
        self.project = layer(width, out_channels)
        if zero_last:
            nn.init.zeros_(self.project.weight)
            nn.init.zeros_(self.project.bias)

    def forward(self, x: Tensor) -> Tensor:
        v = nn.functional.gelu(self.lift(x))
        for block in self.blocks:
            v = nn.functional.gelu(v + block(v))
        return self.project(v)


class StencilMLP(nn.Module):
    """One hidden layer on each grid point's periodic stencil: ``y(x) = W2 relu(W1 s(x) + b1) + b2``
    with ``s(x)`` the ``kernel``-wide neighbourhood of every input channel around ``x`` (one or two
    dimensions), i.e. a circular ``kernel`` convolution, a ReLU and a 1 x 1 convolution.

    Computed as two matrix products on the gathered stencils, a handful of operations in all: on
    a small grid (Burgers on 32 points) a correction network must cost less than the coarse
    solver's step for the hybrid to beat the solver on the 2x grid, and there each operation's
    overhead, not its arithmetic, is the cost (ReLU rather than GELU for the same reason: on a
    CPU the GELU cost a sixth of the corrected step).

    ``[B, in_channels, *S]`` -> ``[B, out_channels, *S]``; :meth:`on_fields` takes the input
    channels as separate ``[B, *S]`` fields. ``zero_last`` starts the output layer at zero.
    """

    def __init__(self, n_dims: int, in_channels: int, out_channels: int, width: int = 32, kernel: int = 5,
                 zero_last: bool = True) -> None:
        super().__init__()
        if n_dims not in (1, 2):
            raise ValueError(f"n_dims: 1 or 2, got {n_dims}")
        if kernel % 2 == 0:
            raise ValueError(f"kernel: must be odd to keep the grid size, got {kernel}")
        self.n_dims, self.kernel = n_dims, kernel
        # the convolution's layout [width, in, k(, k)], so the weights read as a circular Conv{1,2}d's
        self.hidden = nn.Parameter(torch.empty(width, in_channels, *[kernel] * n_dims))
        self.hidden_bias = nn.Parameter(torch.empty(width))
        self.out = nn.Parameter(torch.empty(out_channels, width))
        self.out_bias = nn.Parameter(torch.zeros(out_channels))
        fan_in = in_channels * kernel**n_dims  # torch's Conv default (Kaiming uniform, a = sqrt(5))
        nn.init.kaiming_uniform_(self.hidden, a=math.sqrt(5))
        nn.init.uniform_(self.hidden_bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        if zero_last:
            nn.init.zeros_(self.out)
        else:
            nn.init.kaiming_uniform_(self.out, a=math.sqrt(5))

    def on_fields(self, fields: list[Tensor]) -> Tensor:
        """The network on input channels given as fields ``[B, *S]``; ``[B, out_channels, *S]``."""
        x = torch.stack(fields, -1)  # [B, *S, C]
        shape, half = x.shape[:-1], self.kernel // 2
        for axis in range(1, self.n_dims + 1):  # periodic padding, then the stencils as strided views
            x = torch.cat([x.narrow(axis, x.shape[axis] - half, half), x, x.narrow(axis, 0, half)], axis)
        for axis in range(1, self.n_dims + 1):
            x = x.unfold(axis, self.kernel, 1)  # [B, *S, C, k(, k)]
        stencils = x.reshape(shape.numel(), -1)
        h = torch.relu(torch.addmm(self.hidden_bias, stencils, self.hidden.flatten(1).t()))
        y = torch.addmm(self.out_bias, h, self.out.t())  # [B * prod(S), out]
        return y.view(*shape, -1).movedim(-1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.on_fields(list(x.unbind(1)))
