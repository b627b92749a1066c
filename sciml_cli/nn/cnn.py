"""The small convolutional network of learned iterative reconstruction (Adler & Öktem 2017,
2018): a few 3 x 3 convolutions with PReLU between them, channels in and out, same size."""

from __future__ import annotations

from torch import Tensor, nn


class ConvNet(nn.Module):
    """``depth`` convolutions (``kernel`` x ``kernel``, zero padding that keeps the size), ``width``
    channels between them, a PReLU with one slope per channel after each but the last (Adler &
    Öktem: depth 3, width 32).

    ``zero_last``: start the last convolution at zero, so the network first outputs zero (an
    unrolled scheme then starts as its classical iteration).
    """

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
