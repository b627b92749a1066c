"""Fourier layers (Li et al. 2021, "Fourier Neural Operator for Parametric Partial Differential
Equations"): the spectral convolution ``v -> F^{-1}(R . F v)`` and the layer ``W v + F^{-1}(R . F v)``.

Every weight acts pointwise or on Fourier coefficients, never on grid indices, so a layer applies
at any resolution. Used by the FNO; any model that needs a global, resolution-free convolution
(e.g. a hybrid solver's correction) may build them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

#: modules that act on each entry alone, so on any layout
_ELEMENTWISE = (nn.GELU, nn.ReLU, nn.Tanh, nn.SiLU, nn.Sigmoid, nn.Identity)


def pointwise(layer: nn.Module, v: Tensor) -> Tensor:
    """Apply ``layer`` (an ``nn.Linear``, or an ``nn.Sequential`` of them and activations) to the
    channel axis 1 of ``v`` ``[B, C, *S]``: a 1x1 convolution.

    A linear layer is one batched ``W [C, N]`` product per sample on the flattened grid, which
    keeps the channels-first layout: moving the channels last for ``nn.Linear`` costs copies of
    the field and leaves the next FFT a strided one (that path alone is 2.5x slower on a CPU at
    16 x 24 x 32 x 32).
    """
    if isinstance(layer, nn.Sequential):
        for sub in layer:
            v = pointwise(sub, v)
        return v
    if isinstance(layer, _ELEMENTWISE):
        return layer(v)
    if not isinstance(layer, nn.Linear):
        return layer(v.movedim(1, -1)).movedim(-1, 1)
    linear, x = layer, v.flatten(2)
    batch, n = x.shape[0], x.shape[2]
    weight = linear.weight.expand(batch, -1, -1)
    if linear.bias is None:
        out = torch.bmm(weight, x)
    else:
        out = torch.baddbmm(linear.bias[:, None].expand(batch, -1, n), weight, x)
    return out.view(batch, -1, *v.shape[2:])


class SpectralConv(nn.Module):
    """The Fourier integral operator ``v -> F^{-1}(R . F v)`` on the last ``n_dims`` axes.

    Parameters
    ----------
    in_channels, out_channels
        Channels of the input ``[B, in_channels, *S]`` and the output ``[B, out_channels, *S]``.
    modes
        Fourier modes kept per axis. Along the last axis (the real FFT's half spectrum) these are
        the frequencies ``0 .. modes-1``; along each other axis both the non-negative block
        ``0 .. modes-1`` and the negative block ``-modes .. -1``, as in Li et al. (2021), so in
        2D there are two weight blocks.
    n_dims
        Number of spatial axes ``d`` (1 or 2; the code is written for any ``d``).

    Notes
    -----
    A grid of ``n`` points resolves frequencies up to ``n // 2`` (Nyquist); the real FFT of the
    last axis has ``n // 2 + 1`` coefficients, so ``modes <= n // 2 + 1`` there, and the two
    blocks of a full-FFT axis do not overlap only if ``2 * modes <= n``. A resolution that is too
    small raises ``ValueError`` naming ``model.modes``. For the output to be the same function
    at every resolution, the kept modes must also stay strictly below Nyquist on the coarsest
    grid used (``modes <= n // 2``): the Nyquist coefficient is real on one grid and an ordinary
    complex coefficient on a finer one. Under these conditions the layer is exact on
    band-limited input whose frequencies are all resolved: ``rfftn`` returns ``n`` times the
    Fourier coefficients and ``irfftn`` divides by ``n``, so sampling commutes with the layer.

    The weights are stored as real tensors with a trailing axis of 2 (real, imaginary) and viewed
    as complex in :meth:`forward`: ``nn.Module.to(float64)`` would otherwise cast a complex
    parameter to a real one and drop its imaginary part.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int, n_dims: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.modes, self.n_dims = in_channels, out_channels, modes, n_dims
        signs = [(slice(0, modes), slice(-modes, None))] * (n_dims - 1) + [(slice(0, modes),)]
        #: one tuple of slices per weight block, indexing the trailing ``d`` spectral axes
        self.blocks = list(itertools.product(*signs))
        # Li et al. (2021): uniform on [0, 1) in real and imaginary parts, scaled by 1/(in*out)
        scale = 1.0 / (in_channels * out_channels)
        shape = (len(self.blocks), in_channels, out_channels, *([modes] * n_dims), 2)
        self.weight = nn.Parameter(scale * torch.rand(shape))

    def check_resolution(self, shape: Sequence[int]) -> None:
        """Raise ``ValueError`` if the spatial ``shape`` cannot hold :attr:`modes` modes."""
        *full, last = shape
        m = self.modes
        if last // 2 + 1 < m or any(2 * m > n for n in full):
            need = f"{2 * m} points" if full else f"{2 * m - 2} points"
            raise ValueError(
                f"model.modes: {m} Fourier modes need at least {need} per axis "
                f"(Nyquist), but the grid (with padding) has {tuple(shape)}; lower model.modes or "
                "raise the resolution")

    def forward(self, v: Tensor) -> Tensor:
        """``[B, in_channels, *S]`` -> ``[B, out_channels, *S]`` with ``len(S) == n_dims``.

        The transforms are taken one axis at a time and only over the kept modes: the real FFT
        of the last axis, cut to ``modes``, then the complex FFT of each other axis, cut to its
        two blocks (the inverse pads the same way). This is ``rfftn`` / ``irfftn`` of the
        truncated spectrum, without transforming or zero-filling the coefficients the layer
        drops. Where the last axis keeps at most a quarter of its points (``4 modes <= n``),
        its transforms are products with the ``n x 2 modes`` real DFT matrices instead: on a
        CPU that halves a 1D layer's training step at 1024 points, 16 modes."""
        shape = v.shape[-self.n_dims:]
        self.check_resolution(shape)
        m, n = self.modes, shape[-1]
        by_matrix = 4 * m <= n
        # under mixed precision the spectral path stays in the weights' precision: there is no
        # bfloat16 FFT, and half-precision cuFFT takes power-of-two sizes only
        with torch.autocast(v.device.type, enabled=False):
            v = v.to(self.weight.dtype)
            if by_matrix:
                forward, inverse = self._dft(n, v.dtype, v.device)
                v_hat = torch.view_as_complex((v @ forward).unflatten(-1, (m, 2)))
            else:
                v_hat = torch.fft.rfft(v, dim=-1)[..., :m]
            for axis in range(-2, -self.n_dims - 1, -1):
                v_hat = torch.fft.fft(v_hat, dim=axis)
                v_hat = torch.cat([v_hat.narrow(axis, 0, m), v_hat.narrow(axis, shape[axis] - m, m)], dim=axis)
            y = self._mix(v_hat)  # [B, out, 2m, ..., 2m, m]
            for axis in range(-2, -self.n_dims - 1, -1):
                gap = list(y.shape)
                gap[axis] = shape[axis] - 2 * m
                y = torch.cat([y.narrow(axis, 0, m), y.new_zeros(gap), y.narrow(axis, m, m)], dim=axis)
                y = torch.fft.ifft(y, dim=axis)
            if by_matrix:
                return torch.view_as_real(y).flatten(-2) @ inverse
            return torch.fft.irfft(y, n=n, dim=-1)

    def _dft(self, n: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        """The truncated real DFT of ``n`` points as matrices: ``[n, 2 modes]`` to the kept
        coefficients (real and imaginary parts interleaved, as ``view_as_complex`` reads them),
        and ``[2 modes, n]`` back, as ``irfft`` of the spectrum zero-padded to ``n // 2 + 1``
        (the mean's imaginary part ignored); made in float64 once per size, dtype and device."""
        cache = self.__dict__.setdefault("_dft_cache", {})
        key = (n, dtype, device)
        if key not in cache:
            m = self.modes
            angle = (2 * math.pi / n) * torch.outer(torch.arange(n, dtype=torch.float64),
                                                    torch.arange(m, dtype=torch.float64))  # [n, m]
            forward = torch.stack([torch.cos(angle), -torch.sin(angle)], dim=-1).reshape(n, 2 * m)
            weight = torch.full((m, 1), 2.0 / n, dtype=torch.float64)  # each mode stands for its conjugate too
            weight[0] = 1.0 / n
            inverse = torch.stack([weight * torch.cos(angle.T), -weight * torch.sin(angle.T)], dim=1).reshape(2 * m, n)
            cache[key] = (forward.to(dtype=dtype, device=device), inverse.to(dtype=dtype, device=device))
        return cache[key]

    def _mix(self, x: Tensor) -> Tensor:
        """``y[b, o, q] = sum_i x[b, i, q] R[k(q), i, o, m(q)]`` for the kept coefficients ``x``
        ``[B, in, 2m, ..., 2m, m]`` (each full axis holds the non-negative block, then the
        negative one), as one real batched matrix product over all kept modes.

        A complex batched product runs as a loop over its batch on some backends (on a CPU, a
        few small ops per kept mode: thousands per 2D layer); the real form
        ``[x_re, x_im] [[R_re, R_im], [-R_im, R_re]]`` is one ``bmm``.
        """
        batch, c_in = x.shape[:2]
        d, m, full = self.n_dims, self.modes, self.n_dims - 1
        c_out, n_modes = self.out_channels, len(self.blocks) * m ** d
        # [B, in, (2, m) per full axis, m, 2] -> [blocks..., modes..., B, 2, in] -> [M, B, 2 in]
        xv = torch.view_as_real(x).reshape(batch, c_in, *([2, m] * full), m, 2)
        blocks, modes = [2 + 2 * i for i in range(full)], [3 + 2 * i for i in range(full)] + [2 + 2 * full]
        xr = xv.permute(*blocks, *modes, 0, 3 + 2 * full, 1).reshape(n_modes, batch, 2 * c_in)
        y = torch.bmm(xr, self._real_weight())  # [M, B, 2 out]
        # -> [blocks..., modes..., B, 2, out] -> [B, out, (2, m) per full axis, m, 2]
        y = y.reshape(*([2] * full), *([m] * d), batch, 2, c_out)
        interleaved = [a for i in range(full) for a in (i, full + i)]
        y = y.permute(full + d, full + d + 2, *interleaved, full + d - 1, full + d + 1)
        return torch.view_as_complex(y.contiguous().view(batch, c_out, *([2 * m] * full), m, 2))

    def _real_weight(self) -> Tensor:
        """The weights as the real ``[M, 2 in, 2 out]`` matrices of :meth:`_mix`.

        Without autograd (evaluation, rollouts, ``sciml solve``) the matrices are kept until the
        weight changes, instead of being copied out of the parameter at every call. The key is
        the tensor's storage and version, which every in-place update (an optimiser step,
        ``load_state_dict``) and every ``.to()`` changes; a write through ``weight.data`` is not
        seen, so code that writes weights that way must do so before the first evaluation.
        """
        weight, grad = self.weight, torch.is_grad_enabled()
        key = None if grad else (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        cached = self.__dict__.get("_real_weight_cache")
        if not grad and cached is not None and cached[0] == key:
            return cached[1]
        k, d = weight.shape[0], self.n_dims
        m = k * self.modes ** d
        w_re, w_im = weight[..., 0], weight[..., 1]  # [k, in, out, *modes]
        w = torch.cat([torch.cat([w_re, w_im], dim=2), torch.cat([-w_im, w_re], dim=2)], dim=1)
        w = w.permute(0, *range(3, 3 + d), 1, 2).reshape(m, 2 * self.in_channels, 2 * self.out_channels)
        if not grad:
            self.__dict__["_real_weight_cache"] = (key, w)
        return w


class FourierLayer(nn.Module):
    """``v -> W v + F^{-1}(R . F v)``: a spectral convolution plus a pointwise linear path.

    The activation is applied by the caller, so a layer on its own is linear and, for
    band-limited input and ``modes`` below Nyquist, commutes with sampling exactly.

    Parameters
    ----------
    width
        Channels ``C`` in and out; input and output are ``[B, C, *S]``.
    modes, n_dims
        See :class:`SpectralConv`.
    """

    def __init__(self, width: int, modes: int, n_dims: int) -> None:
        super().__init__()
        self.spectral = SpectralConv(width, width, modes, n_dims)
        self.linear = nn.Linear(width, width)  # the 1x1 convolution W of Li et al. (2021)

    def forward(self, v: Tensor) -> Tensor:
        return self.spectral(v) + pointwise(self.linear, v)


class FourierNet(nn.Module):
    """A small FNO body as a network: pointwise lifting to ``width`` channels, ``layers`` Fourier
    layers with GELU between them, pointwise projection; ``[B, in_channels, *S]`` ->
    ``[B, out_channels, *S]`` at any resolution with at least ``2 modes`` points per axis.
    ``zero_last`` starts the projection at zero."""

    def __init__(self, n_dims: int, in_channels: int, out_channels: int, width: int = 16, modes: int = 8,
                 layers: int = 3, zero_last: bool = True) -> None:
        super().__init__()
        self.lift = nn.Linear(in_channels, width)
        self.layers = nn.ModuleList(FourierLayer(width, modes, n_dims) for _ in range(layers))
        self.project = nn.Linear(width, out_channels)
        if zero_last:
            nn.init.zeros_(self.project.weight)
            nn.init.zeros_(self.project.bias)

    def forward(self, x: Tensor) -> Tensor:
        v = pointwise(self.lift, x)
        for i, layer in enumerate(self.layers):
            v = layer(v)
            if i < len(self.layers) - 1:
                v = nn.functional.gelu(v)
        return pointwise(self.project, v)
