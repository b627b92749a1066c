"""Poisson's equation with Dirichlet data, in d dimensions, on boxes and on domains with corners.

    -Laplace u = f  in Omega,    u = g  on the boundary of Omega,

with exact solutions, so every method is scored exactly:

- ``domain=square`` (``(-1, 1)^d``) and ``domain=cube`` (``(0, 1)^d``): ``solution=sine``,
  ``u = prod_i sin(pi x_i)`` (``f = d pi^2 u``, zero data); ``solution=steady_heat`` (2D), a plate
  held at ``cos``-shaped temperature on one side and 0 on the others, ``f = 0``; ``solution=pairs``,
  ``u = sum_k x_(2k-1) x_(2k)``, harmonic (E & Yu 2018, section 3.2, in ``dim=10`` on the cube);
- ``domain=lshape``: ``(-1, 1)^2`` without the fourth quadrant, ``u = r^(2/3) sin(2 theta / 3)``
  (``f = 0``), whose gradient is singular at the re-entrant corner;
- ``domain=slit``: ``(-1, 1)^2`` cut along ``[0, 1] x {0}`` (E & Yu 2018, section 3.1),
  ``u = r^(1/2) sin(theta / 2)`` (``f = 0``), singular at the crack tip.

Views: the physics residual (PINN) and the energy functional ``|grad u|^2 / 2 - f u`` (Deep Ritz).
The reference solver of ``sciml solve problem=poisson`` is the second-order five-point finite
difference on a grid through the origin, in two dimensions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor

from ..constraints import PositiveInt
from ..numerics import geometry
from ..numerics.finite_difference import poisson_dirichlet_2d
from ..numerics.metrics import error_metrics
from ..numerics.sampling import SCORING_SEED
from .base import EnergyFunctional, PhysicsResidual, Problem, Solution

#: each domain's default solution, and the solutions it offers
SOLUTIONS = {
    "square": ("sine", "steady_heat", "pairs"),
    "cube": ("pairs", "sine", "steady_heat"),
    "lshape": ("singular",),
    "slit": ("singular",),
}
#: coordinate names by dimension (single letters for derivative names; no t, no u)
LETTERS = "abcdefghijklmnopqrsvwxyz"


def coordinate_names(dim: int) -> tuple[str, ...]:
    return ("x", "y", "z")[:dim] if dim <= 3 else tuple(LETTERS[:dim])


class Poisson(Problem, PhysicsResidual, EnergyFunctional):
    """Poisson's equation ``-Laplace u = f``, ``u = g`` on the boundary, with an exact solution.

    Parameters
    ----------
    domain
        ``square`` ``(-1, 1)^d``, ``cube`` ``(0, 1)^d``, ``lshape`` or ``slit`` (2D).
    dim
        Space dimensions ``d`` (up to 24; the L-shape and the slit are two-dimensional).
    solution
        The exact solution (see the module docstring); ``null``: the domain's default (sine on the
        square, pairs on the cube, the corner singularity on the L-shape and the slit).
    resolution
        Points per axis of the reference grid (odd, so that it passes through the origin).
    n_scoring
        Scoring points in more than two dimensions, where no grid can cover the domain.
    singular_distance
        On the L-shape and the slit, the distance function of the exact boundary data
        (:meth:`constraint`) times ``r^(alpha - 1)``, ``r`` the distance to the singular point:
        ``phi`` grows like ``r`` there while every solution grows like ``r^alpha``, so that
        ``u = g + phi N`` needs a network output ``N`` that is unbounded at the corner; scaled,
        ``phi`` grows like ``r^alpha`` and a bounded ``N`` suffices. It uses the domain's exponent
        only, as singular finite elements do, not the solution.
    """

    def __init__(
        self,
        domain: Literal["square", "cube", "lshape", "slit"] = "square",
        dim: PositiveInt = 2,
        solution: Literal["sine", "steady_heat", "pairs", "singular"] | None = None,
        resolution: PositiveInt = 257,
        n_scoring: PositiveInt = 65536,
        singular_distance: bool = False,
    ) -> None:
        super().__init__()
        dim = int(dim)
        if dim > len(LETTERS):
            raise ValueError(f"dim: at most {len(LETTERS)} dimensions, got {dim}")
        if domain in ("lshape", "slit") and dim != 2:
            raise ValueError(f"dim: domain={domain} is two-dimensional, got dim={dim}")
        solution = solution or SOLUTIONS[domain][0]
        if solution not in SOLUTIONS[domain]:
            raise ValueError(f"solution: domain={domain} offers {', '.join(SOLUTIONS[domain])}, not {solution}")
        if solution == "steady_heat" and dim != 2:
            raise ValueError(f"solution: steady_heat is two-dimensional, got dim={dim}")
        if solution == "pairs" and dim < 2:
            raise ValueError("solution: pairs needs dim >= 2")
        self.domain, self.dim, self.solution = domain, dim, solution
        if singular_distance and domain not in ("lshape", "slit"):
            raise ValueError(f"singular_distance: domain={domain} has no singular point (lshape and slit have)")
        self.resolution, self.n_scoring = int(resolution), int(n_scoring)
        self.singular_distance = bool(singular_distance)
        self.coords = coordinate_names(dim)
        self.derivatives = tuple(f"u_{c}{c}" for c in self.coords)
        self.singular_point = (0.0, 0.0) if domain in ("lshape", "slit") else None
        if domain == "lshape":
            self.geometry = geometry.lshape()
        elif domain == "slit":
            self.geometry = geometry.slit()
        else:
            self.geometry = geometry.Box([(-1.0, 1.0) if domain == "square" else (0.0, 1.0)] * dim)

    # -- the exact solution and the data ---------------------------------------------------------
    def exact_solution(self, points: Tensor) -> Tensor:
        x = points
        if self.solution == "sine":
            return torch.prod(torch.sin(math.pi * x), dim=1, keepdim=True)
        if self.solution == "pairs":
            return (x[:, 0:2 * (self.dim // 2):2] * x[:, 1:2 * (self.dim // 2):2]).sum(1, keepdim=True)
        if self.solution == "steady_heat":
            lo, hi = self.geometry.bounds[0]
            s = (x - lo) / (hi - lo)
            return (torch.sinh(math.pi * s[:, 0:1]) * torch.sin(math.pi * s[:, 1:2])) / math.sinh(math.pi)
        return self._singular(x)

    def _singular(self, x: Tensor, cut: float = 0.0) -> Tensor:
        """``r^alpha sin(alpha theta)``, ``theta`` the angle from the positive x axis in
        ``[0, 2 pi)`` (the slit, an edge of the L-shape), continued across that axis onto
        ``[cut, cut + 2 pi)`` when ``cut > 0`` (for boundary data near it, see :meth:`constraint`)."""
        r = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        theta = cut + torch.remainder(torch.atan2(x[:, 1:2], x[:, 0:1]) - cut, 2 * math.pi)
        return r.pow(self.alpha) * torch.sin(self.alpha * theta)

    @property
    def alpha(self) -> float:
        """The exponent ``alpha`` of the singular point of the L-shape or the slit, ``pi / omega``
        for the interior angle ``omega`` there (Grisvard 1985): every solution with smooth data
        behaves like ``r^alpha`` at that point."""
        return 0.5 if self.domain == "slit" else 2.0 / 3.0

    def source(self, points: Tensor) -> Tensor:
        """``f = -Laplace u`` ``[N, 1]``."""
        if self.solution == "sine":
            return self.dim * math.pi**2 * self.exact_solution(points)
        return torch.zeros_like(points[:, :1])

    def boundary_value(self, points: Tensor) -> Tensor:
        return self.exact_solution(points)

    # -- the domain ------------------------------------------------------------------------------
    @property
    def bounds(self) -> list[tuple[float, float]]:
        return list(self.geometry.bounds)

    def contains(self, points: Tensor) -> Tensor:
        return self.geometry.contains(points)

    @property
    def measure(self) -> float:
        return self.geometry.measure

    @property
    def boundary_measure(self) -> float:
        return self.geometry.boundary_measure

    def sample_interior(self, n: int, seed: int) -> Tensor:
        return self.geometry.sample_interior(n, seed, **self.factory)

    def sample_boundary(self, n: int, seed: int) -> Tensor:
        return self.geometry.sample_boundary(n, seed, **self.factory)

    @property
    def feature_bounds(self) -> list[tuple[float, float]]:
        return [(0.0, math.sqrt(2.0))] if self.domain == "slit" else []

    def input_features(self, points: Tensor) -> Tensor:
        """On the slit, its distance: ``|y|`` beside it (``x > 0``), ``r`` behind the tip. The
        exact ``(u - g) / phi`` is smooth in ``(x, y, |y|)`` near the slit, not in ``(x, y)``."""
        if self.domain != "slit":
            return points[:, :0]
        x, y = points[:, 0], points[:, 1]
        return torch.where(x > 0, y.abs(), torch.linalg.vector_norm(points[:, :2], dim=1)).unsqueeze(1)

    @property
    def offers_constraint(self) -> bool:
        """Not for ``solution=pairs``: transfinite interpolation reproduces multilinear
        functions, so the lift of its boundary data would be the solution itself."""
        return self.solution != "pairs"

    def constraint(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """``g``: the boundary data lifted into the domain by transfinite interpolation from the
        data alone; ``phi``: the approximate distance to the boundary (Sukumar & Srivastava 2022).
        On the L-shape and the slit, ``g`` and ``phi`` are not smooth at the corners."""
        if self.solution == "sine":
            g = torch.zeros_like(points[:, :1])
        elif isinstance(self.geometry, geometry.Box):
            g = self.geometry.lift(points, self.boundary_value)
        else:
            g = self.geometry.lift(points, self._segment_data)
        phi = self.geometry.distance(points).unsqueeze(1)
        if self.singular_distance:  # phi ~ r at the corner, u ~ r^alpha: N = (u - g) / phi would be unbounded
            r = torch.linalg.vector_norm(points - points.new_tensor(self.singular_point), dim=1, keepdim=True)
            phi = phi * r.clamp(min=1e-12).pow(self.alpha - 1.0)
        return g, phi

    def _segment_data(self, points: Tensor, i: int) -> Tensor | None:
        """The data on segment ``i``: zero on the edges that meet at the singular point; on the
        others the solution with the angle's cut turned away from the segment, so that its
        derivatives along the segment are one-sided at an end on the cut (the slit's far end)."""
        (x0, y0), (x1, y1) = self.geometry.segments[i]
        if (x0, y0) == (0.0, 0.0) or (x1, y1) == (0.0, 0.0):
            return None
        middle = math.atan2((y0 + y1) / 2, (x0 + x1) / 2) % (2 * math.pi)
        return self._singular(points, cut=max(middle - math.pi, 0.0))

    # -- physics-residual view -------------------------------------------------------------------
    def residual(self, fields: Mapping[str, Tensor], points: Tensor,
                 coefficients: Mapping[str, Tensor | float]) -> Tensor:
        return -sum(fields[name] for name in self.derivatives) - self.source(points)

    def boundary_residual(self, u: Tensor, points: Tensor) -> Tensor:
        return u - self.boundary_value(points)

    # -- energy-functional view ------------------------------------------------------------------
    def energy_density(self, u: Tensor, grad: Tensor, points: Tensor) -> Tensor:
        """The Dirichlet energy density ``|grad u|^2 / 2 - f u``, whose integral the solution
        minimises among functions with its boundary data."""
        return 0.5 * grad.pow(2).sum(1) - (self.source(points) * u).sum(1)

    def energy(self) -> float:
        """``E(u)`` of the exact solution, in closed form where known (``nan`` otherwise)."""
        if self.solution == "sine":
            # int |grad u|^2 / 2 = d pi^2 / 2 * (|Omega| / 2^d); int f u = d pi^2 * |Omega| / 2^d
            mean_sq = 0.5**self.dim * self.measure
            return 0.5 * self.dim * math.pi**2 * mean_sq - self.dim * math.pi**2 * mean_sq
        if self.solution == "pairs":
            # |grad u|^2 = the sum of x_i^2 over the paired coordinates, each of mean 1/3
            return 0.5 * (2 * (self.dim // 2)) / 3 * self.measure
        return math.nan

    # -- reference -------------------------------------------------------------------------------
    def reference(self, resolution: int | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """The exact solution on a grid of the (bounding) box, NaN outside the domain; in more
        than two dimensions, the slice through the centre along the first two coordinates."""
        n = resolution or self.resolution
        axes = {}
        for i, (c, (lo, hi)) in enumerate(zip(self.coords, self.bounds)):
            axes[c] = (torch.linspace(lo, hi, n, **self.factory) if i < 2
                       else torch.tensor([(lo + hi) / 2], **self.factory))
        mesh = torch.meshgrid(*axes.values(), indexing="ij")
        points = torch.stack([m.reshape(-1) for m in mesh], dim=1)
        u = self.exact_solution(points)[:, 0]
        u = torch.where(self.contains(points), u, torch.nan)
        return axes, u.reshape(mesh[0].shape)

    def scoring_points(self) -> tuple[Tensor, Tensor] | None:
        if self.dim <= 2:
            return None
        points = self.sample_interior(self.n_scoring, SCORING_SEED)
        return points, self.exact_solution(points)

    def metrics(self, prediction: Tensor, reference: Tensor) -> dict[str, float]:
        """Errors over the points of the domain (the reference is NaN outside it)."""
        inside = ~torch.isnan(reference)
        return error_metrics(prediction[inside], reference[inside])

    def baselines(self) -> dict[str, float]:
        """In 2D: the five-point finite-difference solution on a 9 x 9 grid, its relative L2
        error at its own nodes (49 unknowns, fewer than any network here has parameters)."""
        if self.dim != 2:
            return {}
        solution = self.solve(resolution=9)
        return {"fd_9x9_rel_l2": solution.attrs["rel_l2_vs_exact"]}

    # -- reference solver ------------------------------------------------------------------------
    def check_solve(self, resolution: int | None = None, n_samples: int = 1) -> None:
        if self.dim != 2:
            raise ValueError(f"problem.dim: the finite-difference reference solver is two-dimensional; dim={self.dim} "
                             "is scored against its exact solution")
        if n_samples != 1:
            raise ValueError("n_samples: Poisson's problem has one instance, use 1")
        n = resolution or self.resolution
        if n < 3 or n % 2 == 0:
            raise ValueError(f"resolution: an odd number of points >= 3, so the grid passes through the origin; got {n}")

    def solve(self, resolution: int | None = None, n_samples: int = 1, seed: int = 0) -> Solution:
        """Five-point finite differences on a uniform grid through the origin, a sparse direct
        solve; second order for smooth solutions, limited by the corner singularity otherwise."""
        self.check_solve(resolution, n_samples)
        n = resolution or self.resolution
        start = time.perf_counter()
        (x_lo, x_hi), (y_lo, y_hi) = self.bounds
        x = torch.linspace(x_lo, x_hi, n, dtype=torch.float64)
        y = torch.linspace(y_lo, y_hi, n, dtype=torch.float64)
        h = (x_hi - x_lo) / (n - 1)
        mesh = torch.meshgrid(x, y, indexing="ij")
        points = torch.stack([m.reshape(-1) for m in mesh], dim=1)
        inside = self.contains(points).reshape(n, n)
        boundary = (self.geometry.distance(points) < 1e-9 * h).reshape(n, n)
        f, g = (fn(points)[:, 0].reshape(n, n) for fn in (self.source, self.boundary_value))
        u = poisson_dirichlet_2d(inside, boundary, f, g, h)
        wall = time.perf_counter() - start
        exact = torch.where(inside, g, torch.nan)
        errors = self.metrics(u, exact)
        return Solution(
            fields={"u": u.unsqueeze(0).to(**self.factory)},
            grid={"x": x.to(**self.factory), "y": y.to(**self.factory)},
            attrs={"solver": "five-point finite differences", "h": h, "unknowns": int((inside & ~boundary).sum()),
                   "wall_time_s": wall, "rel_l2_vs_exact": errors["rel_l2"], "max_abs_vs_exact": errors["max_abs"]},
        )
