"""What a problem is, and the views it can offer to models.

A problem class inherits :class:`Problem` and every view it can offer (the view classes below).
Whether an *instance* offers a view may depend on its config: :meth:`Problem.views` returns the
views of this instance (by default every view class it inherits; ``Burgers`` offers the physics
residual with ``setup=raissi`` and operator data with ``setup=fno``). A model lists the views it
requires (``Model.requires``, all of them needed); the check runs on the built problem before any
data is generated, and the problems that would fit are found by trying the configs, never from a
table. Adding a view to a problem makes every model that asks for it work there.

Views so far: :class:`PhysicsResidual` (PINN) and :class:`OperatorData` (FNO). Models to come
add theirs here together with the model: an energy functional (Deep Ritz), trajectories (neural
ODE / UDE), a differentiable solver (solver-in-the-loop) and an inverse problem (learned
reconstruction).

The validation metric of a problem (:attr:`Problem.val_metric`) comes with its direction
(:attr:`Problem.val_direction`): relative errors are minimised, PSNR is maximised; ``best.pt``,
sweep rankings and sweepers follow it.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

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
    ``configs/problem/<name>.yaml``; the arguments a problem was built with are recorded in
    :attr:`arguments`, so a dataset's cache key (:meth:`cache_key`) is derived from them and a new
    numeric argument can never serve stale data.
    """

    #: the metric used to pick the best checkpoint and to rank sweeps
    val_metric: str = "rel_l2"
    #: whether :attr:`val_metric` is better lower (errors) or higher (PSNR, SSIM)
    val_direction: Literal["minimize", "maximize"] = "minimize"
    #: constructor arguments that never change generated numbers (where files go, output
    #: subsampling of a file made at a finer grid); every other one is part of the cache key
    cache_exempt: frozenset[str] = frozenset({"data_dir"})

    def __new__(cls, *args: Any, **kwargs: Any) -> Problem:
        self = super().__new__(cls)
        bound = inspect.signature(cls.__init__).bind(self, *args, **kwargs)
        bound.apply_defaults()
        #: the constructor's arguments, defaults filled in
        self.arguments = {k: v for k, v in list(bound.arguments.items())[1:]}
        return self

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self.dtype = torch.get_default_dtype()

    def views(self) -> tuple[type, ...]:
        """The views this instance offers; by default every view class it inherits."""
        return tuple(v for v in VIEWS if isinstance(self, v))

    def better(self, value: float, than: float) -> bool:
        """Whether validation value ``value`` beats ``than`` in :attr:`val_direction`."""
        return value > than if self.val_direction == "maximize" else value < than

    @property
    def worst(self) -> float:
        """The starting "best" value: beaten by any finite metric."""
        return -math.inf if self.val_direction == "maximize" else math.inf

    def cache_key(self, **extra: Any) -> dict[str, Any]:
        """What identifies data this problem generates: its class, every constructor argument
        but :attr:`cache_exempt` (each as resolved, e.g. a ``nu: null`` default by its value),
        and ``extra`` (split, sample count, seed, dtype)."""
        key: dict[str, Any] = {"problem": f"{type(self).__module__}.{type(self).__qualname__}"}
        for name, value in self.arguments.items():
            if name not in self.cache_exempt:
                resolved = getattr(self, name, value)
                key[name] = list(resolved) if isinstance(resolved, tuple) else resolved
        key.update(extra)
        return key

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
    """View for physics-informed models: domain sampling, the PDE residual in terms of the
    derivatives it needs, initial and boundary residuals, and the reference solution.

    Points are ``[N, d]`` tensors whose columns follow :attr:`coords` (time last, named ``t``).
    The residual never differentiates a network itself: it declares the derivatives it needs
    (:attr:`derivatives`, e.g. ``("u", "u_t", "u_x", "u_xx")``, see
    :func:`sciml_cli.nn.parse_derivative`) and receives them as ``[N, n_outputs]`` tensors, so a
    model may supply them by autograd or by a faster forward propagation.

    Coefficients of the equation that an inverse problem may learn are named in
    :meth:`coefficients` (their true values); :meth:`residual` takes them as an argument.
    Optional: :meth:`constraint` for exact initial and boundary conditions by an output
    transform, :meth:`observations` for measured data (inverse problems).
    """

    coords: tuple[str, ...]
    n_outputs: int = 1
    #: derivatives of the solution the residual needs, by name
    derivatives: tuple[str, ...]

    @property
    @abstractmethod
    def bounds(self) -> list[tuple[float, float]]:
        """``(low, high)`` per coordinate."""

    # Sampling: the defaults serve a box in space and time (time last), scrambled Sobol points
    # seeded by ``seed``; a problem on another shape overrides them.
    def sample_interior(self, n: int, seed: int) -> Tensor:
        """``n`` points of the space-time domain, ``[n, d]``."""
        from ..numerics.sampling import sobol

        return sobol(n, self.bounds, seed, **self.factory)

    def sample_initial(self, n: int, seed: int) -> Tensor:
        """``n`` points of the initial slice ``t = t_0``, ``[n, d]``."""
        from ..numerics.sampling import sobol

        x = sobol(n, self.bounds[:-1], seed, **self.factory)
        return torch.cat([x, torch.full_like(x[:, :1], self.bounds[-1][0])], dim=1)

    def sample_boundary(self, n: int, seed: int) -> Tensor:
        """``n`` points of the spatial boundary over time, ``[n, d]``: for one space dimension,
        the two ends in turn at Sobol times. Problems in more dimensions override this."""
        from ..numerics.sampling import sobol

        if len(self.bounds) != 2:
            raise NotImplementedError(f"{type(self).__name__}: sample_boundary for {len(self.bounds) - 1} space dimensions")
        (lo, hi), t_bounds = self.bounds
        t = sobol(n, [t_bounds], seed, **self.factory)
        x = lo + (hi - lo) * (torch.arange(n, **self.factory) % 2).unsqueeze(1)  # alternate the two ends
        return torch.cat([x, t], dim=1)

    def coefficients(self) -> dict[str, float]:
        """The equation's coefficients by name, at their true values."""
        return {}

    @abstractmethod
    def residual(self, fields: Mapping[str, Tensor], points: Tensor,
                 coefficients: Mapping[str, Tensor | float]) -> Tensor:
        """PDE residual ``[N, n_outputs]`` at interior ``points`` from the named derivatives of
        the solution there (:attr:`derivatives`) and the equation's ``coefficients``."""

    @abstractmethod
    def initial_residual(self, u: Tensor, points: Tensor) -> Tensor:
        """Residual of the initial condition for solution values ``u`` ``[N, n_outputs]``."""

    @abstractmethod
    def boundary_residual(self, u: Tensor, points: Tensor) -> Tensor:
        """Residual of the boundary condition for solution values ``u`` ``[N, n_outputs]``."""

    @abstractmethod
    def reference(self, resolution: int | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """Reference solution on a tensor grid: ``(grid, u)``, the grid's axes in the order of
        :attr:`coords`, ``u`` shaped by the grid (a trailing axis of outputs if several)."""

    def residual_of(self, u: Callable[[Tensor], Tensor], points: Tensor,
                    coefficients: Mapping[str, Tensor | float] | None = None) -> Tensor:
        """The residual of any function ``u`` ``[N, d] -> [N, n_outputs]`` (an exact solution,
        a baseline), its derivatives taken by autograd; ``coefficients`` default to the true ones."""
        from ..numerics.autodiff import autograd_derivatives, parse_derivative

        keys = {name: parse_derivative(name, self.coords) for name in self.derivatives}
        d = autograd_derivatives(u, points, keys.values())
        return self.residual({name: d[k] for name, k in keys.items()}, points,
                             self.coefficients() if coefficients is None else coefficients)

    def constraint(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """``(g, phi)`` ``[N, n_outputs]`` such that ``u = g + phi * N(x)`` meets the initial and
        boundary conditions exactly for any ``N`` (Lagaris et al. 1998; Lu et al. 2021, "hard
        constraints"): ``g`` satisfies them, ``phi`` vanishes where they are imposed. Smooth
        functions of the points; problems without one raise ``NotImplementedError``."""
        raise NotImplementedError(f"{type(self).__name__} offers no hard-constraint transform")

    def observations(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """``(points [n, d], values [n, n_outputs])``: measurements of the solution, with the
        problem's observation noise, for data terms and inverse problems."""
        raise NotImplementedError(f"{type(self).__name__} offers no observations")


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
