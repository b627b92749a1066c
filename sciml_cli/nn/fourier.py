"""Fourier layers (Li et al. 2021, "Fourier Neural Operator for Parametric Partial Differential
Equations"): the spectral convolution ``v -> F^{-1}(R . F v)`` and the layer ``W v + F^{-1}(R . F v)``.

Every weight acts pointwise or on Fourier coefficients, never on grid indices, so a layer applies
at any resolution. Used by the FNO; any model that needs a global, resolution-free convolution
(e.g. a hybrid solver's correction) may build them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import Tensor, nn

_T = TypeVar("_T")

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


def kept_without_grad(owner: nn.Module, name: str, tensors: Sequence[Tensor], build: Callable[[], _T]) -> _T:
    """``build()``, kept in ``owner`` under ``name`` while autograd is off (evaluation, rollouts,
    ``sciml solve``) until one of ``tensors`` changes; rebuilt at every call with autograd on.

    The key is each tensor's storage and version, which every in-place update (an optimiser
    step, ``load_state_dict``) and every ``.to()`` changes; a write through ``.data`` is not seen,
    so code that writes weights that way must do so before the first evaluation.
    """
    if torch.is_grad_enabled():
        return build()
    key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
    cached = owner.__dict__.get(name)
    if cached is not None and cached[0] == key:
        return cached[1]
    value = build()
    owner.__dict__[name] = (key, value)
    return value


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
            m, dft = self.modes, TruncatedDFT((n,), self.modes, torch.float64, torch.device("cpu"))
            # TruncatedDFT's blocks of real parts, then imaginary ones, interleaved per mode here
            forward = dft.last_forward.view(2, m, n).permute(2, 1, 0).reshape(n, 2 * m)
            inverse = dft.last_inverse.view(n, 2, m).permute(2, 1, 0).reshape(2 * m, n)
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
        """The weights as the real ``[M, 2 in, 2 out]`` matrices of :meth:`_mix`, kept without
        autograd until the weight changes (:func:`kept_without_grad`) instead of being copied out
        of the parameter at every call."""
        return kept_without_grad(self, "_real_weight_cache", [self.weight], self._build_real_weight)

    def _build_real_weight(self) -> Tensor:
        weight, k, d = self.weight, self.weight.shape[0], self.n_dims
        m = k * self.modes ** d
        w_re, w_im = weight[..., 0], weight[..., 1]  # [k, in, out, *modes]
        w = torch.cat([torch.cat([w_re, w_im], dim=2), torch.cat([-w_im, w_re], dim=2)], dim=1)
        return w.permute(0, *range(3, 3 + d), 1, 2).reshape(m, 2 * self.in_channels, 2 * self.out_channels)


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


class TruncatedDFT:
    """The Fourier transform a :class:`SpectralConv` takes, kept modes only, as matrix products on
    fields stored spatial axes first and channels last.

    :meth:`forward` takes ``[*S, P]`` (``P`` any number of columns, e.g. batch x channels) to the
    real and imaginary parts ``[2, Q, P]`` of the kept coefficients: along each axis but the last
    the blocks ``0 .. modes-1`` and ``-modes .. -1``, along the last ``0 .. modes-1`` of the real
    transform, ``Q`` of them ordered as the axes. :meth:`inverse` takes them back to the grid as
    ``irfftn`` of the spectrum zero-filled elsewhere (the imaginary parts of the last axis's mean
    and Nyquist coefficients ignored).

    Each axis is one product with an ``[n x 2 modes]``-sized real matrix (made in float64 once),
    and the layouts are such that no product needs a copy of its operands: on the small grids of
    a hybrid solver's correction (16 samples x 12 channels on 32 x 32) the transforms of FFT
    plus cuts, pads and permutes spent most of their time in copies.
    """

    def __init__(self, shape: Sequence[int], modes: int, dtype: torch.dtype, device: torch.device) -> None:
        self.shape, self.modes = tuple(int(n) for n in shape), int(modes)
        m = self.modes

        def trig(rows: Tensor, cols: Tensor, n: int) -> tuple[Tensor, Tensor]:
            theta = (2 * math.pi / n) * torch.outer(rows.double(), cols.double())
            return torch.cos(theta), torch.sin(theta)

        def cast(matrix: Tensor) -> Tensor:
            return matrix.to(dtype=dtype, device=device).contiguous()

        *full, last = self.shape
        c, s = trig(torch.arange(m), torch.arange(last), last)  # [m, n]
        weight = torch.full((m, 1), 2.0 / last, dtype=torch.float64)  # a coefficient stands for its conjugate too
        weight[0] = 1.0 / last
        if 2 * (m - 1) == last:
            weight[m - 1] = 1.0 / last  # Nyquist has no conjugate
        #: the last axis: ``[(re/im, k), j]`` and back ``[j, (re/im, k)]``
        self.last_forward = cast(torch.cat([c, -s]))
        self.last_inverse = cast(torch.cat([weight * c, -weight * s]).T)
        #: each other axis: ``[(re/im out, k), (j, re/im in)]`` and back ``[(j, re/im out), (re/im in, k)]``
        self.full_forward, self.full_inverse = [], []
        for n in full:
            kept = torch.cat([torch.arange(m), torch.arange(n - m, n)])
            c, s = trig(kept, torch.arange(n), n)  # [2m, n]
            forward = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)])  # e^{-i theta} (a + i b)
            inverse = torch.stack([torch.stack([c.T, -s.T], 1), torch.stack([s.T, c.T], 1)], 1) / n  # e^{i theta} (a + i b) / n
            self.full_forward.append(cast(forward.reshape(4 * m, 2 * n)))
            self.full_inverse.append(cast(inverse.reshape(2 * n, 4 * m)))

    @staticmethod
    def _left(matrix: Tensor, x: Tensor) -> Tensor:
        """``matrix @ x[i]`` for each ``i`` of ``x`` ``[L, K, N]``."""
        return (matrix @ x[0]).unsqueeze(0) if x.shape[0] == 1 else torch.matmul(matrix, x)

    def forward(self, v: Tensor) -> Tensor:
        """``[*S, P]`` -> ``[2, Q, P]``."""
        *full, last = self.shape
        columns, m = v.shape[-1], self.modes
        lead = v.numel() // (last * columns)
        y = self._left(self.last_forward, v.reshape(lead, last, columns))  # [lead, (re/im, k), P]
        width = m * columns
        for axis in reversed(range(len(full))):
            lead //= full[axis]
            y = self._left(self.full_forward[axis], y.reshape(lead, 2 * full[axis], width))
            width *= 2 * m
        return y.reshape(2, -1, columns)

    def inverse(self, y: Tensor) -> Tensor:
        """``[2, Q, P]`` -> ``[*S, P]``."""
        *full, last = self.shape
        columns, m, lead = y.shape[-1], self.modes, 1
        for axis, n in enumerate(full):
            y = self._left(self.full_inverse[axis], y.reshape(lead, 4 * m, -1))  # [lead, (j, re/im), ...]
            lead *= n
        return self._left(self.last_inverse, y.reshape(lead, 2 * m, columns)).reshape(*self.shape, columns)


class FourierNet(nn.Module):
    """A small FNO body as a network: pointwise lifting to ``width`` channels, ``layers`` Fourier
    layers with GELU between them, pointwise projection; ``[B, in_channels, *S]`` ->
    ``[B, out_channels, *S]`` at any resolution with at least ``2 modes`` points per axis.
    ``zero_last`` starts the projection at zero.

    Evaluated for small grids and many steps (a hybrid solver's correction): fields are kept
    spatial axes first and channels last, so every pointwise layer is one matrix product and the
    transforms are :class:`TruncatedDFT`'s; the lifting is folded into the first layer and the
    projection into the last (both are linear and the activation comes between layers only), so
    the first layer transforms the ``in_channels`` inputs rather than ``width`` channels and the
    last transforms ``out_channels`` back. The bias of a layer is added to the mean coefficient
    of its spectral path. Same function, parameters and gradients as the layer-by-layer
    definition (:class:`FourierLayer`) up to rounding; the folded weights are kept while autograd
    is off until a parameter changes.
    """

    def __init__(self, n_dims: int, in_channels: int, out_channels: int, width: int = 16, modes: int = 8,
                 layers: int = 3, zero_last: bool = True) -> None:
        super().__init__()
        self.n_dims, self.modes = n_dims, modes
        self.lift = nn.Linear(in_channels, width)
        self.layers = nn.ModuleList(FourierLayer(width, modes, n_dims) for _ in range(layers))
        self.project = nn.Linear(width, out_channels)
        if zero_last:
            nn.init.zeros_(self.project.weight)
            nn.init.zeros_(self.project.bias)

    def layerwise(self, x: Tensor) -> Tensor:
        """The definition, one module after the other (what :meth:`forward` computes)."""
        v = pointwise(self.lift, x)
        for i, layer in enumerate(self.layers):
            v = layer(v)
            if i < len(self.layers) - 1:
                v = nn.functional.gelu(v)
        return pointwise(self.project, v)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_channels, *S]`` -> ``[B, out_channels, *S]``."""
        return self.on_grid(x.movedim(1, -1).movedim(0, -2)).movedim(-2, 0).movedim(-1, 1)

    def on_grid(self, v: Tensor) -> Tensor:
        """The same on fields stored spatial axes first: ``[*S, B, in_channels]`` ->
        ``[*S, B, out_channels]`` (a contiguous input is used as it is, without a copy)."""
        *shape, batch, _ = v.shape
        self.layers[0].spectral.check_resolution(shape)
        weight = self.lift.weight
        # no autocast: half-precision DFT matrices would cost the spectral path its accuracy
        with torch.autocast(v.device.type, enabled=False):
            dft = self._dft(tuple(shape), weight.dtype, weight.device)
            points = math.prod(shape)
            v = v.to(weight.dtype).contiguous()
            folded = self._folded()
            for i, (r_re, r_im, r_im_neg, linear, constant) in enumerate(folded):
                c, o = linear.shape
                z = dft.forward(v.view(*shape, batch * c)).view(2, -1, batch, c)  # [2, Q, B, C]
                y_re = torch.baddbmm(torch.bmm(z[1], r_im_neg), z[0], r_re)
                y_re[0] += points * constant  # the bias: a constant field, all in the mean coefficient
                y_im = torch.baddbmm(torch.bmm(z[1], r_re), z[0], r_im)
                spectral = dft.inverse(torch.stack([y_re, y_im]).view(2, -1, batch * o))
                v = torch.addmm(spectral.view(-1, o), v.view(-1, c), linear).view(*shape, batch, o)
                if i < len(folded) - 1:
                    v = nn.functional.gelu(v)
        return v

    def _dft(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> TruncatedDFT:
        cache = self.__dict__.setdefault("_dft_cache", {})
        key = (shape, dtype, device)
        if key not in cache:
            cache[key] = TruncatedDFT(shape, self.modes, dtype, device)
        return cache[key]

    def _folded(self) -> list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]]:
        """Per layer: the spectral weights ``[Q, in, out]`` (real, imaginary, minus imaginary),
        the pointwise matrix ``[in, out]`` and the constant ``[out]``, with the lifting folded into
        the first layer and the projection into the last; kept without autograd until a
        parameter changes (:func:`kept_without_grad`)."""
        return kept_without_grad(self, "_folded_cache", list(self.parameters()), self._fold)

    def _fold(self) -> list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]]:
        d, m, last = self.n_dims, self.modes, len(self.layers) - 1
        folded = []
        for i, layer in enumerate(self.layers):
            w = layer.spectral.weight  # [blocks, in, out, m ... m, 2]
            c_in, c_out = w.shape[1:3]
            w = w.reshape(*([2] * (d - 1)), c_in, c_out, *([m] * d), 2)
            # -> [(block, mode) per full axis, mode of the last axis, in, out, re/im]: TruncatedDFT's order
            order = [a for k in range(d - 1) for a in (k, d + 1 + k)] + [2 * d, d - 1, d, 2 * d + 1]
            w = w.permute(order).reshape(-1, c_in, c_out, 2)
            r_re, r_im = w[..., 0], w[..., 1]
            linear, constant = layer.linear.weight.T, layer.linear.bias
            if i == 0:
                lift = self.lift.weight.T
                constant = constant + self.lift.bias @ (linear + r_re[0])
                r_re, r_im, linear = lift @ r_re, lift @ r_im, lift @ linear
            if i == last:
                project = self.project.weight.T
                constant = constant @ project + self.project.bias
                r_re, r_im, linear = r_re @ project, r_im @ project, linear @ project
            folded.append((r_re.contiguous(), r_im.contiguous(), (-r_im).contiguous(), linear, constant))
        return folded
