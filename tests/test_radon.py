"""The Radon transform: exact adjoint, exact line integrals, second-order accuracy, agreement with
scikit-image, filtered back-projection, operator norm, autograd."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from sciml_cli.numerics.radon import FILTERS, RadonTransform

SIGMA, X0, Y0 = 0.15, 0.1, -0.05  # a Gaussian well inside the square (tails below 1e-6 at the edge)


def gaussian(op: RadonTransform) -> torch.Tensor:
    x, y = torch.meshgrid(op.grid, op.grid, indexing="ij")
    return torch.exp(-((x - X0) ** 2 + (y - Y0) ** 2) / (2 * SIGMA**2))


def gaussian_sinogram(op: RadonTransform) -> torch.Tensor:
    """Exact line integrals of :func:`gaussian`:
    sqrt(2 pi) sigma exp(-(s - c.theta)^2 / 2 sigma^2)."""
    th, s = op.angles[:, None], op.detectors[None, :]
    t = s - (X0 * torch.cos(th) + Y0 * torch.sin(th))
    return math.sqrt(2 * math.pi) * SIGMA * torch.exp(-(t**2) / (2 * SIGMA**2))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()


GEOMETRIES = [
    {"size": 32, "angles": 30},
    {"size": 33, "angles": 7, "n_detectors": 20, "detector_spacing": 0.1},
    # 45 and 135 degrees sit exactly on the switch between stepping along x and along y
    {"size": 24, "angles": [0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4, 2.0, 5.0, -0.3]},
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_adjoint_is_exact(geometry, dtype, tol):
    """<A x, y> = <x, A^T y> for random x, y, batched: 1e-12 relative in float64, 1e-5 in
    float32."""
    op = RadonTransform(**geometry)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, *op.image_shape, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randn(3, *op.sinogram_shape, generator=g, dtype=torch.float64).to(dtype)
    lhs = (op.forward(x) * y).double().sum(dim=(-2, -1))
    rhs = (x * op.adjoint(y)).double().sum(dim=(-2, -1))
    assert torch.allclose(lhs, rhs, rtol=tol, atol=0)


def test_constant_image_has_the_chord_length_of_the_square():
    """A ray at 0 or 90 degrees through a constant image crosses 2 units of it, exactly."""
    op = RadonTransform(32, [0.0, math.pi / 2])
    p = op.forward(torch.ones(32, 32, dtype=torch.float64))
    inside = op.detectors.abs() < 1 - op.pixel_size
    assert torch.allclose(p[:, inside], torch.full_like(p[:, inside], 2.0), rtol=1e-13, atol=0)
    # at 45 degrees the chord through the centre is the diagonal, 2 sqrt(2)
    op = RadonTransform(32, [math.pi / 4], n_detectors=1)
    p = op.forward(torch.ones(32, 32, dtype=torch.float64))
    assert p.item() == pytest.approx(2 * math.sqrt(2), rel=1e-12)


def test_gaussian_line_integrals_converge_at_second_order():
    """Joseph's method on a smooth image: relative L2 error < 1e-3 at 128 pixels and observed
    order >= 1.8 from 64 to 256 pixels (design order 2, linear interpolation)."""
    err = {}
    for n in (64, 128, 256):
        op = RadonTransform(n, 12)
        err[n] = rel(op.forward(gaussian(op)), gaussian_sinogram(op))
    assert err[128] < 1e-3
    assert math.log2(err[64] / err[256]) / 2 >= 1.8


@pytest.mark.parametrize("circle", [False, True])
def test_agrees_with_skimage_radon(circle):
    """scikit-image's radon (bilinear samples at unit steps along each ray, degrees, values in
    pixel units) on the same geometry: odd size, rows running down y, sinogram [D, A].
    Gaussian: relative L2 < 5e-4; rasterised Shepp–Logan (edges resolved differently by the two
    samplings): < 1e-2. With circle=True skimage keeps the central ``size`` bins."""
    transform = pytest.importorskip("skimage.transform")
    from sciml_cli.problems.ct import rasterize, shepp_logan_ellipses

    n = 129  # skimage rotates about pixel n // 2 and uses ceil(n sqrt 2) = 183 bins: both centred
    op = RadonTransform(n, 30)
    degrees = np.rad2deg(op.angles.numpy())
    lo = (op.n_detectors - n) // 2 if circle else 0
    width = n if circle else op.n_detectors
    for image, tol in ((gaussian(op), 5e-4), (rasterize(shepp_logan_ellipses(), n)[0], 1e-2)):
        ours = op.forward(image)[:, lo:lo + width]
        with warnings.catch_warnings():  # the Gaussian's tails reach outside the circle
            warnings.simplefilter("ignore", UserWarning)
            sk = transform.radon(image.T.flip(0).numpy(), theta=degrees, circle=circle)
        theirs = torch.from_numpy(sk.T.copy()) * op.pixel_size
        assert theirs.shape == ours.shape
        assert rel(ours, theirs) < tol


def test_fbp_of_exact_data_converges_at_second_order():
    """Ramp-filtered back-projection of the exact sinogram of a Gaussian (angles = 2 x size):
    relative L2 error < 3e-3 at 96 pixels, observed order >= 1.8 from 48 to 96."""
    err = {}
    for n in (48, 96):
        op = RadonTransform(n, 2 * n)
        err[n] = rel(op.fbp(gaussian_sinogram(op), "ramp"), gaussian(op))
    assert err[96] < 3e-3
    assert math.log2(err[48] / err[96]) >= 1.8


@pytest.mark.parametrize("filter", FILTERS)
def test_filters_preserve_mean_and_windows_damp_high_frequencies(filter):
    """Every window is 1 at zero frequency, so FBP keeps the image mean (to 1 %); windows other
    than the ramp lower the response at Nyquist."""
    op = RadonTransform(64, 128)
    image = gaussian(op)
    recon = op.fbp(gaussian_sinogram(op), filter)
    assert recon.mean().item() == pytest.approx(image.mean().item(), rel=1e-2)
    nyquist = torch.zeros(op.n_detectors, dtype=torch.float64)
    nyquist[::2], nyquist[1::2] = 1.0, -1.0
    q = op.filter_sinogram(nyquist.expand(*op.sinogram_shape), filter)
    q_ramp = op.filter_sinogram(nyquist.expand(*op.sinogram_shape), "ramp")
    centre = slice(op.n_detectors // 4, 3 * op.n_detectors // 4)
    ratio = (q[0, centre].abs().mean() / q_ramp[0, centre].abs().mean()).item()
    expected = {"ramp": 1.0, "shepp_logan": 2 / math.pi, "cosine": 0.0, "hamming": 0.08,
                "hann": 0.0}
    assert ratio == pytest.approx(expected[filter], abs=1e-2)


def test_opnorm_matches_the_largest_singular_value():
    """Power iteration against the dense matrix's 2-norm, 1e-6 relative."""
    op = RadonTransform(16, 10)
    dense = op.matrix().to_dense()
    exact = torch.linalg.matrix_norm(dense, ord=2).item()
    assert op.opnorm(n_iter=500, rtol=1e-12) == pytest.approx(exact, rel=1e-6)


def test_matrix_rows_hold_two_entries_per_sample():
    """Joseph's rays touch at most two pixels per row or column they cross: at 0 degrees the
    rays run through pixel centres (one pixel per column), at the other angles a ray through the
    middle touches two in each of the 32 columns or rows it steps along. No entry is stored twice
    or as an explicit zero."""
    op = RadonTransform(32, 9)
    matrix = op.matrix()
    counts = matrix.crow_indices().diff().view(9, op.n_detectors)  # [angle, detector]
    assert counts[0].max().item() == 32
    assert counts[1:].max(1).values.tolist() == [2 * 32] * 8
    assert op.nnz == matrix.values().numel() and (matrix.values() != 0).all()


def test_autograd_uses_the_exact_adjoint_to_any_order():
    """Gradients of forward/adjoint are the adjoint/forward (gradcheck), and second derivatives
    through A^T (A x - b) exist (gradgradcheck)."""
    op = RadonTransform(5, 2, n_detectors=7)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 7, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op.forward, (x,))
    assert torch.autograd.gradcheck(op.adjoint, (y,))
    assert torch.autograd.gradgradcheck(lambda a: op.adjoint(op.forward(a) - y.detach()), (x,))
    (grad,) = torch.autograd.grad((op.forward(x) * y.detach()).sum(), x)
    assert torch.allclose(grad, op.adjoint(y.detach()), rtol=1e-14, atol=1e-14)


def test_mixed_precision_leaves_the_operators_in_float32():
    """Under bfloat16 autocast (``trainer.amp``) the projector, its adjoint and the back-projection
    still run in float32, on float32 or bfloat16 input, and gradients flow back to the input's
    dtype (sparse products have no bfloat16 kernel on the CPU, and 8 bits would lose the noise)."""
    op = RadonTransform(16, 12)
    x = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
    sino = op.forward(x)
    expected = {"forward": sino, "adjoint": op.adjoint(sino), "fbp": op.fbp(sino)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = {"forward": op.forward(x), "adjoint": op.adjoint(sino), "fbp": op.fbp(sino)}
        low = x.bfloat16().requires_grad_(True)
        y = op.forward(low)
    for name, value in got.items():
        assert value.dtype == torch.float32, name
        torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-6)
    assert y.dtype == torch.float32
    y.sum().backward()
    assert low.grad.dtype == torch.bfloat16
    torch.testing.assert_close(low.grad.float(), op.adjoint(torch.ones_like(sino[0])).expand(2, -1, -1),
                               rtol=1e-2, atol=1e-2)


def test_leading_dimensions_and_shape_errors():
    op = RadonTransform(16, 4)
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    assert op.forward(x).shape == (2, 3, 4, op.n_detectors)
    assert torch.allclose(op.forward(x)[1, 2], op.forward(x[1, 2]))
    assert op.adjoint(op.forward(x)).shape == x.shape
    with pytest.raises(ValueError, match=r"^image: expected trailing shape \(16, 16\), got \(15, 16\)"):
        op.forward(torch.zeros(15, 16))
    with pytest.raises(ValueError, match=r"^sinogram: expected trailing shape \(4, "):
        op.adjoint(torch.zeros(3, op.n_detectors))
    with pytest.raises(ValueError, match=r"^filter: 'gauss' is not one of ramp, "):
        op.fbp(op.forward(x), "gauss")  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    """The same matrices on the GPU: forward and adjoint agree with the CPU to 1e-12 (float64)
    and the adjoint identity holds to 1e-5 in float32."""
    op = RadonTransform(64, 30)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, 64, generator=g, dtype=torch.float64)
    y = torch.randn(4, *op.sinogram_shape, generator=g, dtype=torch.float64)
    assert torch.allclose(op.forward(x.cuda()).cpu(), op.forward(x), rtol=1e-12, atol=1e-12)
    assert torch.allclose(op.adjoint(y.cuda()).cpu(), op.adjoint(y), rtol=1e-12, atol=1e-12)
    xf, yf = x.float().cuda(), y.float().cuda()
    lhs = (op.forward(xf) * yf).double().sum()
    rhs = (xf * op.adjoint(yf)).double().sum()
    assert lhs.item() == pytest.approx(rhs.item(), rel=1e-5)
