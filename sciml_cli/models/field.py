"""What methods that learn a solution field ``u(x)`` share (PINN, Deep Ritz): the output
transform for exact boundary conditions, prediction on the reference grid, the metrics (with
the relative H1 error where the problem has a closed-form solution), the eval figures and the
stand-in for the reference solver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..numerics.metrics import error_metrics
from ..problems.base import Evaluation, FieldDomain, Solution
from .base import Model

#: points per chunk when a field is evaluated on many points
CHUNK = 65536
#: quadrature points of the H1 error
H1_POINTS = 16384


class FieldModel(Model):
    """A network ``self.net`` of the problem's coordinates, ``u = g + phi N`` when the boundary
    conditions are built in (``self.hard``), scored against the problem's reference.

    Subclasses set ``self.net``, ``self.hard`` and ``self.coords`` and keep the problem in
    ``self._problem`` (the transform is part of the forward pass).
    """

    net: torch.nn.Module
    hard: bool
    coords: tuple[str, ...]

    @staticmethod
    def check_constraint(problem: FieldDomain, hard: bool) -> None:
        if hard and not problem.offers_constraint:
            raise ValueError(f"model.hard_constraints: {type(problem).__name__} offers no constraint transform here; "
                             "set it to false")

    def inputs(self, points: Tensor) -> Tensor:
        """What the network takes at ``points``: the points themselves (by default)."""
        return points

    def forward(self, points: Tensor) -> Tensor:
        """``[N, d]`` points -> ``[N, n_outputs]`` values (with the constraint transform)."""
        u = self.net(self.inputs(points))
        if self.hard:
            g, phi = self._problem.constraint(points)
            u = g + phi * u
        return u

    def _chunked(self, fn: Callable[[Tensor], Tensor], points: Tensor, chunk: int = CHUNK) -> Tensor:
        return torch.cat([fn(points[i:i + chunk]) for i in range(0, len(points), chunk)])

    # -- evaluation ------------------------------------------------------------------------------
    def _grid_points(self, grid: dict[str, Tensor]) -> Tensor:
        """The tensor grid ``grid`` (axes in any order, named by coordinate) as ``[N, d]``
        points whose columns follow :attr:`coords`."""
        mesh = torch.meshgrid(*grid.values(), indexing="ij")
        by_name = dict(zip(grid, mesh))
        return torch.stack([by_name[c].reshape(-1) for c in self.coords], dim=1)

    def predict_grid(self, grid: dict[str, Tensor]) -> Tensor:
        """Values on a tensor grid, shaped by the grid (a trailing axis of outputs if several)."""
        points = self._grid_points(grid)
        with torch.no_grad():
            u = self._chunked(self, points)
        shape = [len(g) for g in grid.values()]
        return u.reshape(*shape, -1).squeeze(-1) if u.shape[1] == 1 else u.reshape(*shape, -1)

    def evaluate(self, problem: FieldDomain, resolution: int | None = None, split: str = "test") -> Evaluation:
        """Against the problem's reference (exact for every problem so far, so ``split`` does
        not matter): on its grid (points outside a non-box domain left out), or on its scoring
        points where a grid cannot cover the domain. Metrics: the problem's (``rel_l2`` over the
        whole grid, as the literature reports it, ``max_abs``, ...), and ``rel_h1``, the relative
        error in the H1 norm ``(|e|^2 + |grad e|^2)^(1/2)``, where the problem has a closed-form
        solution (quasi-Monte-Carlo quadrature on the domain)."""
        grid, reference = problem.reference(resolution)
        prediction = self.predict_grid(grid).reshape(reference.shape)
        prediction = torch.where(torch.isnan(reference), torch.nan, prediction)
        scoring = problem.scoring_points()
        if scoring is None:
            metrics = problem.metrics(prediction, reference)
        else:
            points, exact = scoring
            with torch.no_grad():
                metrics = error_metrics(self._chunked(self, points), exact)
        if type(problem).exact_solution is not FieldDomain.exact_solution:
            metrics["rel_h1"] = self._relative_h1(problem)
        return Evaluation(metrics, prediction, reference, grid)

    def _relative_h1(self, problem: FieldDomain) -> float:
        """``|u - v|_H1 / |v|_H1`` against the exact solution ``v``, by the problem's
        :meth:`~sciml_cli.problems.base.FieldDomain.scoring_quadrature`."""
        points, weights = problem.scoring_quadrature(H1_POINTS)
        err = ref = 0.0
        for x, w in zip(points.split(4096), weights.split(4096)):
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                u, v = self(x), problem.exact_solution(x)
                du, dv = (torch.autograd.grad(f.sum(), x)[0] for f in (u, v))
            err += (w * ((u - v).pow(2).sum(1) + (du - dv).pow(2).sum(1))).sum().item()
            ref += (w * (v.pow(2).sum(1) + dv.pow(2).sum(1))).sum().item()
        return (err / ref) ** 0.5

    def figures(self, problem: FieldDomain, evaluation: Evaluation, title: str) -> dict[str, Any]:
        """The error map (reference | prediction | error; in more than two dimensions on the
        central slice), and, where the solution is singular at a point (a re-entrant corner, a
        crack tip), the error map around that point."""
        from .. import plotting

        figures = {"": plotting.comparison_figure(evaluation.grid, evaluation.prediction, evaluation.reference,
                                                  title=title)}
        corner = getattr(problem, "singular_point", None)
        if corner is not None:
            figures["corner"] = self._corner_figure(problem, corner, title)
        return figures

    def _corner_figure(self, problem: FieldDomain, corner: tuple[float, ...], title: str, radius: float = 0.1):
        from .. import plotting

        grid = {c: torch.linspace(p - radius, p + radius, 201, **problem.factory) for c, p in zip(self.coords, corner)}
        points = self._grid_points(grid)
        inside = problem.contains(points)
        with torch.no_grad():
            u, v = self._chunked(self, points)[:, 0], problem.exact_solution(points)[:, 0]
        shape = [len(g) for g in grid.values()]
        u, v = (torch.where(inside, w, torch.nan).reshape(shape) for w in (u, v))
        return plotting.comparison_figure(grid, u, v, title=f"{title}: around the singular point {corner}")

    def surrogate(self, problem: FieldDomain, solution: Solution, batch_size: int | None = None
                  ) -> tuple[Callable[[], Tensor], Tensor, dict[str, Any]]:
        """Predict the solver's first field on the solver's grid (its axes named by coordinate)."""
        name = next(iter(solution.fields))
        reference = solution.fields[name]
        missing = [c for c in self.coords if c not in solution.grid]
        if missing:
            raise ValueError(f"the solver's grid {list(solution.grid)} lacks the coordinates {missing}")
        dtype = next(self.parameters()).dtype
        grid = {k: v.to(dtype) for k, v in solution.grid.items()}
        points = int(torch.tensor([len(g) for g in grid.values()]).prod())

        def predict() -> Tensor:
            u = self.predict_grid(grid).reshape(reference.shape)
            return torch.where(torch.isnan(reference), torch.nan, u)

        return predict, reference.to(dtype), {"points": points}
