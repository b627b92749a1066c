"""Parallel-beam X-ray computed tomography on ``[-1, 1]^2``.

An attenuation image ``a`` (``[N, size, size]``, pixel ``[i, j]`` at ``(x_i, y_j)``, unitless
attenuation per unit length of the square) is measured through the Radon transform at
``n_angles`` angles in ``[0, pi)`` and ``n_detectors`` bins,

    b = A a + e,    e ~ N(0, sigma^2 I),    sigma = (noise_percent / 100) * mean |A a|,

one ``sigma`` per image. The noise level is relative to the **mean absolute value** of the clean
sinogram, the convention of Adler & Öktem (2017, 2018) for learned iterative CT
("5 % additive Gaussian noise" on 128 x 128 images from 30 angles; their code draws
``white_noise * mean(abs(data)) * 0.05``), which this problem's defaults reproduce.

Phantoms are sums of constant ellipses: the modified Shepp–Logan head (Toft 1996, the
higher-contrast intensities of Shepp & Logan 1974) or random ellipses drawn from a seeded
``torch.Generator``. Because ellipses have an exact Radon transform (a chord length times the
intensity), the data can also be computed analytically (``data_model="analytic"``), which avoids
the "inverse crime" of simulating and inverting with the same discrete operator (Kaipio &
Somersalo 2007).

Reconstructions: filtered back-projection, and gradient descent with a fixed step ``1 / L`` on

    J(a) = ||A a - b||^2 + lambda R(a),   R in {||a||^2, ||D a||^2, sum sqrt(|D a|^2 + eps^2)},

(Tikhonov, gradient-Tikhonov, smoothed total variation; ``D`` forward differences between
neighbouring pixels, zero across the last row/column), where ``L = 2 ||A||^2 + lambda L_R`` is the
Lipschitz constant of ``grad J``, with ``||A||`` from power iteration and ``L_R = 2, 16, 8 / eps``
(``||D||^2 <= 8``).

``forward_model="transmission"`` measures photon counts instead (Beer–Lambert), ``b ~ Poisson(I0
exp(-A a))`` with ``I0 = photons`` per detector bin (Adler & Öktem 2017 use 10^4), and the data
term is the Poisson negative log-likelihood scaled by ``2 / I0``,
``D(a) = (2 / I0) sum(I0 exp(-A a) + b A a)``, whose Hessian at a noise-free solution is
``2 A^T diag(exp(-A a)) A <= 2 A^T A``: the step ``1 / L`` above stays safe. FBP inverts the
log data ``-log(max(b, 1) / I0)``.

For learned reconstruction (the inverse-problem view) the problem draws training pairs of
random ellipses on the fly, holds validation and test images (random ellipses from seeds of their
own, and the Shepp–Logan head in the test split), and reconstructs them classically: FBP, and
gradient descent with Tikhonov and TV whose ``lambda`` is chosen on the validation images.
"""

from __future__ import annotations

import math
import time
from typing import Literal

import torch
from torch import Tensor

from .. import progress
from ..constraints import NonNegativeFloat, PositiveFloat, PositiveInt
from ..numerics.image_metrics import psnr, ssim
from ..numerics.metrics import error_metrics
from ..numerics.radon import Filter, RadonTransform
from .base import ImageSet, InverseProblem, Problem, Reconstruction, Solution

Regulariser = Literal["tikhonov", "gradient", "tv"]

# Modified Shepp–Logan (Toft 1996): intensity, semi-axes a, b, centre x0, y0, rotation (degrees)
_SHEPP_LOGAN = (
    (1.00, 0.6900, 0.9200, 0.00, 0.0000, 0.0),
    (-0.80, 0.6624, 0.8740, 0.00, -0.0184, 0.0),
    (-0.20, 0.1100, 0.3100, 0.22, 0.0000, -18.0),
    (-0.20, 0.1600, 0.4100, -0.22, 0.0000, 18.0),
    (0.10, 0.2100, 0.2500, 0.00, 0.3500, 0.0),
    (0.10, 0.0460, 0.0460, 0.00, 0.1000, 0.0),
    (0.10, 0.0460, 0.0460, 0.00, -0.1000, 0.0),
    (0.10, 0.0460, 0.0230, -0.08, -0.6050, 0.0),
    (0.10, 0.0230, 0.0230, 0.00, -0.6060, 0.0),
    (0.10, 0.0230, 0.0460, 0.06, -0.6050, 0.0),
)
# the original head (Shepp & Logan 1974) differs only in the intensities
_SHEPP_LOGAN_ORIGINAL_RHO = (2.0, -0.98, -0.02, -0.02, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01)


# -- phantoms -------------------------------------------------------------------------------------
def shepp_logan_ellipses(modified: bool = True) -> Tensor:
    """The ten ellipses of the Shepp–Logan head, ``[10, 6]`` float64: intensity, semi-axes
    ``a`` (along the rotated x axis), ``b``, centre ``x0, y0``, rotation ``phi`` in radians
    (counter-clockwise). ``modified`` picks Toft's (1996) contrast, values in ``[0, 1]``."""
    e = torch.tensor(_SHEPP_LOGAN, dtype=torch.float64)
    e[:, 5] = torch.deg2rad(e[:, 5])
    if not modified:
        e[:, 0] = torch.tensor(_SHEPP_LOGAN_ORIGINAL_RHO, dtype=torch.float64)
    return e


def random_ellipses(
    n: int,
    generator: torch.Generator,
    count: tuple[int, int] = (5, 15),
    axes: tuple[float, float] = (0.05, 0.4),
    intensity: tuple[float, float] = (0.1, 0.5),
    radius: float = 0.9,
) -> Tensor:
    """``n`` random ellipse sets, ``[n, count[1], 6]`` float64 (unused rows have intensity 0).

    Per image: ``count`` ellipses (uniform integer in the closed range), semi-axes uniform in
    ``axes``, rotation uniform in ``[0, pi)``, positive intensity uniform in ``intensity`` (so
    overlaps add up, like tissue densities), and a centre uniform in the disc that keeps every
    ellipse inside the circle of ``radius`` (within the inscribed circle of the square, so no
    projection is truncated at any angle). Drawn on the CPU from ``generator``.
    """
    lo, hi = count
    k = torch.randint(lo, hi + 1, (n, 1), generator=generator)
    u = torch.rand(n, hi, 6, generator=generator, dtype=torch.float64)
    rho = intensity[0] + (intensity[1] - intensity[0]) * u[..., 0]
    rho = torch.where(torch.arange(hi)[None, :] < k, rho, torch.zeros_like(rho))
    a = axes[0] + (axes[1] - axes[0]) * u[..., 1]
    b = axes[0] + (axes[1] - axes[0]) * u[..., 2]
    r = (radius - torch.maximum(a, b)) * u[..., 3].sqrt()  # uniform over the allowed disc
    t = 2 * math.pi * u[..., 4]
    phi = math.pi * u[..., 5]
    return torch.stack([rho, a, b, r * torch.cos(t), r * torch.sin(t), phi], dim=-1)


def rasterize(ellipses: Tensor, size: int, supersample: int = 4, chunk: int | None = None,
              device: torch.device | str | None = None) -> Tensor:
    """Pixel averages of a sum of ellipses, ``[N, E, 6]`` -> ``[N, size, size]``, float64.

    Each pixel is the mean of ``supersample^2`` point values on a regular sub-grid, which
    approximates the cell average (the L2 projection onto pixels) and avoids the jagged edges
    of point sampling. Drawn on ``device`` (default: the ellipses'), ``chunk`` images at a time
    (the fine grid of one is ``(size * supersample)^2`` values; default 4 on the CPU, all at once
    on an accelerator, where drawing a training batch on the host would cost more than the step).
    """
    if ellipses.dim() == 2:
        ellipses = ellipses[None]
    device = torch.device(device) if device is not None else ellipses.device
    # which ellipse slots any image of a chunk uses, decided before the copy (no device sync)
    used = (ellipses[..., 0] != 0).cpu()
    ellipses = ellipses.to(device=device, dtype=torch.float64)
    chunk = int(chunk or (4 if device.type == "cpu" else ellipses.shape[0]))
    s = int(supersample)
    m = size * s
    fine = -1.0 + (torch.arange(m, dtype=torch.float64, device=device) + 0.5) * (2.0 / m)
    out = []
    for part, part_used in zip(ellipses.split(chunk), used.split(chunk)):
        rho, a, b, x0, y0, phi = part.unbind(-1)  # [n, E]
        c2, s2, cs = torch.cos(phi) ** 2, torch.sin(phi) ** 2, torch.cos(phi) * torch.sin(phi)
        # u^2 + v^2 of the rotated, scaled offsets as one quadratic form in (dx, dy)
        p_xx, p_yy = c2 / a**2 + s2 / b**2, s2 / a**2 + c2 / b**2
        p_xy = 2 * cs * (1 / a**2 - 1 / b**2)
        img = torch.zeros(part.shape[0], m, m, dtype=torch.float64, device=device)
        for k in range(part.shape[1]):
            if not bool(part_used[:, k].any()):
                continue  # padding rows of random_ellipses
            dx = fine[None, :, None] - x0[:, k, None, None]  # [n, m, 1]
            dy = fine[None, None, :] - y0[:, k, None, None]  # [n, 1, m]
            q = p_xx[:, k, None, None] * dx**2 + p_yy[:, k, None, None] * dy**2
            q = torch.addcmul(q, p_xy[:, k, None, None] * dx, dy)
            img += torch.where(q <= 1.0, rho[:, k, None, None], 0.0)
        out.append(torch.nn.functional.avg_pool2d(img[:, None], s)[:, 0] if s > 1 else img)
    return torch.cat(out)


def ellipse_sinogram(ellipses: Tensor, angles: Tensor, detectors: Tensor) -> Tensor:
    """Exact Radon transform of a sum of ellipses, ``[N, E, 6]`` -> ``[N, A, D]``, float64.

    For one ellipse (Kak & Slaney 1988, eq. 3.3), with ``alpha^2 = a^2 cos^2(theta - phi) +
    b^2 sin^2(theta - phi)`` and ``t = s - x0 cos(theta) - y0 sin(theta)``:
    ``p(theta, s) = 2 rho a b sqrt(alpha^2 - t^2) / alpha^2`` where ``|t| < alpha``, else 0.
    """
    if ellipses.dim() == 2:
        ellipses = ellipses[None]
    e = ellipses.to(torch.float64)[:, :, :, None, None]  # [N, E, 6, 1, 1]
    rho, a, b, x0, y0, phi = e.unbind(2)
    th = angles.to(e)[None, None, :, None]
    s = detectors.to(e)[None, None, None, :]
    alpha2 = (a * torch.cos(th - phi)) ** 2 + (b * torch.sin(th - phi)) ** 2
    t = s - x0 * torch.cos(th) - y0 * torch.sin(th)
    chord = 2 * a * b * torch.sqrt(torch.clamp(alpha2 - t * t, min=0.0)) / alpha2
    return (rho * chord).sum(1)


# -- regularisers ---------------------------------------------------------------------------------
def image_gradient(image: Tensor) -> Tensor:
    """Forward differences ``[..., H, W]`` -> ``[..., 2, H, W]`` (x then y), zero across the
    last row/column (a Neumann boundary), in intensity per pixel."""
    dx = torch.zeros_like(image)
    dy = torch.zeros_like(image)
    dx[..., :-1, :] = image[..., 1:, :] - image[..., :-1, :]
    dy[..., :, :-1] = image[..., :, 1:] - image[..., :, :-1]
    return torch.stack([dx, dy], dim=-3)


def image_gradient_adjoint(field: Tensor) -> Tensor:
    """The exact adjoint ``D^T`` of :func:`image_gradient` (minus the discrete divergence),
    ``[..., 2, H, W]`` -> ``[..., H, W]``."""
    px, py = field[..., 0, :, :], field[..., 1, :, :]
    out = torch.zeros_like(px)
    out[..., :-1, :] -= px[..., :-1, :]
    out[..., 1:, :] += px[..., :-1, :]
    out[..., :, :-1] -= py[..., :, :-1]
    out[..., :, 1:] += py[..., :, :-1]
    return out


#: ``||D||^2 <= 8`` for forward differences in 2D (the eigenvalues of the Neumann Laplacian)
_GRAD_NORM2 = 8.0


#: lambda grids searched on the validation images (scaled by the data term's size: see
#: :meth:`Ct.classical`)
_TUNE_GRID = {"tikhonov": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
              "tv": (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)}
#: generator seeds of the fixed image sets (training seeds stay below them)
_IMAGE_SEEDS = {"val": 10**9 + 1, "test": 10**9 + 2}


class Ct(Problem, InverseProblem):
    """Parallel-beam CT of ellipse phantoms, linear data with Gaussian noise or photon counts.

    Parameters
    ----------
    size
        Image side in pixels (``resolution`` of ``solve`` overrides it).
    n_angles
        Projection angles, ``k pi / n_angles`` for ``k = 0 .. n_angles - 1``.
    n_detectors
        Detector bins at the pixel pitch; null: ``ceil(size * sqrt(2))``, which covers the
        diagonal of the image.
    noise_percent
        Noise standard deviation as a percentage of the mean absolute clean sinogram value, per
        image (Adler & Öktem 2017).
    phantom
        ``shepp_logan``: the modified Shepp–Logan head (Toft 1996), the same for every sample;
        ``ellipses``: random ellipses, drawn from the seed.
    data_model
        ``discrete``: ``b = A a`` with this problem's operator; ``analytic``: the exact line
        integrals of the ellipses (no inverse crime).
    fbp_filter
        Window of the ramp filter for FBP.
    regulariser
        ``R`` for :meth:`regulariser` and :meth:`reconstruct`: ``tikhonov`` ``||a||^2``,
        ``gradient`` ``||D a||^2``, ``tv`` ``sum sqrt(|D a|^2 + eps^2)``.
    reg_weight
        ``lambda`` multiplying ``R``.
    tv_epsilon
        ``eps`` of the smoothed TV, in intensity per pixel (a jump well below it is smoothed
        like a quadratic, above it like TV).
    forward_model
        ``linear``: ``b = A a`` plus Gaussian noise of ``noise_percent``; ``transmission``:
        photon counts ``b ~ Poisson(photons exp(-A a))`` (Beer–Lambert).
    photons
        ``I0``, incident photons per detector bin of the transmission model.
    n_val, n_test
        Held-out random-ellipse images of the validation and test splits (the test split also
        holds the Shepp–Logan head).
    baseline_iterations
        Gradient-descent iterations of the Tikhonov and TV baselines (whose ``lambda`` is chosen
        on the validation images).
    """

    #: learned reconstructions are ranked by PSNR (dB), higher is better
    val_metric = "psnr"
    val_direction = "maximize"

    def __init__(
        self,
        size: PositiveInt = 128,
        n_angles: PositiveInt = 30,
        n_detectors: PositiveInt | None = None,
        noise_percent: NonNegativeFloat = 5.0,
        phantom: Literal["shepp_logan", "ellipses"] = "shepp_logan",
        data_model: Literal["discrete", "analytic"] = "discrete",
        fbp_filter: Filter = "hann",
        regulariser: Regulariser = "tv",
        reg_weight: NonNegativeFloat = 0.001,
        tv_epsilon: PositiveFloat = 0.003,
        forward_model: Literal["linear", "transmission"] = "linear",
        photons: PositiveFloat = 1e4,
        n_val: PositiveInt = 16,
        n_test: PositiveInt = 16,
        baseline_iterations: PositiveInt = 3000,
    ) -> None:
        super().__init__()
        self.dtype = torch.float64  # reference data; `to()` changes it
        if size < 16:
            raise ValueError(f"size: need at least 16 pixels (SSIM uses an 11-pixel window), "
                             f"got {size}")
        self.size, self.n_angles = int(size), int(n_angles)
        self.n_detectors = None if n_detectors is None else int(n_detectors)
        self.noise_percent = float(noise_percent)
        self.phantom, self.data_model, self.fbp_filter = phantom, data_model, fbp_filter
        self.reg_type: Regulariser = regulariser
        self.reg_weight, self.tv_epsilon = float(reg_weight), float(tv_epsilon)
        self.forward_model, self.photons = forward_model, float(photons)
        self.n_val, self.n_test, self.baseline_iterations = int(n_val), int(n_test), int(baseline_iterations)
        self._operators: dict[int, RadonTransform] = {}
        self._norms: dict[int, float] = {}
        self._image_sets: dict[tuple, dict[str, ImageSet]] = {}
        self._tuned: dict[tuple, dict[str, float]] = {}

    # -- geometry and forward model --------------------------------------------------------------
    def image_grid(self) -> Tensor:
        return self.operator().grid

    def operator(self, size: int | None = None) -> RadonTransform:
        """The Radon transform for ``size x size`` images (default ``self.size``), built once."""
        size = int(size or self.size)
        if size not in self._operators:
            self._operators[size] = RadonTransform(size, self.n_angles, self.n_detectors)
        return self._operators[size]

    def opnorm(self, size: int | None = None) -> float:
        """``||A||_2`` by power iteration (cached)."""
        size = int(size or self.size)
        if size not in self._norms:
            self._norms[size] = self.operator(size).opnorm(n_iter=200, rtol=1e-8)
        return self._norms[size]

    def forward(self, image: Tensor) -> Tensor:
        """``A a``: ``[..., S, S]`` -> ``[..., n_angles, n_detectors]``, the size taken from the
        image."""
        return self.operator(image.shape[-1]).forward(image)

    def adjoint(self, sinogram: Tensor, size: int | None = None) -> Tensor:
        """``A^T b``: ``[..., n_angles, n_detectors]`` -> ``[..., S, S]`` (exact adjoint)."""
        return self.operator(size).adjoint(sinogram)

    def fbp(self, sinogram: Tensor, size: int | None = None,
            filter: Filter | None = None) -> Tensor:
        """Filtered back-projection with ``fbp_filter`` (or ``filter``), ``[..., A, D]`` ->
        ``[..., S, S]``."""
        return self.operator(size).fbp(sinogram, filter or self.fbp_filter)

    def phantoms(self, n: int, generator: torch.Generator) -> Tensor:
        """Ellipse parameters ``[n, E, 6]`` (float64, CPU) of ``n`` phantoms."""
        if self.phantom == "shepp_logan":
            return shepp_logan_ellipses().expand(n, -1, -1).clone()
        return random_ellipses(n, generator)

    # -- noise model -------------------------------------------------------------------------------
    def noise_std(self, clean: Tensor) -> Tensor:
        """``sigma`` per sinogram, ``[..., A, D]`` -> ``[...]``: ``noise_percent / 100`` times the
        mean absolute value of the clean sinogram."""
        return self.noise_percent / 100.0 * clean.abs().mean(dim=(-2, -1))

    def add_noise(self, clean: Tensor, generator: torch.Generator) -> Tensor:
        """The measurement of clean line integrals ``A a``: ``clean + sigma * z`` with
        ``z ~ N(0, I)`` (linear model), or photon counts ``Poisson(I0 exp(-clean))``
        (transmission), drawn on the CPU from ``generator``."""
        if self.forward_model == "transmission":
            rate = self.photons * torch.exp(-clean.detach().cpu().double())
            return torch.poisson(rate, generator=generator).to(clean)
        z = torch.randn(clean.shape, generator=generator, dtype=torch.float64)
        return clean + self.noise_std(clean)[..., None, None] * z.to(clean)

    def linearised(self, data: Tensor) -> Tensor:
        """Line integrals estimated from the measurement: ``-log(max(b, 1) / I0)`` for photon
        counts (a zero count would be infinite attenuation), the data itself when linear."""
        if self.forward_model == "transmission":
            return -torch.log(data.clamp(min=1.0) / self.photons)
        return data

    # -- objective ---------------------------------------------------------------------------------
    def data_fidelity(self, image: Tensor, sinogram: Tensor) -> Tensor:
        """``||A a - b||^2`` per image, ``[...]``; for photon counts ``(2 / I0) sum(I0
        exp(-A a) + b A a)`` (the Poisson negative log-likelihood up to a constant)."""
        p = self.forward(image)
        if self.forward_model == "transmission":
            return (2.0 / self.photons) * (self.photons * torch.exp(-p) + sinogram * p).sum(dim=(-2, -1))
        return (p - sinogram).pow(2).sum(dim=(-2, -1))

    def data_fidelity_gradient(self, image: Tensor, sinogram: Tensor) -> Tensor:
        """``2 A^T (A a - b)``, shaped like ``image``; for photon counts
        ``2 A^T (b / I0 - exp(-A a))``."""
        p = self.forward(image)
        if self.forward_model == "transmission":
            return 2.0 * self.adjoint(sinogram / self.photons - torch.exp(-p), image.shape[-1])
        return 2.0 * self.adjoint(p - sinogram, image.shape[-1])

    def regulariser(self, image: Tensor, kind: Regulariser | None = None) -> Tensor:
        """``R(a)`` per image, ``[...]`` (without ``reg_weight``), of ``kind`` (default
        ``regulariser``)."""
        kind = kind or self.reg_type
        if kind == "tikhonov":
            return image.pow(2).sum(dim=(-2, -1))
        g = image_gradient(image)
        if kind == "gradient":
            return g.pow(2).sum(dim=(-3, -2, -1))
        return torch.sqrt(g.pow(2).sum(dim=-3) + self.tv_epsilon**2).sum(dim=(-2, -1))

    def regulariser_gradient(self, image: Tensor, kind: Regulariser | None = None) -> Tensor:
        """``grad R(a)``, shaped like ``image`` (without ``reg_weight``)."""
        kind = kind or self.reg_type
        if kind == "tikhonov":
            return 2.0 * image
        g = image_gradient(image)
        if kind == "gradient":
            return 2.0 * image_gradient_adjoint(g)
        norm = torch.sqrt(g.pow(2).sum(dim=-3, keepdim=True) + self.tv_epsilon**2)
        return image_gradient_adjoint(g / norm)

    def regulariser_lipschitz(self, kind: Regulariser | None = None) -> float:
        """A Lipschitz constant ``L_R`` of :meth:`regulariser_gradient`."""
        return {"tikhonov": 2.0, "gradient": 2.0 * _GRAD_NORM2,
                "tv": _GRAD_NORM2 / self.tv_epsilon}[kind or self.reg_type]

    def objective(self, image: Tensor, sinogram: Tensor) -> Tensor:
        """``||A a - b||^2 + lambda R(a)`` per image."""
        return self.data_fidelity(image, sinogram) + self.reg_weight * self.regulariser(image)

    def step_size(self, size: int | None = None, reg_weight: float | None = None,
                  kind: Regulariser | None = None) -> float:
        """``1 / L``, ``L = 2 ||A||^2 + lambda L_R``, so gradient descent decreases ``J``
        monotonically (any step below ``2 / L`` does)."""
        lam = self.reg_weight if reg_weight is None else reg_weight
        return 1.0 / (2.0 * self.opnorm(size) ** 2 + lam * self.regulariser_lipschitz(kind))

    def reconstruct(self, sinogram: Tensor, n_iter: int = 500, initial: Tensor | None = None,
                    size: int | None = None, reg_weight: float | None = None,
                    kind: Regulariser | None = None) -> Tensor:
        """Gradient descent ``a <- a - (1/L) grad J(a)`` from ``initial`` (default zero),
        ``[..., A, D]`` -> ``[..., S, S]``, with ``lambda`` and ``R`` of the config unless
        given."""
        size = int(size or (initial.shape[-1] if initial is not None else self.size))
        lam = self.reg_weight if reg_weight is None else float(reg_weight)
        kind = kind or self.reg_type
        tau = self.step_size(size, lam, kind)
        a = (torch.zeros(*sinogram.shape[:-2], size, size, dtype=sinogram.dtype,
                         device=sinogram.device) if initial is None else initial.clone())
        with progress.track_steps(n_iter, f"ct: gradient descent ({kind})") as bar:
            for _ in range(n_iter):
                grad = self.data_fidelity_gradient(a, sinogram)
                if lam:
                    grad = grad + lam * self.regulariser_gradient(a, kind)
                a = a - tau * grad
                bar.advance()
        return a

    # -- the inverse-problem view ------------------------------------------------------------------
    def initial(self, data: Tensor) -> Tensor:
        """FBP of the (linearised) measurement."""
        return self.fbp(self.linearised(data))

    def measure(self, ellipses: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(images, data)`` of ellipse phantoms ``[N, E, 6]``, noise from ``generator``."""
        images = rasterize(ellipses, self.size, device=self.device).to(**self.factory)
        if self.data_model == "analytic":
            op = self.operator()
            clean = ellipse_sinogram(ellipses, op.angles, op.detectors).to(**self.factory)
        else:
            clean = self.forward(images)
        return images, self.add_noise(clean, generator)

    def training_pairs(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """``n`` random-ellipse phantoms and their noisy measurements from ``seed``, any seed but
        those of the validation and test images (``_IMAGE_SEEDS``)."""
        if seed in _IMAGE_SEEDS.values():
            raise ValueError(f"seed: {seed} draws the {next(k for k, v in _IMAGE_SEEDS.items() if v == seed)} "
                             "images, not training ones")
        gen = torch.Generator().manual_seed(int(seed))
        return self.measure(random_ellipses(n, gen), gen)

    def image_sets(self, split: str) -> dict[str, ImageSet]:
        """``val``: ``{"ellipses": n_val random phantoms}``; ``test``: ``{"ellipses": n_test
        others, "shepp_logan": the modified head}``, each with its own noise draw; cached per
        device and dtype."""
        key = (split, self.device, self.dtype)
        if key not in self._image_sets:
            seed = _IMAGE_SEEDS["val" if split == "val" else "test"]
            gen = torch.Generator().manual_seed(seed)
            n = self.n_val if split == "val" else self.n_test
            images, data = self.measure(random_ellipses(n, gen), gen)
            sets = {"ellipses": ImageSet(images, data, f"{n} random ellipse phantoms (seed {seed})")}
            if split != "val":
                images, data = self.measure(shepp_logan_ellipses()[None], gen)
                sets["shepp_logan"] = ImageSet(images, data, "modified Shepp-Logan (Toft 1996)")
            self._image_sets[key] = sets
        return self._image_sets[key]

    def tuned_weights(self) -> dict[str, float]:
        """``lambda`` of the Tikhonov and TV baselines: the best mean PSNR on the validation
        images over a grid (:data:`_TUNE_GRID`, times the data term's scale ``2 ||A||^2``),
        ``baseline_iterations`` gradient-descent steps from FBP each; cached."""
        key = (self.device, self.dtype, self.baseline_iterations)
        if key not in self._tuned:
            val = self.image_sets("val")["ellipses"]
            start = self.initial(val.data)
            scale = 2.0 * self.opnorm() ** 2
            best: dict[str, float] = {}
            for kind, grid in _TUNE_GRID.items():
                scores = {}
                for lam in grid:
                    recon = self.reconstruct(val.data, self.baseline_iterations, start, reg_weight=lam * scale,
                                             kind=kind)
                    scores[lam * scale] = psnr(recon, val.images).mean().item()
                best[kind] = max(scores, key=scores.get)
            self._tuned[key] = best
        return self._tuned[key]

    def classical(self, image_set: ImageSet) -> dict[str, Reconstruction]:
        """FBP, and ``baseline_iterations`` of gradient descent from it on Tikhonov ``||a||^2``
        and smoothed TV with ``lambda`` from :meth:`tuned_weights` (never tuned on a test
        image)."""
        weights = self.tuned_weights()
        n = image_set.images.shape[0]
        out = {}
        start = time.perf_counter()
        fbp = self.initial(image_set.data)
        self._sync()
        out["fbp"] = Reconstruction(fbp, (time.perf_counter() - start) / n, {"filter": self.fbp_filter})
        for kind in ("tikhonov", "tv"):
            start = time.perf_counter()
            recon = self.reconstruct(image_set.data, self.baseline_iterations, fbp, reg_weight=weights[kind],
                                     kind=kind)
            self._sync()
            out[kind] = Reconstruction(recon, (time.perf_counter() - start) / n,
                                       {"reg_weight": weights[kind], "n_iter": self.baseline_iterations})
        return out

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def baselines(self) -> dict[str, float]:
        """PSNR (dB), SSIM and seconds per image of the classical reconstructions on each test
        image set, e.g. ``tv_psnr_ellipses``, ``fbp_ssim_shepp_logan``."""
        out = {}
        for name, image_set in self.image_sets("test").items():
            for method, rec in self.classical(image_set).items():
                out[f"{method}_psnr_{name}"] = psnr(rec.images, image_set.images).mean().item()
                out[f"{method}_ssim_{name}"] = ssim(rec.images, image_set.images).mean().item()
                out[f"{method}_seconds_per_image_{name}"] = rec.seconds
        return out

    # -- metrics -----------------------------------------------------------------------------------
    def metrics(self, prediction: Tensor, reference: Tensor) -> dict[str, float]:
        """Relative L2, max error and RMSE over all images, plus mean PSNR (dB) and SSIM with
        each reference image's own range."""
        out = error_metrics(prediction, reference)
        p, r = prediction.detach().double(), reference.detach().double()
        out["psnr"] = psnr(p, r).mean().item()
        out["ssim"] = ssim(p, r).mean().item()
        return out

    # -- reference data ----------------------------------------------------------------------------
    def check_solve(self, resolution: int | None = None, n_samples: int = 1) -> None:
        size = int(resolution or self.size)
        if size < 16:
            raise ValueError(f"resolution: need at least 16 pixels, got {size}")
        if n_samples < 1:
            raise ValueError(f"n_samples: need at least one, got {n_samples}")

    def solve(self, resolution: int | None = None, n_samples: int = 1, seed: int = 0) -> Solution:
        """Phantoms, noisy sinograms and their FBP.

        Returns
        -------
        Solution
            ``fields``: ``image`` ``[N, S, S]``, ``sinogram`` ``[N, n_angles, n_detectors]`` (the
            noisy measurement), ``fbp`` ``[N, S, S]``. ``grid``: ``x`` and ``y`` pixel centres
            of the image axes; the sinogram has its own axes, given in ``attrs``: ``angles``
            (radians) and the detector positions ``s_k = detector_first + k *
            detector_spacing`` (units of the square).
        """
        self.check_solve(resolution, n_samples)
        size = int(resolution or self.size)
        start = time.perf_counter()
        op = self.operator(size)
        gen = torch.Generator().manual_seed(seed)
        ellipses = self.phantoms(n_samples, gen)
        if self.phantom == "shepp_logan":  # one head, drawn once
            image = rasterize(ellipses[:1], size, device=self.device).expand(n_samples, -1, -1).clone()
        else:
            image = rasterize(ellipses, size, device=self.device)
        image = image.to(**self.factory)
        if self.data_model == "analytic":
            clean = ellipse_sinogram(ellipses, op.angles, op.detectors).to(**self.factory)
        else:
            clean = op.forward(image)
        noisy = self.add_noise(clean, gen)
        recon = op.fbp(self.linearised(noisy), self.fbp_filter)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        wall = time.perf_counter() - start
        grid = op.grid.to(**self.factory)
        return Solution(
            fields={"image": image, "sinogram": noisy, "fbp": recon},
            grid={"x": grid, "y": grid.clone()},
            attrs={
                "solver": f"fbp-{self.fbp_filter}",
                "phantom": self.phantom,
                "data_model": self.data_model,
                "n_angles": op.n_angles,
                "n_detectors": op.n_detectors,
                "pixel_size": op.pixel_size,
                "detector_spacing": op.detector_spacing,
                "noise_percent": self.noise_percent,
                "forward_model": self.forward_model,
                **({"photons": self.photons} if self.forward_model == "transmission" else {}),
                "fbp_psnr_db": psnr(recon, image).mean().item(),
                "fbp_ssim": ssim(recon, image).mean().item(),
                "wall_time_s": wall,
                "detector_first": op.detectors[0].item(),
                "angles": [round(a, 12) for a in op.angles.tolist()],
            },
        )
