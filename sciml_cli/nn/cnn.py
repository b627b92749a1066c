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
