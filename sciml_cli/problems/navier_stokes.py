"""2D incompressible Navier–Stokes on the periodic unit square, in vorticity form.

    w_t + u . grad w = nu Laplacian w + f,     u = (psi_y, -psi_x),   -Laplacian psi = w,
    (x, y) in [0, 1)^2 periodic,   f(x, y) = A (sin 2 pi (x + y) + cos 2 pi (x + y)),

the setup of Li et al. (2021, Fourier neural operator): ``nu = 1e-3``, ``A = 0.1``, initial
vorticity from the Gaussian random field ``sigma^2 (-Laplacian + tau^2 I)^(-alpha)`` with
``alpha = 2.5, tau = 7, sigma = 7^(3/2)``, generated on a 256 x 256 grid with ``dt = 1e-4``,
recorded every time unit to ``T = 50`` and subsampled to 64 x 64.

The solver is Fourier pseudo-spectral with Orszag's 2/3 dealiasing of the advection term.
In time the viscous term is Crank–Nicolson and the advection and forcing terms explicit:

* ``cn_heun`` (default): Heun's predictor-corrector on the explicit part,
  ``w* = CN(w; N(w))``, ``w' = CN(w; (N(w) + N(w*)) / 2)`` with ``N = f - u . grad w``.
  The corrector is Crank–Nicolson with ``N`` at the new time replaced by ``N(w*)``, an
  ``O(dt^2)`` approximation, so the scheme is second order; it keeps Crank–Nicolson's linear
  amplification exactly, hence A-stability in the viscous term.
* ``cn_euler``: the first-order scheme of Li et al.'s released generator (explicit Euler on
  ``N``), for reproducing their data.

Operator data (the view FNO trains on), as Li et al.'s FNO-2D experiments: the input ``a`` is
the vorticity at the first ``t_in`` records after the initial condition (``t = 1 .. 10``), the
output ``u`` every later record (``t = 11 .. 50``), one channel per record.

Differentiable solver (the view the hybrid solver-in-the-loop model trains through): the coarse
scheme is the same pseudo-spectral step on ``coarse_resolution`` points with ``coarse_scheme``
(default Li et al.'s first-order ``cn_euler``) and a large step ``coarse_dt``; the reference is
``scheme`` at ``dt`` on ``fine_resolution`` points, restricted spectrally. At ``nu = 1e-3`` the
32 x 32 grid itself resolves the flow (``cn_heun`` at the same step stays within 4e-5 of the
reference): the coarse solver's error is that of its time step, which halves with the grid and
the step (``scripts/bench_hybrid.py --schemes hybrid_navier_stokes``).

Grids: ``x_i = i / n`` along axis -2, ``y_j = j / n`` along axis -1 (``indexing="ij"``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from .. import progress
from ..constraints import NonNegativeFloat, PositiveFloat, PositiveInt
from ..errors import ConfigError
from ..numerics.metrics import relative_l2
from ..numerics.spectral import dealias_mask_2d, grf_2d, rfft_wavenumbers, wavenumbers
from .base import (
    SPLIT_SEEDS,
    DifferentiableSolver,
    OperatorData,
    Problem,
    Solution,
    float64_device,
    whole_ratio,
)

Scheme = Literal["cn_heun", "cn_euler"]


@dataclass(frozen=True)
class _Operators:
    """Fourier-space operators of an ``n x n`` grid over :func:`torch.fft.rfft2` modes."""

    ikx: Tensor  # [n, 1] complex, i k_x with the Nyquist mode zeroed (first derivatives)
    iky: Tensor  # [1, n//2+1] complex, i k_y likewise
    k2: Tensor  # [n, n//2+1] real, |k|^2 (Nyquist kept: second derivatives are representable)
    inv_k2: Tensor  # [n, n//2+1] real, 1/|k|^2 with the mean mode set to 0
    dealias: Tensor  # [n, n//2+1] real 0/1, the 2/3 rule (a bool factor would be cast every step)
    forcing: Tensor  # [n, n//2+1] complex, rfft2 of f on the grid


class NavierStokes(Problem, OperatorData, DifferentiableSolver):

    """Forced 2D Navier–Stokes in vorticity form on ``[0, 1)^2`` (Li et al. 2021).

    Parameters
    ----------
    viscosity
        Kinematic viscosity ``nu`` (Li et al. use 1e-3, 1e-4 and 1e-5).
    forcing_amplitude
        ``A`` in ``f = A (sin 2 pi (x + y) + cos 2 pi (x + y))``; 0 switches the forcing off.
    t_end
        Final time ``T`` of :meth:`solve` (50 for Li et al.'s ``nu = 1e-3`` data).
    record_every
        Time between recorded snapshots; must divide ``t_end``.
    dt
        Time step of :meth:`solve`; must divide ``record_every``. Li et al. use 1e-4, far below
        what stability or accuracy need here (see ``scripts/bench_navier_stokes.py``).
    scheme
        Explicit half of the IMEX step: ``cn_heun`` (second order) or ``cn_euler`` (first order,
        Li et al.'s generator).
    resolution
        Default output grid of :meth:`solve`, points per side; divides ``fine_resolution``.
    fine_resolution
        Grid the reference is computed on before point-wise subsampling to ``resolution``.
        256 as Li et al.: at ``nu = 1e-3`` the 2/3-dealiased 256 grid keeps modes up to 85,
        far beyond where the enstrophy spectrum is resolved, so the subsampled 64 x 64 fields
        carry no visible discretisation error.
    alpha, tau, sigma
        Initial vorticity covariance ``sigma^2 (-Laplacian + tau^2 I)^(-alpha)`` (``tau`` an
        angular wavenumber); Li et al.: 2.5, 7, ``7^1.5``.
    batch_size
        Initial conditions integrated together by :meth:`solve` (bounds memory, not results).
    t_in
        Operator data: records given as input (Li et al.: 10); the remaining
        ``t_end / record_every - t_in`` records are the output.
    coarse_resolution, coarse_dt, coarse_scheme
        Differentiable solver: grid, step and scheme of the coarse solver a hybrid model
        corrects (``coarse_resolution`` divides ``fine_resolution``; ``coarse_dt`` is a whole
        number of ``dt``, and its Courant number on the coarse grid at most 1).
    spinup
        Differentiable solver: time the reference integrates each random initial vorticity
        before a trajectory starts (a whole number of ``dt``), past the fast decay of its
        smallest scales.
    data_dir
        Where generated operator datasets are cached (one file per split, size and resolution).
    """

    #: how many trajectories are solved at once and how records split into input and output
    #: do not change the numbers; the coarse solver's settings enter only the keys of the
    #: differentiable-solver data, which name them
    cache_exempt = frozenset({"data_dir", "batch_size", "t_in", "coarse_resolution", "coarse_dt", "coarse_scheme",
                              "spinup"})

    def __init__(
        self,
        viscosity: PositiveFloat = 1e-3,
        forcing_amplitude: NonNegativeFloat = 0.1,
        t_end: PositiveFloat = 50.0,
        record_every: PositiveFloat = 1.0,
        dt: PositiveFloat = 1e-4,
        scheme: Scheme = "cn_heun",
        resolution: PositiveInt = 64,
        fine_resolution: PositiveInt = 256,
        alpha: PositiveFloat = 2.5,
        tau: PositiveFloat = 7.0,
        sigma: PositiveFloat = 7.0**1.5,
        batch_size: PositiveInt = 64,
        t_in: PositiveInt = 10,
        coarse_resolution: PositiveInt = 32,
        coarse_dt: PositiveFloat = 0.1,
        coarse_scheme: Scheme = "cn_euler",
        spinup: NonNegativeFloat = 0.0,
        data_dir: str = "outputs/data",
    ) -> None:
        super().__init__()
        if scheme not in ("cn_heun", "cn_euler"):
            raise ValueError(f"scheme: {scheme!r} is not one of cn_heun, cn_euler")
        self.viscosity, self.forcing_amplitude = float(viscosity), float(forcing_amplitude)
        self.t_end, self.record_every, self.dt = float(t_end), float(record_every), float(dt)
        self.scheme: Scheme = scheme
        self.resolution, self.fine_resolution = int(resolution), int(fine_resolution)
        self.alpha, self.tau, self.sigma = float(alpha), float(tau), float(sigma)
        self.batch_size = int(batch_size)
        self.steps_per_record = whole_ratio(self.record_every, self.dt)
        if self.steps_per_record is None:
            raise ValueError(f"dt: must divide record_every={self.record_every:g}, got {self.dt:g}")
        self.n_records = whole_ratio(self.t_end, self.record_every)
        if self.n_records is None:
            raise ValueError(
                f"record_every: must divide t_end={self.t_end:g}, got {self.record_every:g}"
            )
        self._check_resolution(self.resolution)
        self.t_in, self.data_dir = int(t_in), str(data_dir)
        if coarse_scheme not in ("cn_heun", "cn_euler"):
            raise ValueError(f"coarse_scheme: {coarse_scheme!r} is not one of cn_heun, cn_euler")
        self.coarse_resolution, self.coarse_dt = int(coarse_resolution), float(coarse_dt)
        self.coarse_scheme: Scheme = coarse_scheme
        self.spinup = float(spinup)
        self._cache: dict[tuple[int, str, torch.dtype], _Operators] = {}

    def _check_resolution(self, n: int) -> None:
        if n < 4 or n > self.fine_resolution or self.fine_resolution % n:
            raise ValueError(
                f"resolution: must be >= 4 and divide fine_resolution={self.fine_resolution}, got {n}"
            )

    # -- physics ---------------------------------------------------------------------------
    def forcing(self, n: int, **factory) -> Tensor:
        """The forcing ``f`` on the ``n x n`` grid, ``[n, n]``."""
        x = torch.arange(n, **factory) / n
        s = 2.0 * math.pi * (x[:, None] + x[None, :])
        return self.forcing_amplitude * (torch.sin(s) + torch.cos(s))

    def _operators(self, n: int, device: torch.device, dtype: torch.dtype) -> _Operators:
        key = (n, str(device), dtype)
        if key not in self._cache:
            f = {"device": device, "dtype": dtype}
            kx, ky = wavenumbers(n, **f), rfft_wavenumbers(n, **f)
            k2 = kx[:, None] ** 2 + ky[None, :] ** 2
            inv_k2 = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, 1.0), 0.0)
            if n % 2 == 0:  # the Nyquist mode's first derivative is not a real grid function
                kx, ky = kx.clone(), ky.clone()
                kx[n // 2], ky[-1] = 0.0, 0.0
            self._cache[key] = _Operators(
                ikx=1j * kx[:, None],
                iky=1j * ky[None, :],
                k2=k2,
                inv_k2=inv_k2,
                dealias=dealias_mask_2d(n, device=device).to(dtype),
                forcing=torch.fft.rfft2(self.forcing(n, **f)),
            )
        return self._cache[key]

    def _ops_for(self, w_hat: Tensor) -> _Operators:
        return self._operators(w_hat.shape[-2], w_hat.device, w_hat.real.dtype)

    def _advection_hat(self, w_hat: Tensor, ops: _Operators) -> Tensor:
        """Dealiased ``rfft2(u . grad w)`` from ``w_hat``; ``[..., n, n//2+1]``."""
        n = w_hat.shape[-2]
        psi_hat = w_hat * ops.inv_k2
        # one inverse transform for the four factors: fewer kernel launches on a GPU
        factors = torch.stack(
            [ops.iky * psi_hat, -ops.ikx * psi_hat, ops.ikx * w_hat, ops.iky * w_hat]
        )
        u, v, w_x, w_y = torch.fft.irfft2(factors, s=(n, n)).unbind(0)
        return torch.fft.rfft2(u * w_x + v * w_y) * ops.dealias

    def velocity(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """Velocity ``(u, v) = (psi_y, -psi_x)`` of vorticity ``w`` ``[..., n, n]``, each ``[..., n, n]``."""
        n = w.shape[-1]
        w_hat = torch.fft.rfft2(w)
        ops = self._ops_for(w_hat)
        psi_hat = w_hat * ops.inv_k2
        uv = torch.fft.irfft2(torch.stack([ops.iky * psi_hat, -ops.ikx * psi_hat]), s=(n, n))
        return uv[0], uv[1]

    def advection(self, w: Tensor) -> Tensor:
        """The 2/3-dealiased advection term ``u . grad w`` of ``w`` ``[..., n, n]``, same shape."""
        w_hat = torch.fft.rfft2(w)
        return torch.fft.irfft2(self._advection_hat(w_hat, self._ops_for(w_hat)), s=w.shape[-2:])

    def cfl(self, w: Tensor, dt: float) -> Tensor:
        """Advective Courant number ``max(|u|, |v|) dt n`` per sample of ``w`` ``[B, n, n]``, ``[B]``."""
        u, v = self.velocity(w)
        speed = torch.maximum(u.abs().amax(dim=(-2, -1)), v.abs().amax(dim=(-2, -1)))
        return speed * dt * w.shape[-1]

    # -- the differentiable step ------------------------------------------------------------
    def step_spectral(self, w_hat: Tensor, dt: float | Tensor, scheme: Scheme | None = None,
                      forcing_hat: Tensor | None = None) -> Tensor:
        """One IMEX step on the spectral state ``w_hat = rfft2(w)``, ``[..., n, n//2+1]`` complex.

        Pure torch and differentiable in ``w_hat`` (and in ``dt`` if it is a tensor). The grid
        size ``n`` is ``w_hat.shape[-2]``. This is the step :meth:`solve` iterates; it skips the
        two transforms per step that :meth:`step` spends on a physical-space state. ``scheme``
        defaults to the problem's; ``forcing_hat`` (``rfft2`` of an extra source, e.g. a learned
        one) is added to ``f`` and held over the step.
        """
        ops = self._ops_for(w_hat)
        half = (0.5 * dt * self.viscosity) * ops.k2
        implicit = 1.0 / (1.0 + half)
        explicit = (1.0 - half) * w_hat
        source = ops.forcing if forcing_hat is None else ops.forcing + forcing_hat
        n0 = source - self._advection_hat(w_hat, ops)
        predicted = (explicit + dt * n0) * implicit
        if (scheme or self.scheme) == "cn_euler":
            return predicted
        n1 = source - self._advection_hat(predicted, ops)
        return (explicit + (0.5 * dt) * (n0 + n1)) * implicit

    def step(self, w: Tensor, dt: float | Tensor, scheme: Scheme | None = None,
             forcing: Tensor | None = None) -> Tensor:
        """Advance vorticity ``w`` ``[..., n, n]`` (physical space, any real dtype) by ``dt``.

        Works on any square grid and device (the operators of each grid are built once and
        cached), differentiably, so a coarse ``step`` can sit in a training loop beside a network
        (solver in the loop). Same numbers as :meth:`step_spectral` up to rounding.
        """
        n = w.shape[-1]
        if w.shape[-2] != n:
            raise ValueError(f"w: expected a square grid [..., n, n], got {tuple(w.shape)}")
        forcing_hat = None if forcing is None else torch.fft.rfft2(forcing)
        return torch.fft.irfft2(self.step_spectral(torch.fft.rfft2(w), dt, scheme, forcing_hat), s=(n, n))

    # -- differentiable-solver view ---------------------------------------------------------------
    def coarse_step(self, state: Tensor, dt: float | Tensor, forcing: Tensor | None = None) -> Tensor:
        """``coarse_scheme`` on the state's grid (any size), with an optional extra forcing."""
        return self.step(state, dt, self.coarse_scheme, forcing)

    def reference_step(self, state: Tensor, dt: float) -> Tensor:
        return self.step(state, dt)

    def initial_states(self, n: int, seed: int) -> Tensor:
        return self.initial_vorticity(n, self.fine_resolution, torch.Generator().manual_seed(int(seed)))

    def courant(self, state: Tensor, dt: float) -> Tensor:
        """The advective Courant number ``max(|u|, |v|) dt n`` (the viscous term is implicit)."""
        return self.cfl(state, dt)

    def trajectory_of(self, solution: Solution) -> tuple[Tensor, float]:
        """The records of :meth:`solve` from the first at or after :attr:`spinup` (where the
        hybrid's trajectories start)."""
        first = math.ceil(self.spinup / self.record_every - 1e-9)
        return solution.fields["w"][:, first:], self.record_every

    # -- data ------------------------------------------------------------------------------
    def initial_vorticity(self, n_samples: int, n: int, generator: torch.Generator) -> Tensor:
        """Initial vorticity drawn from the Gaussian random field, ``[n_samples, n, n]``."""
        return grf_2d(
            n_samples, n, self.alpha, self.tau, self.sigma, generator=generator, **self.factory
        )

    def check_solve(self, resolution: int | None = None, n_samples: int = 1) -> None:
        self._check_resolution(resolution or self.resolution)
        if n_samples < 1:
            raise ValueError(f"n_samples: must be >= 1, got {n_samples}")

    def check_resolution(self, resolution: int) -> None:
        self._check_resolution(resolution)

    def solve(self, resolution: int | None = None, n_samples: int = 1, seed: int = 0) -> Solution:
        """Trajectories from random initial vorticity: ``{"w": [N, T, X, Y]}``, ``T`` including 0.

        Integrates on the ``fine_resolution`` grid with :meth:`step_spectral`, then keeps every
        ``fine_resolution / resolution``-th point, as Li et al. subsample 256 to 64.
        """
        self.check_solve(resolution, n_samples)
        res = resolution or self.resolution
        fine, stride = self.fine_resolution, self.fine_resolution // res
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(seed)
        w0 = self.initial_vorticity(n_samples, fine, generator)
        w = torch.empty(n_samples, self.n_records + 1, res, res, **self.factory)
        max_cfl = 0.0
        n_steps = self.n_records * self.steps_per_record
        n_batches = -(-n_samples // self.batch_size)
        label = f"navier_stokes: time steps on {fine}x{fine}"
        label += f", {n_batches} batches" if n_batches > 1 else ""
        bar = progress.track_steps(n_batches * n_steps, label)
        with torch.no_grad(), bar:
            for lo in range(0, n_samples, self.batch_size):
                hi = min(lo + self.batch_size, n_samples)
                w_hat = torch.fft.rfft2(w0[lo:hi])
                for record in range(self.n_records + 1):
                    if record:
                        for _ in range(self.steps_per_record):
                            w_hat = self.step_spectral(w_hat, self.dt)
                            bar.advance()
                    w_fine = torch.fft.irfft2(w_hat, s=(fine, fine))
                    if not torch.isfinite(w_fine).all():  # one sync per record, not per step
                        raise ValueError(
                            f"dt: the solution became non-finite by t={record * self.record_every:g}; "
                            f"reduce dt={self.dt:g}"
                        )
                    max_cfl = max(max_cfl, self.cfl(w_fine, self.dt).max().item())
                    w[lo:hi, record] = w_fine[..., ::stride, ::stride]
        if w.device.type == "cuda":
            torch.cuda.synchronize(w.device)
        wall = time.perf_counter() - start
        return Solution(
            fields={"w": w},
            grid={
                "t": torch.arange(self.n_records + 1, **self.factory) * self.record_every,
                "x": torch.arange(res, **self.factory) / res,
                "y": torch.arange(res, **self.factory) / res,
            },
            attrs={
                "solver": f"pseudo-spectral, 2/3 dealiased, {self.scheme}",
                "scheme": self.scheme,
                "dt": self.dt,
                "n_steps": n_steps,
                "fine_resolution": fine,
                "viscosity": self.viscosity,
                "forcing_amplitude": self.forcing_amplitude,
                "max_cfl": max_cfl,
                "wall_time_s": wall,
            },
        )

    # -- operator-data view ----------------------------------------------------------------------
    n_dims = 2
    step_channels = 1

    @property
    def in_channels(self) -> int:
        self._check_t_in()
        return self.t_in

    @property
    def out_channels(self) -> int:
        self._check_t_in()
        return self.n_records - self.t_in

    def _check_t_in(self) -> None:
        # checked on use, so that solver-only configs (short t_end) need not care
        if self.t_in >= self.n_records:
            raise ValueError(f"problem.t_in: must be below the {self.n_records} records to "
                             f"t_end={self.t_end:g}, got {self.t_in}")

    @property
    def output_work_fraction(self) -> float:
        """Share of :meth:`solve`'s steps that produce ``u`` from ``a``: the rest integrates the
        input records, which a surrogate is given."""
        return self.out_channels / self.n_records

    def operator_fields(self, solution: Solution) -> tuple[Tensor, Tensor]:
        """``a = w(t_1 .. t_in)``, ``u = w(t_in+1 .. T)`` as ``[N, C, X, Y]``, one record per
        channel (the initial condition ``w(0)`` is not part of either)."""
        w = solution.fields["w"]
        return w[:, 1:self.t_in + 1], w[:, self.t_in + 1:]

    def operator_pairs(self, split: str, n_samples: int, resolution: int | None = None):
        """``(a, u, grid)``, see :meth:`operator_fields`. Trajectories are generated once per
        split, size and resolution (the same initial conditions at every resolution, since they
        are drawn on ``fine_resolution``) and cached under ``data_dir`` in float32."""
        from ..data.cache import load_dataset

        res = int(resolution or self.resolution)
        try:
            self._check_resolution(res)
        except ValueError as err:
            raise ConfigError("resolution", str(err).removeprefix("resolution: ")) from None
        self._check_t_in()
        seed = SPLIT_SEEDS[split]
        # resolution: trajectories are solved at the resolution asked for
        generating = self.cache_key(resolution=res, n_samples=int(n_samples), seed=seed, dtype="float32")

        def generate() -> Solution:
            solver = NavierStokes(**{k: getattr(self, k) for k in (
                "viscosity", "forcing_amplitude", "t_end", "record_every", "dt", "scheme",
                "fine_resolution", "alpha", "tau", "sigma", "batch_size")}, resolution=res)
            solution = solver.to(float64_device(self.device), torch.float64).solve(res, int(n_samples), seed)
            # float32 halves the file (1000 trajectories at 64^2: 0.8 GB); rounding is far
            # below any model's error
            solution.fields = {k: v.float() for k, v in solution.fields.items()}
            return solution

        data = load_dataset(f"navier_stokes-{split}", generating, generate, Path(self.data_dir))
        a, u = (f.to(**self.factory) for f in self.operator_fields(data))
        # persistence: the last input record held for every output time
        last = a[:, -1:].double().expand_as(u)
        self.baseline_persistence_rel_l2 = relative_l2(last.flatten(1), u.double().flatten(1)).mean().item()
        x = torch.arange(res, **self.factory) / res
        return a, u, {"x": x, "y": x.clone()}

    def baselines(self) -> dict[str, float]:
        value = getattr(self, "baseline_persistence_rel_l2", None)
        return {} if value is None else {"persistence_rel_l2": value}
