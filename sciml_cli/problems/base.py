"""What a problem is, and the views it can offer to models.

A problem class inherits :class:`Problem` and every view it can offer (the view classes below).
Whether an *instance* offers a view may depend on its config: :meth:`Problem.views` returns the
views of this instance (by default every view class it inherits; ``Burgers`` offers the physics
residual with ``setup=raissi``, and operator data and a differentiable solver with
``setup=fno``). A model lists the views it requires (``Model.requires``, all of them needed);
the check runs on the built problem before any data is generated, and the problems that would
fit are found by trying the configs, never from a table. Adding a view to a problem makes every
model that asks for it work there.

Views so far: :class:`PhysicsResidual` (PINN), :class:`EnergyFunctional` (Deep Ritz),
:class:`OperatorData` (FNO), :class:`Trajectories` (neural ODE, UDE) and :class:`InverseProblem`
(learned gradient descent, learned primal-dual, TV with learned weights) and
:class:`DifferentiableSolver` (the hybrid solver-in-the-loop model); the first two share
:class:`FieldDomain` (coordinates, domain sampling on boxes and other shapes, the reference and
exact solution, exact boundary conditions, and functions of the domain a network may take as
extra inputs, such as the distance to a slit).

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

#: radius of the polar scoring points around a singular point (:meth:`FieldDomain.scoring_quadrature`)
SINGULAR_RADIUS = 0.5


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
    With one coordinate a trailing axis may hold the components of a state (``[T, S]`` for a
    trajectory of ``S`` states). ``metrics`` holds plain floats; ``details`` plain values beyond
    them that ``sciml eval`` records and prints (e.g. a recovered equation); ``per_sample`` the
    relative L2 error of each test sample when there are several (of a rollout: the mean over its
    snapshots of each snapshot's); ``per_step``, for outputs that are consecutive snapshots, the mean
    over samples of each snapshot's relative L2 error (how the error grows along a rollout).
    """

    metrics: dict[str, float]
    prediction: Tensor
    reference: Tensor
    grid: dict[str, Tensor]
    per_sample: Tensor | None = None
    per_step: Tensor | None = None
    details: dict[str, Any] = field(default_factory=dict)


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

    def check_solve(self, resolution: int | None = None, n_samples: int = 1) -> None:
        """Raise the ``ValueError`` (``"<key>: ..."``) :meth:`solve` would raise for these
        arguments, without solving: ``sciml solve`` asks before it makes its run directory.
        Nothing to check by default."""

    def metrics(self, prediction: Tensor, reference: Tensor) -> dict[str, float]:
        """Scores of a prediction against the reference as plain floats, :attr:`val_metric`
        among them (relative L2, max error and RMSE by default; ``ct`` adds PSNR and SSIM)."""
        return error_metrics(prediction, reference)

    def baselines(self) -> dict[str, float]:
        """Errors of cheap classical predictions on the data last used (e.g. the linear heat
        equation for Burgers): a learned model is only interesting below them."""
        return {}

    def pinned_arguments(self) -> dict[str, Any]:
        """Constructor arguments a training run records in its stored config in place of the
        ones given, so that ``eval`` and ``resume`` use the same data (a data file's absolute
        path and checksum); none by default."""
        return {}

    def provenance(self) -> dict[str, Any]:
        """What ``run.json`` records about the data this problem reads from outside (a user's
        file: path, size, checksum); nothing for generated data."""
        return {}


class FieldDomain(ABC):
    """What the views on a solution field ``u(x)`` share (not a view itself): the coordinates,
    the domain and its sampling, the reference solution, and exact boundary conditions by an
    output transform.

    Points are ``[N, d]`` tensors whose columns follow :attr:`coords` (a time coordinate, if
    any, last and named ``t``). The default sampling serves a box (:attr:`bounds`); a problem on
    another shape (an L-shape, a slit) overrides :meth:`sample_interior` and
    :meth:`sample_boundary` and reports where its domain lies in the reference grid by NaN.
    """

    coords: tuple[str, ...]
    n_outputs: int = 1
    #: a point where the solution is singular (a re-entrant corner, a crack tip), if any: models
    #: show the error around it
    singular_point: tuple[float, ...] | None = None

    @property
    @abstractmethod
    def bounds(self) -> list[tuple[float, float]]:
        """``(low, high)`` per coordinate: the domain, or the box that holds it."""

    def contains(self, points: Tensor) -> Tensor:
        """``[N]`` bool: whether ``points`` lie in the closed domain (by default the box)."""
        from ..numerics.geometry import Box

        return Box(self.bounds).contains(points)

    def sample_interior(self, n: int, seed: int) -> Tensor:
        """``n`` points of the domain, ``[n, d]``: scrambled Sobol points of the box, seeded by
        ``seed``."""
        from ..numerics.sampling import sobol

        return sobol(n, self.bounds, seed, **self.factory)

    @abstractmethod
    def reference(self, resolution: int | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """Reference solution on a tensor grid: ``(grid, u)``, the grid's axes in the order of
        :attr:`coords`, ``u`` shaped by the grid (a trailing axis of outputs if several), NaN at
        grid points outside the domain. In more dimensions than a grid can hold, a 2D slice
        (for figures) and :meth:`scoring_points` for the metrics."""

    def scoring_points(self) -> tuple[Tensor, Tensor] | None:
        """``(points [N, d], u [N, n_outputs])``: where a tensor grid cannot cover the domain
        (high dimensions), the points and exact values the metrics are computed on instead of
        :meth:`reference`'s grid; ``None`` (the default) to score on the grid."""
        return None

    def exact_solution(self, points: Tensor) -> Tensor:
        """The exact solution ``[N, n_outputs]`` at ``points``, differentiable (for gradient
        errors such as the H1 norm); problems without a closed form raise ``NotImplementedError``."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form solution")

    def scoring_quadrature(self, n: int) -> tuple[Tensor, Tensor]:
        """``(points [m, d], weights [m])`` with ``sum_i w_i f(x_i)`` estimating the integral of
        ``f`` over the domain, for errors that score a model (the H1 error): ``n``
        quasi-Monte-Carlo points of the domain from the reserved scoring seed and, around a
        :attr:`singular_point` in 2D where the domain's ``measure`` is known, ``n`` more in polar
        coordinates (radius uniform up to ``SINGULAR_RADIUS``), the two sets weighted by the
        balance heuristic of multiple importance sampling (Veach & Guibas 1995). Near a crack tip
        ``|grad u|^2 ~ 1/r``, whose estimate from uniform points has infinite variance (an H1
        error that moved by half with the points' seed); the polar points sample it with density
        ``~ 1/r``, so the weighted integrand stays bounded."""
        from ..numerics.sampling import SCORING_SEED, sobol

        uniform = self.sample_interior(n, SCORING_SEED)
        measure = getattr(self, "measure", None)
        if self.singular_point is None or len(self.singular_point) != 2 or measure is None:
            return uniform, uniform.new_full((n,), (measure or 1.0) / n)
        center = uniform.new_tensor(self.singular_point)
        u = sobol(n, [(0.0, 1.0), (0.0, 1.0)], SCORING_SEED - 1, **self.factory)
        r, theta = SINGULAR_RADIUS * u[:, 0], 2 * math.pi * u[:, 1]
        polar = center + r[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
        points = torch.cat([uniform, polar[self.contains(polar) & (r > 0)]])
        distance = torch.linalg.vector_norm(points - center, dim=1)
        density = torch.where(distance < SINGULAR_RADIUS, 1.0 / (2 * math.pi * SINGULAR_RADIUS * distance), 0.0)
        return points, 1.0 / (n / measure + n * density)

    @property
    def feature_bounds(self) -> list[tuple[float, float]]:
        """``(low, high)`` of each column of :meth:`input_features`; empty (the default): none."""
        return []

    def input_features(self, points: Tensor) -> Tensor:
        """Functions of the points that a network may take as inputs besides the coordinates,
        ``[N, k]`` with ``k = len(feature_bounds)``: what the solution is smooth in where it is
        not smooth in the coordinates alone. Across a slit the solution jumps, so the ``N`` of
        ``u = g + phi N`` needs a kink there, which the distance to the slit gives it.
        Differentiable twice away from a set of measure zero. Default: no columns."""
        return points[:, :0]

    @property
    def offers_constraint(self) -> bool:
        """Whether :meth:`constraint` is available on this instance."""
        return type(self).constraint is not FieldDomain.constraint

    def constraint(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """``(g, phi)`` ``[N, n_outputs]`` such that ``u = g + phi * N(x)`` meets the initial and
        boundary conditions exactly for any ``N`` (Lagaris et al. 1998; Lu et al. 2021, "hard
        constraints"; on general domains Sukumar & Srivastava 2022): ``g`` satisfies them,
        ``phi`` vanishes where they are imposed. Smooth functions of the points away from
        corners; problems without one raise ``NotImplementedError``."""
        raise NotImplementedError(f"{type(self).__name__} offers no hard-constraint transform")


class PhysicsResidual(FieldDomain):
    """View for physics-informed models: domain sampling, the PDE residual in terms of the
    derivatives it needs, initial and boundary residuals, and the reference solution.

    The residual never differentiates a network itself: it declares the derivatives it needs
    (:attr:`derivatives`, e.g. ``("u", "u_t", "u_x", "u_xx")``, see
    :func:`sciml_cli.nn.parse_derivative`) and receives them as ``[N, n_outputs]`` tensors, so a
    model may supply them by autograd or by a faster forward propagation. A problem without a
    time coordinate ``t`` is steady: it has no initial condition.

    Coefficients of the equation that an inverse problem may learn are named in
    :meth:`coefficients` (their true values); :meth:`residual` takes them as an argument.
    Optional: :meth:`constraint` for exact initial and boundary conditions by an output
    transform, :meth:`observations` for measured data (inverse problems).
    """

    #: derivatives of the solution the residual needs, by name
    derivatives: tuple[str, ...]

    # Space-time sampling: the defaults serve a box in space and time (time last); a problem on
    # another shape overrides them.
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

    def initial_residual(self, u: Tensor, points: Tensor) -> Tensor:
        """Residual of the initial condition for solution values ``u`` ``[N, n_outputs]``
        (time-dependent problems; a steady one has none)."""
        raise NotImplementedError(f"{type(self).__name__} is steady: it has no initial condition")

    @abstractmethod
    def boundary_residual(self, u: Tensor, points: Tensor) -> Tensor:
        """Residual of the boundary condition for solution values ``u`` ``[N, n_outputs]``."""

    def residual_of(self, u: Callable[[Tensor], Tensor], points: Tensor,
                    coefficients: Mapping[str, Tensor | float] | None = None) -> Tensor:
        """The residual of any function ``u`` ``[N, d] -> [N, n_outputs]`` (an exact solution,
        a baseline), its derivatives taken by autograd; ``coefficients`` default to the true ones."""
        from ..numerics.autodiff import autograd_derivatives, parse_derivative

        keys = {name: parse_derivative(name, self.coords) for name in self.derivatives}
        d = autograd_derivatives(u, points, keys.values())
        return self.residual({name: d[k] for name, k in keys.items()}, points,
                             self.coefficients() if coefficients is None else coefficients)

    def observations(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """``(points [n, d], values [n, n_outputs])``: measurements of the solution, with the
        problem's observation noise, for data terms and inverse problems."""
        raise NotImplementedError(f"{type(self).__name__} offers no observations")


class EnergyFunctional(FieldDomain):
    """View for variational methods (Deep Ritz): the solution minimises an energy
    ``E(u) = int_Omega e(u, grad u, x) dx`` over functions with the boundary data, e.g. for
    ``-Laplace u = f``, ``e = |grad u|^2 / 2 - f u`` (the Dirichlet principle).

    A model estimates ``E`` by Monte-Carlo or quasi-Monte-Carlo quadrature: :attr:`measure`
    times the mean of :meth:`energy_density` over :meth:`sample_interior` points (uniform in the
    domain); boundary data are imposed by a penalty on :meth:`sample_boundary` points (uniform
    by arc length or surface area; the boundary's size is :attr:`boundary_measure`) or exactly
    by :meth:`constraint`.
    """

    @property
    @abstractmethod
    def measure(self) -> float:
        """Volume (area) of the domain: the quadrature weight of a uniform sample's mean."""

    @property
    @abstractmethod
    def boundary_measure(self) -> float:
        """Size (length, area) of the boundary on which the data are imposed."""

    @abstractmethod
    def sample_boundary(self, n: int, seed: int) -> Tensor:
        """``n`` points of the boundary, uniform by arc length (surface area), ``[n, d]``."""

    @abstractmethod
    def energy_density(self, u: Tensor, grad: Tensor, points: Tensor) -> Tensor:
        """Energy density ``[N]`` from the solution values ``u`` ``[N, n_outputs]`` and their
        gradient ``grad`` ``[N, d]`` (one output) at ``points``."""

    @abstractmethod
    def boundary_value(self, points: Tensor) -> Tensor:
        """Dirichlet data ``g`` ``[N, n_outputs]`` at boundary ``points``."""


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
    cache them. Problems offering this view set ``in_channels``, ``out_channels``, ``n_dims`` and
    ``resolution``.
    """

    in_channels: int
    out_channels: int
    n_dims: int
    #: the default grid points per spatial axis (``resolution=None`` of :meth:`operator_pairs`)
    resolution: int
    #: channels of one snapshot when ``a`` and ``u`` are consecutive snapshots of the same fields
    #: (``a`` the first ``C_in / step_channels`` records, ``u`` the following ones), so that a
    #: model may predict ``u`` autoregressively; ``None`` when they are not
    step_channels: int | None = None
    #: whether the spatial domain is periodic (a model pads a non-periodic one, e.g. the FNO)
    periodic: bool = True
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

    def check_resolution(self, resolution: int) -> None:
        """Raise the ``ValueError`` (``"resolution: ..."``) :meth:`operator_pairs` would raise
        for ``resolution``, without making data (``sciml eval`` asks before any work). Any
        resolution by default."""

    def operator_fields(self, solution: Solution) -> tuple[Tensor, Tensor]:
        """``(a, u)`` channel-first, ``[N, C, *S]``, from the output of :meth:`Problem.solve`
        (by default its fields ``a`` and ``u``, given as ``[N, *S]`` or ``[N, C, *S]``)."""
        if not {"a", "u"} <= set(solution.fields):
            raise ValueError(f"{type(self).__name__}.solve gives no (a, u) fields")
        a, u = solution.fields["a"], solution.fields["u"]
        return tuple(f.unsqueeze(1) if f.ndim == 1 + self.n_dims else f for f in (a, u))


@dataclass(frozen=True)
class Term:
    """One term ``sign * coefficient * prod_i u_i ** powers[i]`` of the equation of state ``state``."""

    state: int
    powers: tuple[int, ...]
    coefficient: str
    sign: float = 1.0


@dataclass
class TrajectoryData:
    """Observed time series and the truth behind them, ``[N, T, S]`` (trajectories, times, states).

    ``observed`` are the noisy measurements at times ``t`` (the fit window; ``observed[:, 0]``
    is the measured, not the true, initial state); ``truth`` the noise-free states there;
    ``t_extrapolate`` / ``truth_extrapolate`` the times after the window and the true states at
    them, for scoring a model outside the data it saw.
    """

    t: Tensor
    observed: Tensor
    truth: Tensor
    t_extrapolate: Tensor
    truth_extrapolate: Tensor


class Trajectories(ABC):
    """View for neural differential equations: observed trajectories of an autonomous system
    ``du/dt = f(u)`` of :attr:`state_names`, their truth, an extrapolation window, and which
    terms of ``f`` are known (universal differential equations, Rackauckas et al. 2020).

    The right-hand side is described as polynomial :meth:`terms` with named coefficients
    (:meth:`coefficients`, true values); :attr:`known_terms` names the coefficients whose terms a
    model is given. :meth:`known_rhs` evaluates those terms with coefficient values a model may
    learn; :meth:`missing_rhs` is the truth of the rest, which a network learns and symbolic
    regression recovers (scored against :meth:`missing_polynomial`). A problem whose dynamics
    are not polynomial overrides the three.
    """

    state_names: tuple[str, ...]
    #: coefficients of :meth:`terms` a model is given (the rest it learns)
    known_terms: tuple[str, ...] = ()

    @abstractmethod
    def trajectories(self) -> TrajectoryData:
        """The data, on the problem's device and dtype (cheap to call again: cached)."""

    @abstractmethod
    def terms(self) -> list[Term]:
        """Every term of the true right-hand side."""

    @abstractmethod
    def coefficients(self) -> dict[str, float]:
        """True value of each coefficient named in :meth:`terms`."""

    def known_rhs(self, u: Tensor, coefficients: Mapping[str, Tensor | float] | None = None) -> Tensor:
        """The known part of ``du/dt`` at states ``u`` ``[..., S]`` (zero where nothing is known),
        with ``coefficients`` by name (default: the true ones)."""
        values = {**self.coefficients(), **(coefficients or {})}
        return _polynomial(u, [t for t in self.terms() if t.coefficient in self.known_terms], values)

    def missing_rhs(self, u: Tensor) -> Tensor:
        """The true unknown part of ``du/dt`` at ``u`` ``[..., S]``: what a UDE's network learns."""
        return _polynomial(u, [t for t in self.terms() if t.coefficient not in self.known_terms],
                           self.coefficients())

    def missing_polynomial(self) -> dict[tuple[int, tuple[int, ...]], tuple[str, float]]:
        """The unknown part as ``{(state, powers): (coefficient name, signed value)}``."""
        values = self.coefficients()
        return {(t.state, t.powers): (t.coefficient, t.sign * values[t.coefficient])
                for t in self.terms() if t.coefficient not in self.known_terms}

    def state_bounds(self) -> list[tuple[float, float]]:
        """``(low, high)`` of each observed state over the fit window: for input scaling."""
        obs = self.trajectories().observed
        low, high = obs.amin(dim=(0, 1)), obs.amax(dim=(0, 1))
        return [(float(lo), float(hi)) for lo, hi in zip(low, high)]


@dataclass
class Reconstruction:
    """A classical reconstruction of an image set: the images, seconds per image, and the
    parameters it was run with (e.g. the validation-chosen lambda)."""

    images: Tensor
    seconds: float
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class ImageSet:
    """Fixed images of an inverse problem with their measurements, for validation or testing."""

    images: Tensor
    data: Tensor
    #: what the images are, e.g. "random ellipses (seed 10000)" or "Shepp-Logan"
    name: str


class InverseProblem(ABC):
    """View for learned reconstruction (learned gradient descent, learned primal-dual, TV with
    learned weights): recover an image ``a`` (``size x size`` pixels) from a measurement
    ``b = F(a)`` plus noise by iterating on the variational objective ``D(a, b) + lambda R(a)``.

    The problem supplies the forward operator and its adjoint, the gradients of the data-fidelity
    term ``D`` (the noise model's negative log-likelihood) and of a regulariser ``R``, a default
    ``lambda`` (:attr:`reg_weight`) and a safe step for it (:meth:`step_size`), an initial
    reconstruction, training pairs drawn on the fly as a pure function of a seed and the step (so
    a resumed run sees the same pairs), fixed validation and test images on a pixel grid
    (:meth:`image_grid`), and the classical reconstructions a learned one has to beat
    (:meth:`classical`).
    """

    #: image side in pixels
    size: int
    #: the objective's default regularisation weight ``lambda``
    reg_weight: float

    @abstractmethod
    def forward(self, image: Tensor) -> Tensor:
        """``F(a)`` without noise, ``[..., S, S]`` -> measurement shape."""

    @abstractmethod
    def adjoint(self, data: Tensor, size: int | None = None) -> Tensor:
        """The adjoint of the (linearised) forward operator, measurement -> image shape."""

    @abstractmethod
    def data_fidelity_gradient(self, image: Tensor, data: Tensor) -> Tensor:
        """``grad_a D(a, b)``, shaped like ``image``."""

    @abstractmethod
    def regulariser_gradient(self, image: Tensor) -> Tensor:
        """``grad R(a)``, shaped like ``image``."""

    @abstractmethod
    def step_size(self, size: int | None = None, reg_weight: float | None = None) -> float:
        """A gradient-descent step on ``D + lambda R`` (``lambda`` default :attr:`reg_weight`)
        under which the objective decreases: ``1 / L`` of its gradient's Lipschitz constant."""

    @abstractmethod
    def image_grid(self) -> Tensor:
        """Pixel-centre coordinates along one image axis, ``[size]``."""

    @abstractmethod
    def initial(self, data: Tensor) -> Tensor:
        """A cheap first reconstruction (e.g. filtered back-projection)."""

    @abstractmethod
    def linearised(self, data: Tensor) -> Tensor:
        """The measurement as a linear one (``-log(b / I0)`` for transmission data; the data
        itself for a linear model): what a network in measurement space sees."""

    @abstractmethod
    def training_pairs(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """``(images, data)``: ``n`` random phantoms and their noisy measurements, a pure
        function of ``seed``, on the problem's device and dtype."""

    @abstractmethod
    def image_sets(self, split: str) -> dict[str, ImageSet]:
        """The fixed images of ``split`` (``val``: held-out random phantoms; ``test``: those of
        the test split and the standard phantom), by key; cached."""

    @abstractmethod
    def classical(self, image_set: ImageSet) -> dict[str, Reconstruction]:
        """Classical reconstructions of ``image_set`` by method name, their parameters chosen
        on the validation split (never on a test image)."""


class DifferentiableSolver(ABC):
    """View for hybrid models that put a network inside a solver (solver in the loop, Um et al.
    2020; Kochkov et al. 2021): a cheap coarse time step, the fine reference it should match, the
    restriction between their grids, and reference trajectories at the coarse time step.

    States are periodic grid functions ``[B, *S]`` with ``len(S) == n_dims`` equal axes. The
    problem supplies :meth:`coarse_step` (its coarse scheme on any grid, differentiable, with an
    optional extra forcing term inside the step), :meth:`reference_step` (its accurate scheme),
    random initial states on the fine grid, and a Courant number; the rest is derived here:

    * :meth:`check_solver`: the coarse settings and the Courant number, before any work;
    * :meth:`restrict`: spectral truncation from the fine to a coarse grid;
    * :meth:`reference_trajectories`: fine solutions from ``fine_resolution`` initial states
      (integrated for :attr:`spinup` first, so that a trajectory starts from a developed state,
      not from the fast transient of a random field), integrated with :meth:`reference_step` at
      ``dt`` and restricted to ``coarse_resolution`` every ``coarse_dt``; cached through the data
      layer;
    * :meth:`solver_trajectories`: the coarse scheme alone on a grid of ``resolution`` points
      (the coarse one, or 2x, 4x finer) from the same initial states, restricted to the coarse
      grid, with the time step shrunk in proportion to the grid (the same Courant number), so
      the error of a learned model reads as "as accurate as the plain solver on N x the grid".
    """

    n_dims: int
    #: points per axis of the coarse grid the hybrid runs on, and its time step
    coarse_resolution: int
    coarse_dt: float
    #: points per axis and time step of the reference
    fine_resolution: int
    dt: float
    #: largest Courant number (see :meth:`courant`) at which the coarse scheme is stable
    max_courant: float = 1.0
    #: time the fine solver integrates a random initial state before a trajectory starts
    spinup: float = 0.0

    @abstractmethod
    def coarse_step(self, state: Tensor, dt: float | Tensor, forcing: Tensor | None = None) -> Tensor:
        """One step of the coarse scheme on the state's own grid, ``[B, *S]`` -> ``[B, *S]``;
        ``forcing`` ``[B, *S]`` is added to the right-hand side inside the step."""

    @abstractmethod
    def reference_step(self, state: Tensor, dt: float) -> Tensor:
        """One step of the reference scheme, ``[B, *S]`` -> ``[B, *S]``."""

    @abstractmethod
    def initial_states(self, n: int, seed: int) -> Tensor:
        """``n`` random initial states on the fine grid, ``[n, *S_fine]``, a pure function of
        ``seed``, on the problem's device and dtype."""

    @abstractmethod
    def courant(self, state: Tensor, dt: float) -> Tensor:
        """The coarse scheme's stability number of each state ``[B, *S]`` at step ``dt``, ``[B]``
        (stable up to :attr:`max_courant`)."""

    def restrict(self, state: Tensor, n: int | None = None) -> Tensor:
        """Spectral truncation of ``state`` ``[B, *S]`` to ``n`` points per axis (default: the
        coarse grid)."""
        from ..numerics.spectral import restrict

        return restrict(state, int(n or self.coarse_resolution), self.n_dims)

    def to_coarse(self, state: Tensor) -> Tensor:
        """``state`` restricted to the coarse grid if it is on a finer one, else as it is (a
        coarse solution keeps its grid-scale content, the coarse Nyquist mode included)."""
        return state if state.shape[-1] == self.coarse_resolution else self.restrict(state)

    def trajectory_of(self, solution: Solution) -> tuple[Tensor, float]:
        """``(states [N, R, *S], record_dt)``: the records of :meth:`Problem.solve`'s output as a
        trajectory on its grid, for comparing a hybrid with the solver (``sciml solve ckpt=``)."""
        raise NotImplementedError(f"{type(self).__name__} gives no trajectory from solve()")

    def _solver_seed(self, split: str) -> int:
        return 100 + SPLIT_SEEDS[split]  # apart from the operator data's initial conditions

    def trajectory_starts(self, split: str, n_samples: int) -> Tensor:
        """The fine states trajectories of ``split`` start from: random initial states integrated
        by the reference for :attr:`spinup` (in float64, as the reference data), ``[n_samples,
        *S_fine]`` on the problem's device and dtype; kept in memory."""
        key = (split, int(n_samples), self.spinup, str(self.device), self.dtype)
        cached = getattr(self, "_starts", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        factory = self.factory
        self.to(float64_device(self.device), torch.float64)  # as the reference data are made
        try:
            state = self.initial_states(int(n_samples), self._solver_seed(split))
            if self.spinup > 0:
                steps = _whole_ratio(self.spinup, self.dt, "spinup", "dt")
                with torch.no_grad():
                    for _ in range(steps):
                        state = self.reference_step(state, self.dt)
        finally:
            self.to(factory["device"], factory["dtype"])
        state = state.to(**factory)
        self._starts = key, state
        return state

    def reference_trajectories(self, split: str, n_samples: int, n_steps: int) -> Tensor:
        """Fine solutions restricted to the coarse grid at times ``0, coarse_dt, ...,
        n_steps coarse_dt``: ``[n_samples, n_steps + 1, *S_coarse]``, on the problem's device
        and dtype; generated in float64 once per split, size and length and cached."""
        from pathlib import Path

        from ..data.cache import load_dataset

        substeps = _whole_ratio(self.coarse_dt, self.dt, "coarse_dt", "dt")
        seed = self._solver_seed(split)
        generating = self.cache_key(view="differentiable_solver", coarse_resolution=self.coarse_resolution,
                                    coarse_dt=self.coarse_dt, spinup=self.spinup, n_samples=int(n_samples), n_steps=int(n_steps),
                                    seed=seed, dtype="float64")
        name = type(self).__name__.lower()

        def generate() -> Solution:
            from .. import progress

            factory = self.factory
            self.to(float64_device(self.device), torch.float64)
            try:
                state = self.trajectory_starts(split, int(n_samples))
                records = [self.restrict(state)]
                bar = progress.track_steps(n_steps * substeps,
                                           f"{name}: reference trajectories on {self.fine_resolution} points per axis")
                with torch.no_grad(), bar:
                    for _ in range(n_steps):
                        for _ in range(substeps):
                            state = self.reference_step(state, self.dt)
                            bar.advance()
                        records.append(self.restrict(state))
                states = torch.stack(records, dim=1)
                if not torch.isfinite(states).all():
                    raise ValueError(f"dt: the reference became non-finite; reduce dt={self.dt:g}")
            finally:
                self.to(factory["device"], factory["dtype"])
            t = torch.arange(n_steps + 1, dtype=torch.float64) * self.coarse_dt
            return Solution(fields={"states": states}, grid={"t": t},
                            attrs={"substeps": substeps, "fine_resolution": self.fine_resolution})

        data = load_dataset(f"{name}-solver-{split}", generating, generate, Path(self.data_dir))
        return data.fields["states"].to(**self.factory)

    def solver_trajectories(self, split: str, n_samples: int, n_steps: int, resolution: int | None = None) -> Tensor:
        """The coarse scheme alone on ``resolution`` points per axis (default: the coarse grid)
        from the initial states of :meth:`reference_trajectories`, with ``coarse_dt`` scaled by
        ``coarse_resolution / resolution``, restricted to the coarse grid at every ``coarse_dt``:
        ``[n_samples, n_steps + 1, *S_coarse]``."""
        n = int(resolution or self.coarse_resolution)
        sub = _whole_ratio(float(n), float(self.coarse_resolution), "resolution", "coarse_resolution")
        state = self.restrict(self.trajectory_starts(split, int(n_samples)), n)
        records = [self.to_coarse(state)]
        with torch.no_grad():
            for _ in range(n_steps):
                for _ in range(sub):
                    state = self.coarse_step(state, self.coarse_dt / sub)
                records.append(self.to_coarse(state))
        return torch.stack(records, dim=1)

    def check_solver(self, n_samples: int = 4) -> float:
        """Check the coarse solver's settings before any work: ``coarse_resolution`` even and
        dividing ``fine_resolution``, ``coarse_dt`` and ``spinup`` whole numbers of ``dt``, and
        the largest Courant number of the coarse scheme on restricted initial states of the
        validation split at most :attr:`max_courant` (returned). Raises ``ValueError`` naming
        the argument. Checked when a model asks for the view, not when the problem is built, so
        that a problem used for other views need not care."""
        n = self.coarse_resolution
        if n < 2 or n % 2 or self.fine_resolution % n:
            raise ValueError(f"coarse_resolution: must be even and divide fine_resolution={self.fine_resolution}, "
                             f"got {n}")
        _whole_ratio(self.coarse_dt, self.dt, "coarse_dt", "dt")
        if self.spinup:
            _whole_ratio(self.spinup, self.dt, "spinup", "dt")
        state = self.restrict(self.initial_states(n_samples, self._solver_seed("val")))
        value = float(self.courant(state, self.coarse_dt).max())
        if not value <= self.max_courant:
            raise ValueError(f"coarse_dt: {self.coarse_dt:g} gives a Courant number of {value:.3g} on the "
                             f"{n}-point grid, above the coarse scheme's stability limit "
                             f"{self.max_courant:g}; lower coarse_dt")
        return value


def whole_ratio(numerator: float, denominator: float) -> int | None:
    """``numerator / denominator`` if it is (to rounding) a positive integer, else None."""
    r = round(numerator / denominator)
    return r if r >= 1 and abs(r * denominator - numerator) <= 1e-9 * numerator else None


def _whole_ratio(numerator: float, denominator: float, name: str, of: str) -> int:
    r = whole_ratio(numerator, denominator)
    if r is None:
        raise ValueError(f"{name}: must be a whole multiple of {of}={denominator:g}, got {numerator:g}")
    return r


def _polynomial(u: Tensor, terms: list[Term], values: Mapping[str, Tensor | float]) -> Tensor:
    """``sum_k sign_k c_k prod_i u_i ** p_ki`` into each term's state, ``[..., S]``, in a few
    vectorised operations (it runs at every step of an ODE solver; the constant tensors are
    cached per device and dtype)."""
    if not terms:
        return torch.zeros_like(u)
    key = (tuple(terms), u.device, u.dtype)
    cached = _TERM_CACHE.get(key)
    if cached is None:
        factory = {"dtype": u.dtype, "device": u.device}
        into = torch.zeros(len(terms), u.shape[-1], **factory)
        into[torch.arange(len(terms)), torch.tensor([t.state for t in terms])] = 1.0
        cached = (torch.tensor([t.powers for t in terms], **factory),
                  torch.tensor([t.sign for t in terms], **factory), into)
        _TERM_CACHE[key] = cached
    powers, signs, into = cached
    coefs = [values[t.coefficient] for t in terms]
    if any(isinstance(c, Tensor) for c in coefs):
        c = torch.stack([v.to(u.dtype) if isinstance(v, Tensor) else u.new_tensor(v) for v in coefs]) * signs
    else:
        c = signs * u.new_tensor(coefs)
    monomials = torch.prod(u.unsqueeze(-2) ** powers, dim=-1)  # [..., K]
    return (monomials * c) @ into


_TERM_CACHE: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}


VIEWS: tuple[type, ...] = (PhysicsResidual, EnergyFunctional, OperatorData, Trajectories, InverseProblem,
                           DifferentiableSolver)


def view_name(view: type) -> str:
    """'PhysicsResidual' -> 'physics residual'."""
    name = view.__name__
    return "".join(" " + c.lower() if c.isupper() else c for c in name).strip()
