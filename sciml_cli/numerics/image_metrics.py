"""Image quality against a reference: PSNR and SSIM, batched, in torch (any device, differentiable).

Both take images ``[..., H, W]`` and return one value per image, ``[...]``. ``data_range`` is the
dynamic range ``L`` of the reference; by default each reference image's ``max - min`` (the
convention of the CT papers we compare with, e.g. Adler & Öktem 2018, who score the modified
Shepp–Logan phantom with ``L = 1``). Pass it explicitly to compare with other tools:
scikit-image requires it for float images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _data_range(reference: Tensor, data_range: float | Tensor | None) -> Tensor:
    if data_range is None:
        return reference.amax(dim=(-2, -1)) - reference.amin(dim=(-2, -1))
    return torch.as_tensor(data_range, dtype=reference.dtype, device=reference.device)


def psnr(image: Tensor, reference: Tensor, data_range: float | Tensor | None = None) -> Tensor:
    """Peak signal-to-noise ratio ``10 log10(L^2 / MSE)`` in dB, per image.

    Parameters
    ----------
    image, reference
        ``[..., H, W]``, same shape.
    data_range
        ``L``; default ``reference.max() - reference.min()`` per image.

    Returns
    -------
    Tensor
        ``[...]``; ``inf`` where the images are equal.
    """
    if image.shape != reference.shape:
        raise ValueError(f"image: shape {tuple(image.shape)} differs from the reference's "
                         f"{tuple(reference.shape)}")
    mse = (image - reference).pow(2).mean(dim=(-2, -1))
    rng = _data_range(reference, data_range)
    return 10.0 * torch.log10(rng**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5, **factory) -> Tensor:
    """Normalised 1D Gaussian ``[size]`` centred on the middle tap."""
    x = torch.arange(size, **factory) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def ssim(
    image: Tensor,
    reference: Tensor,
    data_range: float | Tensor | None = None,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004), mean over the image.

    Local means, variances and the covariance are weighted by an ``window x window`` Gaussian of
    standard deviation ``sigma`` (the paper's 11 and 1.5), with ``C1 = (k1 L)^2`` and
    ``C2 = (k2 L)^2``; the SSIM map is averaged over the positions where the window lies inside
    the image ("valid" filtering, as in the authors' reference code). Population (biased)
    variances, as in the paper. With these settings it equals
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=L)``, which crops the same border.

    Parameters
    ----------
    image, reference
        ``[..., H, W]``, same shape, ``H, W >= window``.
    data_range
        ``L``; default ``reference.max() - reference.min()`` per image.

    Returns
    -------
    Tensor
        ``[...]``, in ``[-1, 1]``, 1 for equal images.
    """
    if image.shape != reference.shape:
        raise ValueError(f"image: shape {tuple(image.shape)} differs from the reference's "
                         f"{tuple(reference.shape)}")
    if min(image.shape[-2:]) < window:
        raise ValueError(f"image: SSIM needs at least {window} x {window} pixels, "
                         f"got {tuple(image.shape[-2:])}")
    lead = image.shape[:-2]
    x = image.reshape(-1, 1, *image.shape[-2:])
    y = reference.reshape(-1, 1, *reference.shape[-2:]).to(x.dtype)
    g = gaussian_window(window, sigma, dtype=x.dtype, device=x.device)

    def blur(t: Tensor) -> Tensor:  # separable, valid: [B, 1, H, W] -> [B, 1, H-w+1, W-w+1]
        t = F.conv2d(t, g.view(1, 1, -1, 1))
        return F.conv2d(t, g.view(1, 1, 1, -1))

    # one batched convolution for the five local moments
    moments = blur(torch.cat([x, y, x * x, y * y, x * y], dim=1).reshape(-1, 1, *x.shape[-2:]))
    mx, my, mxx, myy, mxy = moments.reshape(x.shape[0], 5, *moments.shape[-2:]).unbind(1)
    vx, vy, cxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    rng = _data_range(reference, data_range).reshape(-1)
    rng = rng.expand(x.shape[0]).reshape(-1, 1, 1).to(x.dtype)
    c1, c2 = (k1 * rng) ** 2, (k2 * rng) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(-2, -1)).reshape(lead)

