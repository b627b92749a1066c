"""What a problem is, and the views it can offer to models.

A problem class inherits :class:`Problem` and every view it offers. A model names the view it
needs (``Model.view``); whether a pair fits is ``issubclass(problem_cls, model_cls.view)``, so
adding a view to a problem makes every model that asks for it work there, with no table to edit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..numerics.metrics import error_metrics


@dataclass
class Solution:
    """Output of a reference solver.

    Attributes
    ----------
    fields
        Named arrays, batch first, e.g. ``{"u": [N, T, X]}`` or ``{"a": [N, X], "u": [N, X]}``.
    grid
        Coordinates of the trailing axes of the fields, e.g. ``{"t": [T], "x": [X]}``, in the
        order of those axes.
    attrs
        Plain values describing the run (parameters, derived scalars such as baselines).
    """

    fields: dict[str, Tensor]
    grid: dict[str, Tensor]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation:
    """A model's prediction against the problem's reference on a grid.

    ``prediction`` and ``reference`` share a shape whose trailing axes follow ``grid`` (one axis
    per coordinate, in the grid's order); leading axes, if any, are samples and channels.
    ``metrics`` holds plain floats; ``per_sample`` the relative L2 error of each test sample
    when there are several; ``per_step``, for outputs that are consecutive snapshots, the mean
    over samples of each snapshot's relative L2 error (how the error grows along a rollout).
    """

    metrics: dict[str, float]
    prediction: Tensor
    reference: Tensor
    grid: dict[str, Tensor]
    per_sample: Tensor | None = None
    per_step: Tensor | None = None


class Problem(ABC):
    """A physical problem: its parameters, reference solver and metrics.

    Subclasses keep their constructor arguments equal to the YAML keys of
    ``configs/problem/<name>.yaml``.
    """

    #: the metric used to pick the best checkpoint and to rank sweeps (lower is better)
    val_metric: str = "rel_l2"

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self.dtype = torch.get_default_dtype()

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Problem:
        self.device, self.dtype = torch.device(device), dtype
        return self

    @property
    def factory(self) -> dict[str, Any]:
        """``device``/``dtype`` keyword arguments for tensors this problem creates."""
        return {"device": self.device, "dtype": self.dtype}

    @abstractmethod
    def solve(self, resolution: int | None = None, n_samples: int = 1, seed: int = 0) -> Solution:
        """Run the reference solver on this problem's device and dtype."""

    def metrics(self, prediction: Tensor, reference: Tensor) -> dict[str, float]:
        return error_metrics(prediction, reference)

    def baselines(self) -> dict[str, float]:
        """Errors of cheap classical predictions on the data last used (e.g. the linear heat
        equation for Burgers): a learned model is only interesting below them."""
        return {}


class PhysicsResidual(ABC):
    """View for physics-informed models: sampling, PDE residual, initial and boundary residuals.

    Points are ``[N, d]`` tensors whose columns follow :attr:`coords` (time last).
    """

    coords: tuple[str, ...]
    n_outputs: int = 1

    @property
    @abstractmethod
    def bounds(self) -> list[tuple[float, float]]:
        """``(low, high)`` per coordinate."""

    @abstractmethod
    def sample_interior(self, n: int, seed: int) -> Tensor: ...

    @abstractmethod
    def sample_initial(self, n: int, seed: int) -> Tensor: ...

    @abstractmethod
    def sample_boundary(self, n: int, seed: int) -> Tensor: ...

    @abstractmethod
    def residual(self, u: Callable[[Tensor], Tensor], points: Tensor) -> Tensor:
        """PDE residual of ``u`` at interior ``points``, ``[N, n_outputs]``."""

    @abstractmethod
    def initial_residual(self, u: Callable[[Tensor], Tensor], points: Tensor) -> Tensor: ...

    @abstractmethod
    def boundary_residual(self, u: Callable[[Tensor], Tensor], points: Tensor) -> Tensor: ...

    @abstractmethod
    def reference(self, resolution: int | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """Reference solution on a tensor grid: ``(grid, u)`` with ``u`` shaped by the grid."""


def float64_device(device: torch.device) -> torch.device:
    """Where float64 reference data can be generated: ``device``, or the CPU for Apple's MPS,
    which has no float64."""
    return torch.device("cpu") if device.type == "mps" else device


#: seeds of the operator-data splits, disjoint so no test input was seen in training
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


class OperatorData(ABC):
    """View for operator learning: input fields and the reference solver's output fields.

    Fields are channel-first, ``[N, C, *S]`` for ``d = len(S)`` spatial dimensions, on a uniform
    grid. The splits are drawn with the disjoint seeds of :data:`SPLIT_SEEDS`; a problem may
    cache them. Problems offering this view set ``in_channels``, ``out_channels`` and ``n_dims``.
    """

    in_channels: int
    out_channels: int
    n_dims: int
    #: channels of one snapshot when ``a`` and ``u`` are consecutive snapshots of the same fields
    #: (``a`` the first ``C_in / step_channels`` records, ``u`` the following ones), so that a
    #: model may predict ``u`` autoregressively; ``None`` when they are not
    step_channels: int | None = None
    #: share of :meth:`Problem.solve`'s work that maps ``a`` to ``u`` (below 1 when the solver
    #: also produces the inputs, e.g. the first records of a trajectory); scales the reference
    #: time when a surrogate is compared with the solver
    output_work_fraction: float = 1.0

    @abstractmethod
    def operator_pairs(
        self, split: str, n_samples: int, resolution: int | None = None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``(a, u, grid)``: inputs ``[N, C_in, *S]``, outputs ``[N, C_out, *S]`` and the
        coordinates of the spatial axes ``S`` in axis order, at ``resolution`` points per axis
        (``None``: the problem's default). ``split`` is ``"train"``, ``"val"`` or ``"test"``."""

    def operator_fields(self, solution: Solution) -> tuple[Tensor, Tensor]:
        """``(a, u)`` channel-first, ``[N, C, *S]``, from the output of :meth:`Problem.solve`
        (by default its fields ``a`` and ``u``, given as ``[N, *S]`` or ``[N, C, *S]``)."""
        if not {"a", "u"} <= set(solution.fields):
            raise ValueError(f"{type(self).__name__}.solve gives no (a, u) fields")
        a, u = solution.fields["a"], solution.fields["u"]
        return tuple(f.unsqueeze(1) if f.ndim == 1 + self.n_dims else f for f in (a, u))


VIEWS: tuple[type, ...] = (PhysicsResidual, OperatorData)


def view_name(view: type) -> str:
    """'PhysicsResidual' -> 'physics residual'."""
    name = view.__name__
    return "".join(" " + c.lower() if c.isupper() else c for c in name).strip()
