"""Domains for collocation and quadrature: boxes in any dimension and polygons in the plane
(the L-shape, the slit square), with uniform sampling of the interior and of the boundary by
arc length, and approximate distance functions for exact boundary conditions.

The distance functions follow Sukumar & Srivastava (2022), "Exact imposition of boundary
conditions with distance functions in physics-informed deep neural networks": each boundary
piece ``i`` has a function ``phi_i`` that vanishes on it and behaves like the distance to it
nearby; the pieces are joined by the R-equivalence ``phi = 1 / sum_i 1 / phi_i``, which vanishes
on the whole boundary, is positive inside and smooth away from the corners.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .sampling import sobol

#: keeps 1 / phi finite on the boundary itself (points of the reference grid)
_TINY = 1e-30


def _interior(n: int, bounds: Sequence[tuple[float, float]], seed: int, strict: Callable[[Tensor], Tensor],
              ratio: float, factory: dict) -> Tensor:
    """The first ``n`` scrambled Sobol points of the box ``bounds`` that ``strict`` keeps, judged
    after the cast to the dtype asked for: a point a float64 draw puts just inside, float32 may
    round onto the boundary (and a Sobol coordinate can be exactly 0), where a distance function's
    derivatives are undefined. ``ratio``: box volume over the domain's, to size each draw."""
    dtype = factory.get("dtype") or torch.float64
    engine = torch.quasirandom.SobolEngine(len(bounds), scramble=True, seed=seed)
    lo = torch.tensor([b[0] for b in bounds], dtype=torch.float64)
    hi = torch.tensor([b[1] for b in bounds], dtype=torch.float64)
    taken, have, size = [], 0, n
    while have < n:
        draw = (lo + (hi - lo) * engine.draw(size, dtype=torch.float64)).to(dtype)
        keep = draw[strict(draw.double())]
        taken.append(keep)
        have += len(keep)
        size = int(1.1 * (n - have) * ratio) + 64
    return torch.cat(taken)[:n].to(**factory)


def _join(pieces: Sequence[Tensor]) -> Tensor:
    """R-equivalence of the pieces' distance functions (Sukumar & Srivastava 2022, eq. 11, m = 1)."""
    return 1.0 / sum(1.0 / p.clamp_min(_TINY) for p in pieces)


class Box:
    """The box ``prod_i [low_i, high_i]`` in ``d = len(bounds)`` dimensions."""

    def __init__(self, bounds: Sequence[tuple[float, float]]) -> None:
        self.bounds = [(float(lo), float(hi)) for lo, hi in bounds]
        self.dim = len(self.bounds)
        self.sides = [hi - lo for lo, hi in self.bounds]

    @property
    def measure(self) -> float:
        return math.prod(self.sides)

    def face_areas(self) -> list[float]:
        """Area of each face, in the order (axis 0 low, axis 0 high, axis 1 low, ...)."""
        return [self.measure / s for s in self.sides for _ in (0, 1)]

    @property
    def boundary_measure(self) -> float:
        return sum(self.face_areas())

    def contains(self, x: Tensor) -> Tensor:
        lo, hi = self._ends(x)
        return ((x >= lo) & (x <= hi)).all(dim=1)

    def _ends(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b = torch.tensor(self.bounds, dtype=x.dtype, device=x.device)
        return b[:, 0], b[:, 1]

    def sample_interior(self, n: int, seed: int, **factory) -> Tensor:
        """``n`` Sobol points strictly inside, in the dtype asked for (see :func:`_interior`)."""
        def strict(x: Tensor) -> Tensor:
            lo, hi = self._ends(x)
            return ((x > lo) & (x < hi)).all(dim=1)

        return _interior(n, self.bounds, seed, strict, 1.0, factory)

    def sample_boundary(self, n: int, seed: int, **factory) -> Tensor:
        """Uniform by area: the first Sobol coordinate picks a face in proportion to its area
        and, stretched back to [0, 1) within its share, places the point along axis 0 (unless
        that is the face's own axis); the others place it along the remaining axes."""
        u = sobol(n, [(0.0, 1.0)] * self.dim, seed, dtype=torch.float64)
        areas = torch.tensor(self.face_areas(), dtype=torch.float64)
        edges = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(areas, 0) / areas.sum()])
        face = (torch.searchsorted(edges, u[:, 0].contiguous(), right=True) - 1).clamp(0, 2 * self.dim - 1)
        u[:, 0] = ((u[:, 0] - edges[face]) / (edges[face + 1] - edges[face])).clamp(0, 1)
        lo = torch.tensor([b[0] for b in self.bounds], dtype=torch.float64)
        hi = torch.tensor([b[1] for b in self.bounds], dtype=torch.float64)
        x = lo + (hi - lo) * u
        axis = face // 2
        x[torch.arange(n), axis] = torch.where(face % 2 == 1, hi[axis], lo[axis])
        return x.to(**factory)

    def face_distances(self, x: Tensor) -> list[Tensor]:
        """``phi_f`` of every face (its distance, a linear function), ``[N]`` each."""
        lo, hi = self._ends(x)
        return [d for i in range(self.dim) for d in (x[:, i] - lo[i], hi[i] - x[:, i])]

    def distance(self, x: Tensor) -> Tensor:
        """Approximate distance to the boundary ``[N]``: 0 on it, positive inside."""
        return _join(self.face_distances(x))

    def lift(self, x: Tensor, data: Callable[[Tensor], Tensor]) -> Tensor:
        """A smooth function ``[N, m]`` equal to ``data`` on the boundary, from the boundary
        values alone: transfinite interpolation ``sum_f w_f data(P_f x)`` of the values at the
        projections onto the faces, with weights ``w_f = phi_f^-1 / sum_k phi_k^-1``
        (Sukumar & Srivastava 2022, section 4)."""
        lo, hi = self._ends(x)
        phis = self.face_distances(x)
        inv = torch.stack([1.0 / p.clamp_min(_TINY) for p in phis], dim=1)
        w = inv / inv.sum(dim=1, keepdim=True)
        g = 0.0
        for f in range(2 * self.dim):
            i = f // 2
            p = x.clone()
            p[:, i] = hi[i] if f % 2 else lo[i]
            g = g + w[:, f:f + 1] * data(p)
        return g


class Polygon:
    """A domain of the plane bounded by straight segments (an outer polygon, possibly with slits:
    segments with the domain on both sides, counted once in the boundary's length).

    Parameters
    ----------
    segments
        ``((x0, y0), (x1, y1))`` per boundary segment.
    inside
        ``[N, 2] -> [N]`` bool: whether points lie in the closed domain.
    box
        The bounding box, ``[(x_lo, x_hi), (y_lo, y_hi)]``.
    measure
        The area.
    """

    dim = 2

    def __init__(self, segments: Sequence[tuple[tuple[float, float], tuple[float, float]]],
                 inside: Callable[[Tensor], Tensor], box: Sequence[tuple[float, float]], measure: float) -> None:
        self.segments = [(tuple(map(float, a)), tuple(map(float, b))) for a, b in segments]
        self._inside, self.bounds, self.measure = inside, [tuple(b) for b in box], float(measure)
        self.lengths = [math.dist(a, b) for a, b in self.segments]

    @property
    def boundary_measure(self) -> float:
        return sum(self.lengths)

    def contains(self, x: Tensor) -> Tensor:
        return self._inside(x)

    def sample_interior(self, n: int, seed: int, **factory) -> Tensor:
        """Sobol points of the bounding box that fall strictly in the domain (rejection), the
        first ``n`` of them; the same ``seed`` gives the same points (see :func:`_interior`)."""
        box_area = math.prod(hi - lo for lo, hi in self.bounds)
        return _interior(n, self.bounds, seed, self._strict, box_area / self.measure, factory)

    def _strict(self, x: Tensor) -> Tensor:
        """Inside and off every segment: slits have no area but would be sampled, and a Sobol
        coordinate can be exactly 0, which puts a point on the box's edge, where the distance
        function's derivatives are undefined."""
        return self._inside(x) & (torch.stack(self.segment_distances(x)).amin(0) > 0)

    def sample_boundary(self, n: int, seed: int, **factory) -> Tensor:
        """Uniform by arc length: a Sobol number in ``[0, L)`` walks along the segments."""
        s = sobol(n, [(0.0, self.boundary_measure)], seed, dtype=torch.float64)[:, 0]
        ends = torch.tensor([0.0, *itertools.accumulate(self.lengths)], dtype=torch.float64)
        k = (torch.searchsorted(ends, s, right=True) - 1).clamp(0, len(self.segments) - 1)
        a = torch.tensor([seg[0] for seg in self.segments], dtype=torch.float64)
        b = torch.tensor([seg[1] for seg in self.segments], dtype=torch.float64)
        frac = ((s - ends[k]) / torch.tensor(self.lengths, dtype=torch.float64)[k]).unsqueeze(1)
        return (a[k] + frac * (b[k] - a[k])).to(**factory)

    def segment_distances(self, x: Tensor) -> list[Tensor]:
        """``phi_i`` per segment: the trimmed distance to a line segment (Sukumar & Srivastava
        2022, eq. 13): ``sqrt(f^2 + ((sqrt(t^2 + f^4) - t) / 2)^2)`` with ``f`` the signed
        distance to the segment's line and ``t >= 0`` exactly between its ends."""
        out = []
        for (x0, y0), (x1, y1) in self.segments:
            length = math.hypot(x1 - x0, y1 - y0)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            f = ((x[:, 0] - x0) * (y1 - y0) - (x[:, 1] - y0) * (x1 - x0)) / length
            t = ((length / 2) ** 2 - (x[:, 0] - cx) ** 2 - (x[:, 1] - cy) ** 2) / length
            varphi = torch.sqrt(t * t + f ** 4)
            out.append(torch.sqrt(f * f + ((varphi - t) / 2) ** 2))
        return out

    def distance(self, x: Tensor) -> Tensor:
        """Approximate distance to the boundary ``[N]``: 0 on every segment, positive elsewhere."""
        return _join(self.segment_distances(x))

    def lift(self, x: Tensor, data: Callable[[Tensor, int], Tensor | None]) -> Tensor:
        """A function ``[N, m]`` equal to the boundary data on every segment, twice continuously
        differentiable away from the vertices, from the data alone: transfinite interpolation
        ``sum_i w_i g_i(x)`` with ``w_i = phi_i^-1 / sum_k phi_k^-1`` (Sukumar & Srivastava 2022,
        section 4), where ``g_i`` is segment ``i``'s data at the projection of ``x`` onto it,
        continued past its ends by its second-order Taylor polynomial there.

        ``data(points, i)`` gives segment ``i``'s data at points on it (``None``: zero data).
        """
        inv = torch.stack([1.0 / p.clamp_min(_TINY) for p in self.segment_distances(x)], dim=1)
        w = inv / inv.sum(dim=1, keepdim=True)
        g = 0.0
        for i, ((x0, y0), (x1, y1)) in enumerate(self.segments):
            length = self.lengths[i]
            a = torch.tensor([x0, y0], dtype=x.dtype, device=x.device)
            tangent = torch.tensor([(x1 - x0) / length, (y1 - y0) / length], dtype=x.dtype, device=x.device)
            s = (x - a) @ tangent
            inner = s.clamp(0.0, length)
            with torch.enable_grad():
                # the data and its first two derivatives along the segment at the clamped position
                q = inner.detach().requires_grad_(True) if not inner.requires_grad else inner
                d0 = data(a + q[:, None] * tangent, i)
                if d0 is None:
                    continue
                d1 = torch.stack([torch.autograd.grad(d0[:, k].sum(), q, create_graph=True)[0] for k in range(d0.shape[1])], 1)
                d2 = torch.stack([torch.autograd.grad(d1[:, k].sum(), q, create_graph=True)[0] for k in range(d0.shape[1])], 1)
            past = (s - inner).unsqueeze(1)  # 0 between the ends
            g = g + w[:, i:i + 1] * (d0 + d1 * past + 0.5 * d2 * past * past)
        return g if isinstance(g, Tensor) else torch.zeros_like(x[:, :1])


def lshape() -> Polygon:
    """``(-1, 1)^2`` without the fourth quadrant ``[0, 1] x [-1, 0]``: re-entrant corner at 0."""
    corners = [(-1, -1), (0, -1), (0, 0), (1, 0), (1, 1), (-1, 1)]
    segments = list(zip(corners, corners[1:] + corners[:1]))
    square = Box([(-1.0, 1.0), (-1.0, 1.0)])

    def inside(x: Tensor) -> Tensor:
        return square.contains(x) & ~((x[:, 0] > 0) & (x[:, 1] < 0))

    return Polygon(segments, inside, square.bounds, 3.0)


def slit() -> Polygon:
    """``(-1, 1)^2`` cut along ``[0, 1] x {0}`` (E & Yu 2018): the domain lies on both sides of
    the slit, whose tip at the origin is a crack."""
    corners = [(-1, -1), (1, -1), (1, 0), (1, 1), (-1, 1)]  # the right side split where the slit ends
    segments = list(zip(corners, corners[1:] + corners[:1])) + [((0, 0), (1, 0))]
    square = Box([(-1.0, 1.0), (-1.0, 1.0)])
    return Polygon(segments, square.contains, square.bounds, 4.0)
