"""Viscous Burgers' equation ``u_t + u u_x = nu u_xx`` in two standard setups.

``setup="fno"`` (Li et al. 2021, Fourier neural operator)
    Periodic ``x in [0, 1)``, ``nu = 0.1``; the operator ``u(., 0) -> u(., 1)`` with initial
    conditions drawn from the Gaussian random field
    ``N(0, sigma^2 (-Laplacian + tau^2 I)^(-alpha))``.
    The reference solver is pseudo-spectral (2/3-rule dealiasing) with the exponential time
    differencing scheme ETDRK4 of Cox & Matthews (2002), its coefficients evaluated by the contour
    integrals of Kassam & Trefethen (2005); it runs on ``fine_resolution`` points and is
    subsampled to the resolution asked for. ``nu = 0.1`` is the paper's value; the generator
    script in the authors' repository sets ``visc = 1/1000``. At 0.1 the map is mildly
    nonlinear: the linear heat equation alone predicts ``u(., 1)`` to about 2.5 % (stored as a
    baseline with the data).

``setup="raissi"`` (Raissi, Perdikaris & Karniadakis 2019)
    ``x in [-1, 1]``, ``t in [0, 1]``, ``u(x, 0) = -sin(pi x)``, ``u(+-1, t) = 0``,
    ``nu = 0.01 / pi``. A shock forms at ``x = 0`` near ``t = 1/pi``. The reference is exact:
    the Cole–Hopf transform gives (Basdevant et al. 1986)

        u(x, t) = - int sin(pi (x - eta)) f(x - eta) G(eta) d eta / int f(x - eta) G(eta) d eta,
        f(y) = exp(-cos(pi y) / (2 pi nu)),   G(eta) = exp(-eta^2 / (4 nu t)),

    which :meth:`Burgers.exact` evaluates by Gauss–Hermite quadrature after
    ``eta = sqrt(4 nu t) z``.

The periodic (fno) setup also offers a differentiable solver for hybrid models: the coarse
scheme ``fd2`` is second-order central differences on ``coarse_resolution`` points, the
convection in the skew-symmetric form ``(u u_x + (u^2)_x) / 3`` (which conserves the discrete
energy, so an under-resolved front oscillates but cannot blow up), with Heun's method in time;
``etdrk4`` is the reference scheme on the coarse grid. The reference is ETDRK4 on
``fine_resolution`` points, restricted spectrally. At small ``nu`` the fronts are far thinner than
the coarse grid: with ``nu = 0.003`` the 32-point ``fd2`` solver is off by about 4 % after one time
unit, and its error falls by 4 with each doubling of the grid (``scripts/bench_hybrid.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from .. import progress
from ..constraints import NonNegativeFloat, PositiveFloat, PositiveInt
from ..errors import ConfigError
from ..numerics.metrics import relative_l2
from ..numerics.spectral import dealias_mask, grf_1d, rfft_wavenumbers
from .base import (
    SPLIT_SEEDS,
    DifferentiableSolver,
    OperatorData,
    PhysicsResidual,
    Problem,
    Solution,
    float64_device,
)

#: Gaussian random field parameters ``(alpha, tau, sigma)`` of the FNO Burgers data: the ones
#: Li et al. (2021) state in the paper, ``625 (-Laplacian + 25 I)^-2``, and the ones of the data
#: generator they released, ``7^4 (-Laplacian + 49 I)^-2.5``.
GRF_PARAMS: dict[str, tuple[float, float, float]] = {
    "paper": (2.0, 5.0, 25.0),
    "released": (2.5, 7.0, 49.0),
}

#: Gauss–Hermite nodes for the Cole–Hopf integrals. Near the shock at t = 1 the integrand's mass
#: sits at |z| ~ 6.5 (where f's growth beats the Gaussian); 100 nodes already agree with adaptive
#: quadrature to 1e-14 there (80 agree with 800 nodes to 1e-13 on a 1202 x 201 grid), 150 leave a
#: margin for smaller viscosities.
HERMITE_NODES = 150

#: values per block of samples that the CPU time-stepper advances at once (see ``_map_blocks``);
#: 2^17 doubles per array stay in cache
CPU_BLOCK = 1 << 17


@lru_cache(maxsize=4)
def _hermite(n: int) -> tuple[list[float], list[float]]:
    """Gauss–Hermite nodes and log-weights (weight ``exp(-z^2)``), computed in float64."""
    from scipy.special import roots_hermite

    z, w = roots_hermite(n)
    return z.tolist(), [math.log(v) if v > 0 else -math.inf for v in w]


def etdrk4_coefficients(lin: Tensor, dt: float, n_contour: int = 64) -> dict[str, Tensor]:
    """ETDRK4 coefficients for a diagonal linear part ``lin`` (any shape, real or complex).

    Uses the contour-integral means of Kassam & Trefethen (2005) on circles of radius 1 around
    each ``dt * lin``, which avoid the cancellation of the closed forms when ``|dt lin|`` is small:
    for a real ``lin`` the real part of the mean over the upper half circle (the functions are
    real on the real axis, so the lower half adds the conjugates), for a complex one the whole
    circle.

    Returns
    -------
    dict
        ``E = exp(dt L)``, ``E2 = exp(dt L / 2)``, ``Q`` and ``f1, f2, f3`` (each carrying the
        factor ``dt``), shaped like ``lin``.
    """
    cdtype = torch.complex128 if lin.dtype in (torch.float64, torch.complex128) else torch.complex64
    hl = (dt * lin).to(cdtype)
    j = torch.arange(1, n_contour + 1, device=lin.device, dtype=torch.float64)
    arc = 2 * math.pi if lin.is_complex() else math.pi
    roots = torch.exp(1j * arc * (j - 0.5) / n_contour).to(cdtype)
    z = hl.unsqueeze(-1) + roots  # [..., M]
    ez, ez2 = torch.exp(z), torch.exp(z / 2)

    def mean(v: Tensor) -> Tensor:
        m = v.mean(-1)
        return m.real if not lin.is_complex() else m

    return {
        "E": torch.exp(hl) if lin.is_complex() else torch.exp(hl).real,
        "E2": torch.exp(hl / 2) if lin.is_complex() else torch.exp(hl / 2).real,
        "Q": dt * mean((ez2 - 1) / z),
        "f1": dt * mean((-4 - z + ez * (4 - 3 * z + z**2)) / z**3),
        "f2": dt * mean((2 + z + ez * (z - 2)) / z**3),
        "f3": dt * mean((-4 - 3 * z - z**2 + ez * (4 - z)) / z**3),
    }


def _map_blocks(fn: Callable[[Tensor], Tensor], blocks: Sequence[Tensor]) -> list[Tensor]:
    """``[fn(b) for b in blocks]`` on a CPU, parallel over blocks rather than within each op.

    The ops of a pseudo-spectral step on a block of samples are small (FFTs of 1024 points):
    splitting each one over torch's threads costs a synchronisation per op, and when the cores
    are shared with other processes every such wait can cost a scheduler tick (we measured a
    2-thread run of 8 samples 15-250x slower than a 1-thread run on a loaded 2-core machine).
    So each block runs with one intra-op thread, and the blocks are spread over as many worker
    threads as ``torch.get_num_threads()`` allows (torch releases the GIL inside its ops).
    The thread setting is process-wide; it is restored on return.
    """
    threads = torch.get_num_threads()
    workers = min(threads, len(blocks))
    grad = torch.is_grad_enabled()  # grad mode is thread-local: carry the caller's over

    def run(block: Tensor) -> Tensor:
        with torch.set_grad_enabled(grad):
            return fn(block)

    torch.set_num_threads(1)
    try:
        if workers <= 1:
            return [fn(b) for b in blocks]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(run, blocks))
    finally:
        torch.set_num_threads(threads)


class Burgers(Problem, PhysicsResidual, OperatorData, DifferentiableSolver):
    """Viscous Burgers' equation, ``u_t + u u_x = nu u_xx``.

    One problem in two setups rather than two problems: the equation, its exact solution and
    its solvers are shared, and which view an instance offers follows from ``setup``
    (:meth:`views`): ``raissi`` offers the physics residual (with its exact reference, an exact
    constraint transform and observations for the inverse problem), ``fno`` operator data and
    a differentiable solver (periodic, so a coarse grid is a spectral truncation of a fine one).

    Parameters
    ----------
    setup
        ``"fno"``: the operator-learning setup of Li et al. (2021); ``"raissi"``: the shock
        problem of Raissi et al. (2019) with its exact solution (see the module docstring).
    nu
        Viscosity; ``null`` takes the setup's: ``0.1`` (fno) or ``0.01 / pi`` (raissi).
    t_end
        Final time (both setups use 1).
    resolution
        Output points in ``x``; ``null`` takes the setup's: ``fine_resolution`` (fno) or 256
        (raissi, ends included as in Raissi's data).
    n_times
        raissi: time slices ``t_k = k t_end / n_times``, ``k = 0 .. n_times - 1`` (Raissi's data
        file has ``t = 0, 0.01, ..., 0.99``).
    grf
        fno: initial-condition field, ``"released"`` (``alpha=2.5, tau=7, sigma=49``, the
        generator Li et al. released) or ``"paper"`` (``alpha=2, tau=5, sigma=25``, as their paper
        states). See :func:`~sciml_cli.numerics.spectral.grf_1d`.
    fine_resolution
        fno: points of the solver grid (1024; 8192 as in the released data). ``resolution`` must
        divide it.
    dt
        fno: ETDRK4 step; rounded down so a whole number of steps reaches ``t_end``. The default
        0.005 (200 steps) is set by accuracy, not stability (0.04 is stable too): the rel-L2
        error of ``u(., 1)`` against ``dt / 16`` is about 2e-7 (released field) and 2e-6 (paper
        field), far below the ~1e-3 errors of learned operators and the 2.5e-2 of the heat
        baseline. With these rough initial data (spectra ~ k^-2.5) the observed rate is below the
        design order 4 until dt ~ 0.0025 (a fast initial layer); smooth data show order 4.
    noise
        raissi: observation noise, Gaussian with standard deviation ``noise`` times that of the
        solution on the reference grid (Raissi et al. 2019 use 0.01 in the inverse problem).
    coarse_resolution, coarse_dt, coarse_scheme
        fno, differentiable solver: grid, step and scheme (``fd2`` or ``etdrk4``) of the coarse
        solver a hybrid model corrects; ``coarse_resolution`` divides ``fine_resolution``,
        ``coarse_dt`` is a whole number of ``dt``.
    """

    coords = ("x", "t")
    derivatives = ("u", "u_t", "u_x", "u_xx")
    # operator data are made at fine_resolution; the coarse solver's settings enter only the
    # keys of the differentiable-solver data, which name them
    cache_exempt = frozenset({"data_dir", "resolution", "coarse_resolution", "coarse_dt", "coarse_scheme"})
    n_dims = 1

    def __init__(
        self,
        setup: Literal["fno", "raissi"] = "fno",
        nu: PositiveFloat | None = None,
        t_end: PositiveFloat = 1.0,
        resolution: PositiveInt | None = None,
        n_times: PositiveInt = 100,
        grf: Literal["released", "paper"] = "released",
        fine_resolution: PositiveInt = 1024,
        dt: PositiveFloat = 0.005,
        noise: NonNegativeFloat = 0.0,
        coarse_resolution: PositiveInt = 32,
        coarse_dt: PositiveFloat = 0.01,
        coarse_scheme: Literal["fd2", "etdrk4"] = "etdrk4",
        data_dir: str = "outputs/data",
    ) -> None:
        super().__init__()
        self.data_dir = data_dir
        if setup not in ("fno", "raissi"):
            raise ValueError(f"setup: must be 'fno' or 'raissi', got {setup!r}")
        if grf not in GRF_PARAMS:
            raise ValueError(f"grf: must be one of {sorted(GRF_PARAMS)}, got {grf!r}")
        if setup == "fno" and fine_resolution % 2:
            raise ValueError(f"fine_resolution: must be even, got {fine_resolution}")
        self.setup, self.grf = setup, grf
        default_nu = 0.1 if setup == "fno" else 0.01 / math.pi
        self.nu = float(nu) if nu is not None else default_nu
        self.t_end, self.dt = float(t_end), float(dt)
        self.fine_resolution, self.n_times = int(fine_resolution), int(n_times)
        self.noise = float(noise)
        self.resolution = int(resolution) if resolution is not None else (
            self.fine_resolution if setup == "fno" else 256)
        if setup == "fno" and self.fine_resolution % self.resolution:
            # before any data is made: the pairs are subsampled from the solver grid
            raise ValueError(f"resolution: must divide fine_resolution={self.fine_resolution}, got {self.resolution}")
        if coarse_scheme not in ("fd2", "etdrk4"):
            raise ValueError(f"coarse_scheme: {coarse_scheme!r} is not one of fd2, etdrk4")
        self.coarse_resolution, self.coarse_dt = int(coarse_resolution), float(coarse_dt)
        self.coarse_scheme = coarse_scheme
        self._etdrk4_cache: dict[tuple, tuple[Tensor, ...]] = {}

    # -- raissi: exact solution ------------------------------------------------------------------
    def initial_condition(self, x: Tensor) -> Tensor:
        """raissi: ``u(x, 0) = -sin(pi x)``."""
        return -torch.sin(math.pi * x)

    def exact(self, x: Tensor, t: Tensor, chunk: int = 1 << 16) -> Tensor:
        """Exact solution of the raissi setup at broadcastable ``x`` and ``t``.

        Evaluated in float64 on the inputs' device (CPU for MPS, which lacks float64) and
        returned in the promoted dtype of the inputs. Accurate to about 1e-13 everywhere on
        ``[-1, 1] x [0, 1]``, shock included (tested against adaptive quadrature).

        Parameters
        ----------
        x, t
            Positions in ``[-1, 1]`` and times ``>= 0``, any broadcastable shapes.
        chunk
            Points per batch (memory is ``chunk x HERMITE_NODES`` float64 values).
        """
        x, t = torch.as_tensor(x), torch.as_tensor(t)
        out_dtype = torch.promote_types(x.dtype, t.dtype)
        if not out_dtype.is_floating_point:
            out_dtype = torch.get_default_dtype()
        device = x.device if x.device.type != "mps" else torch.device("cpu")
        xb, tb = torch.broadcast_tensors(x.to(device, torch.float64), t.to(device, torch.float64))
        shape = xb.shape
        xf, tf = xb.reshape(-1), tb.reshape(-1)
        if (tf < 0).any():
            raise ValueError("t: the exact solution is defined for t >= 0")
        z, logw = (torch.tensor(v, dtype=torch.float64, device=device)
                   for v in _hermite(HERMITE_NODES))
        c = 1.0 / (2.0 * math.pi * self.nu)
        out = torch.empty_like(xf)
        for s in range(0, xf.numel(), chunk):
            xs, ts = xf[s:s + chunk, None], tf[s:s + chunk, None]
            y = xs - torch.sqrt(4.0 * self.nu * ts) * z  # [P, nodes]: x - eta
            # f spans exp(+-1/(2 pi nu)) = exp(+-50): work with logs and subtract the maximum
            log_int = -c * torch.cos(math.pi * y) + logw
            weight = torch.exp(log_int - log_int.amax(dim=1, keepdim=True))
            out[s:s + chunk] = -(torch.sin(math.pi * y) * weight).sum(1) / weight.sum(1)
        return out.reshape(shape).to(x.device, out_dtype)

    def _raissi_grid(self, nx: int) -> tuple[Tensor, Tensor]:
        x = torch.linspace(-1.0, 1.0, nx, **self.factory)
        t = torch.arange(self.n_times, **self.factory) * (self.t_end / self.n_times)
        return t, x

    def views(self) -> tuple[type, ...]:
        return (PhysicsResidual,) if self.setup == "raissi" else (OperatorData, DifferentiableSolver)

    # -- raissi: physics-residual view -----------------------------------------------------------
    @property
    def bounds(self) -> list[tuple[float, float]]:
        return [(-1.0, 1.0), (0.0, self.t_end)]

    def coefficients(self) -> dict[str, float]:
        """``u_t + lambda1 u u_x - lambda2 u_xx = 0`` (Raissi et al. 2019's inverse problem)."""
        return {"lambda1": 1.0, "lambda2": self.nu}

    def residual(self, fields: Mapping[str, Tensor], points: Tensor,
                 coefficients: Mapping[str, Tensor | float]) -> Tensor:
        u = fields["u"]
        return fields["u_t"] + coefficients["lambda1"] * u * fields["u_x"] - coefficients["lambda2"] * fields["u_xx"]

    def initial_residual(self, u: Tensor, points: Tensor) -> Tensor:
        return u - self.initial_condition(points[:, 0:1])

    def boundary_residual(self, u: Tensor, points: Tensor) -> Tensor:
        return u

    def constraint(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """``u = -sin(pi x) + t (1 - x^2) N``: the initial condition vanishes at ``x = +-1``."""
        x, t = points[:, 0:1], points[:, 1:2]
        return self.initial_condition(x), t * (1 - x * x)

    def reference(self, resolution: int | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """The exact solution on Raissi's grid (256 points in ``x`` with the ends, ``t = 0,
        0.01, ..., 0.99``), ``u`` ``[X, T]``; computed once per grid and device."""
        nx = resolution or self.resolution
        key = (nx, self.device, self.dtype)
        cached = getattr(self, "_reference", None)
        if cached is None or cached[0] != key:
            t, x = self._raissi_grid(nx)
            self._reference = key, ({"x": x, "t": t}, self.exact(x[:, None], t[None, :]))
        return self._reference[1]

    def observations(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """``n`` points drawn without replacement from the reference grid, with the exact
        solution plus the problem's noise (Raissi et al. 2019: 2000 of the 25 600 points)."""
        grid, u = self.reference()
        g = torch.Generator().manual_seed(int(seed) + 7919)
        index = torch.randperm(u.numel(), generator=g)[:n].to(u.device)
        ix, it = index // u.shape[1], index % u.shape[1]
        points = torch.stack([grid["x"][ix], grid["t"][it]], dim=1)
        values = u.reshape(-1)[index].unsqueeze(1)
        if self.noise:
            values = values + self.noise * u.std() * torch.randn(n, 1, generator=g, dtype=torch.float64).to(values)
        return points, values

    # -- fno: pseudo-spectral ETDRK4 ---------------------------------------------------------------
    def random_initial_conditions(self, n_samples: int, seed: int, n: int | None = None) -> Tensor:
        """fno: initial conditions from the Gaussian random field, ``[n_samples, n]`` on
        ``x_j = j / n`` (default ``n = fine_resolution``), seeded by ``seed``."""
        alpha, tau, sigma = GRF_PARAMS[self.grf]
        g = torch.Generator().manual_seed(int(seed))
        return grf_1d(n_samples, n or self.fine_resolution, alpha, tau, sigma, g, **self.factory)

    def evolve(self, u0: Tensor, t: float, dt: float | None = None) -> Tensor:
        """fno: the solution at time ``t`` of periodic Burgers on ``[0, 1)`` from ``u0`` ``[B, n]``.

        Pseudo-spectral in space (2/3 rule on the nonlinear term, so the quadratic product is
        exact on the kept modes) and ETDRK4 in time (Cox & Matthews 2002) with
        ``ceil(t / dt)`` equal steps; fourth order in time, spectral in space. The linear part
        ``-nu k^2`` is integrated exactly, so the step is limited by accuracy and by the
        advective modes ``|k| < max|u| / nu``, not by diffusion at high wavenumbers.
        """
        n = u0.shape[-1]
        dt = self.dt if dt is None else float(dt)
        n_steps = max(1, math.ceil(t / dt - 1e-9))
        h = t / n_steps
        E, E2, Q, f1, f2, f3, g = self._etdrk4(n, h, u0.device, u0.dtype)
        f2 = 2 * f2

        v0 = torch.fft.rfft(u0)

        def nonlinear(v: Tensor) -> Tensor:
            return torch.fft.rfft(torch.fft.irfft(v, n=n).square_()).mul_(g)

        blocks = [v0] if u0.device.type != "cpu" or u0.shape[0] == 0 else v0.split(max(1, CPU_BLOCK // n))
        bar = progress.track_steps(n_steps * len(blocks), f"burgers: {n_steps} ETDRK4 steps of {u0.shape[0]} samples")

        def steps(v: Tensor) -> Tensor:
            for _ in range(n_steps):
                bar.advance()
                nv = nonlinear(v)
                e2v = E2 * v
                a = torch.addcmul(e2v, Q, nv)
                na = nonlinear(a)
                nb = nonlinear(torch.addcmul(e2v, Q, na))
                c = (E2 * a).addcmul_(Q, 2 * nb - nv)
                nc = nonlinear(c)
                v = (E * v).addcmul_(f1, nv).addcmul_(f2, na.add_(nb)).addcmul_(f3, nc)
            return v

        with bar:
            if len(blocks) == 1 and blocks[0] is v0:
                return torch.fft.irfft(steps(v0), n=n)
            return torch.fft.irfft(torch.cat(_map_blocks(steps, blocks)), n=n)

    # -- fno: one differentiable step (differentiable-solver view) ----------------------------------
    def _etdrk4(self, n: int, dt: float, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
        """ETDRK4 coefficients ``E, E2, Q, f1, f2, f3`` of an ``n``-point grid and step ``dt``, and
        ``g``, the Fourier factor of ``-(u^2 / 2)_x`` masked to the 2/3 band (the Nyquist mode is
        outside it); complex, so multiplying a spectrum does not convert them on every call."""
        key = (n, float(dt), str(device), dtype)
        if key not in self._etdrk4_cache:
            if len(self._etdrk4_cache) >= 16:  # evolve() with many step sizes: keep the cache small
                self._etdrk4_cache.clear()
            k = rfft_wavenumbers(n, device=device, dtype=dtype)
            coef = etdrk4_coefficients(-self.nu * k**2, float(dt))
            cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
            self._etdrk4_cache[key] = (*(coef[c].to(cdtype) for c in ("E", "E2", "Q", "f1", "f2", "f3")),
                                       (-0.5j * k * dealias_mask(n, device=device)).to(cdtype))
        return self._etdrk4_cache[key]

    def step(self, u: Tensor, dt: float, scheme: Literal["fd2", "etdrk4"] = "etdrk4",
             forcing: Tensor | None = None) -> Tensor:
        """One step of periodic Burgers on ``[0, 1)`` for ``u`` ``[..., n]`` on its own grid,
        differentiable in ``u`` (and ``forcing``, a source ``[..., n]`` held over the step).

        ``etdrk4``: the step :meth:`evolve` takes (pseudo-spectral, 2/3 rule). ``fd2``: central
        differences, convection in skew-symmetric form, Heun's method (see the module docstring).
        """
        n = u.shape[-1]
        if scheme == "fd2":
            h = 1.0 / n

            def rhs(v: Tensor) -> Tensor:
                right, left = torch.roll(v, -1, -1), torch.roll(v, 1, -1)
                convection = (right * right - left * left + v * (right - left)) / (6.0 * h)
                out = self.nu * (right - 2.0 * v + left) / (h * h) - convection
                return out if forcing is None else out + forcing

            k1 = rhs(u)
            k2 = rhs(u + dt * k1)
            return u + (0.5 * dt) * (k1 + k2)
        E, E2, Q, f1, f2, f3, g = self._etdrk4(n, dt, u.device, u.dtype)
        source = None if forcing is None else torch.fft.rfft(forcing)

        def nonlinear(v: Tensor) -> Tensor:
            out = torch.fft.rfft(torch.fft.irfft(v, n=n).square()) * g
            return out if source is None else out + source

        v = torch.fft.rfft(u)
        nv = nonlinear(v)
        a = E2 * v + Q * nv
        na = nonlinear(a)
        b = E2 * v + Q * na
        nb = nonlinear(b)
        c = E2 * a + Q * (2 * nb - nv)
        nc = nonlinear(c)
        return torch.fft.irfft(E * v + f1 * nv + 2 * f2 * (na + nb) + f3 * nc, n=n)

    def coarse_step(self, state: Tensor, dt: float | Tensor, forcing: Tensor | None = None) -> Tensor:
        return self.step(state, dt, self.coarse_scheme, forcing)

    def reference_step(self, state: Tensor, dt: float) -> Tensor:
        return self.step(state, dt, "etdrk4")

    def initial_states(self, n: int, seed: int) -> Tensor:
        return self.random_initial_conditions(n, seed)

    def courant(self, state: Tensor, dt: float) -> Tensor:
        """``fd2``: the larger of the advective ``max|u| dt / h`` and the diffusive
        ``2 nu dt / h^2`` (Heun is stable for both up to about 1); ``etdrk4``: the advective one
        (the viscous part is integrated exactly)."""
        n = state.shape[-1]
        advective = state.abs().amax(dim=-1) * dt * n
        if self.coarse_scheme == "etdrk4":
            return advective
        return torch.clamp(advective, min=2.0 * self.nu * dt * n * n)

    def trajectory_of(self, solution: Solution) -> tuple[Tensor, float]:
        if self.setup != "fno":
            raise NotImplementedError("the raissi setup has no differentiable solver")
        return torch.stack([solution.fields["a"], solution.fields["u"]], dim=1), self.t_end

    def heat_prediction(self, u0: Tensor, t: float) -> Tensor:
        """fno baseline: ``u0`` decayed by ``exp(-nu k^2 t)`` with the nonlinear term dropped."""
        k = rfft_wavenumbers(u0.shape[-1], device=u0.device, dtype=u0.dtype)
        return torch.fft.irfft(torch.fft.rfft(u0) * torch.exp(-self.nu * k**2 * t), n=u0.shape[-1])

    # -- operator-data view ------------------------------------------------------------------------
    in_channels = out_channels = n_dims = 1

    def operator_pairs(self, split: str, n_samples: int, resolution: int | None = None):
        """fno: ``(a, u, grid)`` with ``a = u(., 0)``, ``u = u(., t_end)`` as ``[N, 1, X]``.

        Generated once at ``fine_resolution`` and cached under ``data_dir`` (keyed by every
        parameter that changes the numbers), then subsampled to ``resolution`` (default: the
        problem's ``resolution``), so one file serves training and super-resolution tests.
        """
        from ..data.cache import load_dataset

        if self.setup != "fno":
            raise ConfigError("problem.setup", "operator data needs the fno setup", ["fno"])
        nx = resolution or self.resolution
        try:  # before any data is made
            self.check_resolution(nx)
        except ValueError as err:
            raise ConfigError("resolution", str(err).removeprefix("resolution: ")) from None
        seed = SPLIT_SEEDS[split]
        generating = self.cache_key(split=split, n_samples=int(n_samples), seed=seed, dtype="float64")
        solver = Burgers(setup="fno", nu=self.nu, t_end=self.t_end, grf=self.grf,
                         fine_resolution=self.fine_resolution, dt=self.dt).to(float64_device(self.device), torch.float64)
        data = load_dataset(f"burgers-{split}", generating,
                            lambda: solver.solve(self.fine_resolution, int(n_samples), seed), Path(self.data_dir))
        stride = self.fine_resolution // nx
        a = data.fields["a"][:, None, ::stride].to(**self.factory)
        u = data.fields["u"][:, None, ::stride].to(**self.factory)
        self.baseline_heat_rel_l2 = float(data.attrs["baseline_heat_rel_l2"])
        return a, u, {"x": torch.arange(nx, **self.factory) / nx}

    def baselines(self) -> dict[str, float]:
        """fno: the linear heat equation on the data last loaded. raissi: on the reference grid,
        the linear heat equation (``-exp(-nu pi^2 t) sin(pi x)``, the nonlinearity dropped) and
        the initial condition held fixed."""
        if self.setup == "raissi":
            grid, u = self.reference()
            x, t = grid["x"][:, None], grid["t"][None, :]
            heat = -torch.exp(-self.nu * math.pi**2 * t) * torch.sin(math.pi * x)
            held = self.initial_condition(x).expand_as(u)
            return {"heat_equation_rel_l2": relative_l2(heat.flatten(), u.flatten()).item(),
                    "initial_condition_rel_l2": relative_l2(held.flatten(), u.flatten()).item()}
        value = getattr(self, "baseline_heat_rel_l2", None)
        return {} if value is None else {"heat_equation_rel_l2": value}

    # -- reference solver --------------------------------------------------------------------------
    def check_solve(self, resolution: int | None = None, n_samples: int = 1) -> None:
        nx = resolution or self.resolution
        if self.setup == "raissi":
            if n_samples != 1:
                raise ValueError("n_samples: the raissi setup has one initial condition, use 1")
            if nx < 2:
                raise ValueError(f"resolution: need at least 2 points, got {nx}")
            return
        self.check_resolution(nx)

    def check_resolution(self, resolution: int) -> None:
        """fno: the resolution subsamples the solver grid, so it divides ``fine_resolution``."""
        if self.setup == "fno" and self.fine_resolution % resolution:
            raise ValueError(f"resolution: must divide fine_resolution={self.fine_resolution}, got {resolution}")

    def solve(self, resolution: int | None = None, n_samples: int = 1, seed: int = 0) -> Solution:
        """fno: ``{"a": [N, X], "u": [N, X]}`` on ``{"x": [X]}`` (``a = u(., 0)``,
        ``u = u(., t_end)``). raissi: ``{"u": [1, T, X]}`` on ``{"t": [T], "x": [X]}`` from the
        exact solution."""
        self.check_solve(resolution, n_samples)
        nx = resolution or self.resolution
        start = time.perf_counter()
        if self.setup == "raissi":
            t, x = self._raissi_grid(nx)
            u = self.exact(x[None, :], t[:, None])[None]
            wall = time.perf_counter() - start
            return Solution(
                fields={"u": u},
                grid={"t": t, "x": x},
                attrs={"setup": "raissi", "solver": "cole-hopf gauss-hermite",
                       "quadrature_nodes": HERMITE_NODES, "nu": self.nu, "wall_time_s": wall},
            )

        fine = self.fine_resolution
        u0 = self.random_initial_conditions(n_samples, seed)
        u1 = self.evolve(u0, self.t_end)
        heat = self.heat_prediction(u0, self.t_end)
        stride = fine // nx
        a, u = u0[:, ::stride].contiguous(), u1[:, ::stride].contiguous()
        if u0.device.type == "cuda":
            torch.cuda.synchronize(u0.device)
        wall = time.perf_counter() - start
        x = torch.arange(nx, **self.factory) / nx
        n_steps = max(1, math.ceil(self.t_end / self.dt - 1e-9))
        alpha, tau, sigma = GRF_PARAMS[self.grf]
        return Solution(
            fields={"a": a, "u": u},
            grid={"x": x},
            attrs={
                "setup": "fno",
                "solver": "pseudo-spectral etdrk4",
                "t_end": self.t_end,
                "nu": self.nu,
                "grf": self.grf,
                "grf_alpha": alpha,
                "grf_tau": tau,
                "grf_sigma": sigma,
                "fine_resolution": fine,
                "dt": self.t_end / n_steps,
                "n_steps": n_steps,
                "wall_time_s": wall,
                "baseline_heat_rel_l2": relative_l2(heat, u1).mean().item(),
                "amplitude_ratio": (torch.linalg.vector_norm(u1, dim=-1)
                                    / torch.linalg.vector_norm(u0, dim=-1)).mean().item(),
            },
        )
