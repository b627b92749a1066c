"""Physics-informed neural network (Raissi, Perdikaris & Karniadakis 2019).

A network ``u_theta(x, t)`` (the MLP of :mod:`sciml_cli.nn`) trained on the mean squared PDE
residual at collocation points plus the initial- and boundary-condition residuals, with the
techniques the literature found to matter, each a config option:

- exact initial and boundary conditions by an output transform ``u = g + phi N`` (Lagaris et
  al. 1998; Lu et al. 2021) where the problem offers one (``hard_constraints``);
- residual-based adaptive distribution of the collocation points, RAD (Wu et al. 2023)
  (``adaptive: rad``);
- Fourier-feature input embedding (Tancik et al. 2020; Wang, Wang & Perdikaris 2021)
  (``fourier_features``);
- causal weighting of the residual in time (Wang, Sankaran & Perdikaris 2022)
  (``causal_epsilon``);
- a residual weighted by the distance to a corner singularity, the weighted norms of
  Kondrat'ev (1967) (``singular_power``);
- loss balancing by learning-rate annealing (Wang, Teng & Perdikaris 2021) (``balance``);
- inverse problems: coefficients of the equation learned from observations (Raissi et al. 2019,
  section 4) (``learn``, ``n_observations``);
- the residual's input derivatives by autograd or by forward Taylor propagation
  (``derivatives``), exact to rounding either way;
- functions of the domain as extra inputs (``domain_features``), such as the distance to a slit;
- the loss as a sum of squared residuals (:meth:`PINN.least_squares`) for the Gauss-Newton type
  optimiser ``optim=lm`` (Levenberg-Marquardt).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacfwd, jacrev

from ..constraints import Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from ..nn import MLP, parse_derivative
from ..nn.mlp import Activation, Init
from ..numerics.autodiff import autograd_derivatives
from ..problems.base import Evaluation, PhysicsResidual
from .field import FieldModel

#: points per autograd pass through the constraint transform
CONSTRAINT_CHUNK = 2048


class PINN(FieldModel):
    """Physics-informed neural network.

    Parameters
    ----------
    problem
        Supplies the coordinates, their bounds, the number of outputs and the derivatives its
        residual needs.
    width, depth, activation, init
        The MLP: hidden units, hidden layers, nonlinearity, initialisation (see
        :class:`sciml_cli.nn.MLP`). Inputs are mapped to ``[-1, 1]`` by the problem's bounds.
    fourier_features, fourier_scale
        Random Fourier-feature embedding of the inputs (``0``: none), see :class:`~sciml_cli.nn.MLP`.
    derivatives
        How the residual's input derivatives are computed: ``autograd`` (nested reverse mode,
        the reference) or ``taylor`` (one forward pass carrying first and second derivatives;
        smooth activations, orders up to 2).
    domain_features
        Give the network the problem's :meth:`~sciml_cli.problems.base.FieldDomain.input_features`
        as inputs besides the coordinates (on the slit, the distance to it: the solution jumps
        across the slit, and a network of ``(x, y)`` alone is smooth there). Autograd
        derivatives only.
    hard_constraints
        Build the initial and boundary conditions into the output, ``u = g + phi N``, from the
        problem's :meth:`~sciml_cli.problems.base.PhysicsResidual.constraint`; the ``initial``
        and ``boundary`` terms then vanish identically and are left out.
    n_interior, n_initial, n_boundary
        Collocation points per term, drawn from a scrambled Sobol sequence.
    resample_every
        Draw fresh interior points every this many steps (``0``: one fixed set).
    resample_until
        No new draws from this step on (``null``: never stop). L-BFGS needs a fixed objective,
        so a preset that follows Adam by L-BFGS stops resampling when Adam ends.
    adaptive
        ``none``: every draw is a fresh Sobol set. ``rad``: residual-based adaptive distribution
        (Wu et al. 2023): each draw picks ``n_interior`` of ``rad_pool`` Sobol candidates with
        probability ``|r|^k / mean(|r|^k) + c``, so points gather where the residual is large
        (the shock of Burgers) while the ``c`` share keeps covering the domain.
    rad_k, rad_c, rad_pool
        RAD's exponent ``k``, offset ``c`` (Wu et al. recommend ``k = 1, c = 1``) and number of
        candidates.
    causal_epsilon
        Causal training (Wang, Sankaran & Perdikaris 2022): the residual loss of time slab ``i``
        is weighted by ``exp(-eps * sum_{j<i} L_j)`` (weights not differentiated), so later
        times count once earlier ones are resolved. ``null``: off. Needs a coordinate ``t``.
    causal_bins
        Time slabs for the causal weights.
    singular_power, singular_radius
        The squared residual at distance ``r`` from the problem's ``singular_point`` (a
        re-entrant corner, a crack tip) weighs ``min(1, r / singular_radius)^p``. Near such a
        point the solution behaves like ``r^a`` (``a = 2/3`` on the L-shape, ``1/2`` at a crack
        tip); its second derivatives like ``r^(a-2)``, so the plain residual loss of any smooth
        approximation is dominated, for ``a <= 1`` without bound, by the points nearest the
        tip. With ``p > 2 - 2a`` the weighted loss stays finite and the points away from the
        tip count again. ``0``: off.
    balance
        ``none`` or ``lr_annealing`` (Wang, Teng & Perdikaris 2021, algorithm 1): every
        ``balance_every`` steps each non-residual term's weight moves towards
        ``max|grad L_residual| / mean|grad L_term|`` by a moving average with factor
        ``balance_alpha``, so no term's gradient is swamped by another's.
    learn
        Coefficients of the equation to learn, with initial values, e.g.
        ``{lambda1: 0.0, lambda2: 0.0}`` for Burgers (names from the problem's
        ``coefficients()``). Each becomes a parameter; evaluation reports it and its relative
        error against the problem's true value.
    learn_log
        Names among ``learn`` learned as ``exp(theta)``: a positive coefficient whose scale is
        unknown (a viscosity) then moves by relative steps, as Raissi et al. (2019) learn
        ``lambda2``; its initial value must be positive.
    n_observations
        Observed points of the solution (the problem's ``observations``, with its noise) fitted
        by a ``data`` term; needed to identify ``learn``-ed coefficients.
    loss_weights
        Weights of the ``residual``, ``initial``, ``boundary`` and ``data`` terms.
    """

    requires = (PhysicsResidual,)
    loss_terms = ("residual", "initial", "boundary", "data")

    def __init__(
        self,
        problem: PhysicsResidual,
        width: PositiveInt = 32,
        depth: PositiveInt = 4,
        activation: Activation = "tanh",
        init: Init = "xavier_normal",
        fourier_features: NonNegativeInt = 0,
        fourier_scale: PositiveFloat = 1.0,
        derivatives: Literal["autograd", "taylor"] = "autograd",
        domain_features: bool = False,
        hard_constraints: bool = False,
        n_interior: PositiveInt = 2000,
        n_initial: PositiveInt = 200,
        n_boundary: PositiveInt = 200,
        resample_every: NonNegativeInt = 0,
        resample_until: NonNegativeInt | None = None,
        adaptive: Literal["none", "rad"] = "none",
        rad_k: NonNegativeFloat = 1.0,
        rad_c: NonNegativeFloat = 1.0,
        rad_pool: PositiveInt = 50000,
        causal_epsilon: NonNegativeFloat | None = None,
        causal_bins: PositiveInt = 32,
        singular_power: NonNegativeFloat = 0.0,
        singular_radius: PositiveFloat = 1.0,
        balance: Literal["none", "lr_annealing"] = "none",
        balance_every: PositiveInt = 100,
        balance_alpha: Fraction = 0.1,
        learn: dict[str, float] | None = None,
        learn_log: list[str] | None = None,
        n_observations: NonNegativeInt = 0,
        loss_weights: dict[str, NonNegativeFloat] | None = None,
    ) -> None:
        super().__init__(loss_weights or {"residual": 1.0, "initial": 1.0, "boundary": 1.0, "data": 1.0})
        coords = tuple(problem.coords)
        self.coords = coords
        self.wanted = {name: parse_derivative(name, coords) for name in problem.derivatives}
        if derivatives == "taylor" and any(len(k) > 2 for k in self.wanted.values()):
            raise ValueError("model.derivatives: taylor goes to second order; this residual needs more, use autograd")
        if derivatives == "taylor" and activation in ("prelu", "relu"):
            raise ValueError(f"model.derivatives: taylor needs a smooth activation, not {activation}")
        self.check_constraint(problem, hard_constraints)
        features = list(problem.feature_bounds) if domain_features else []
        if domain_features and not features:
            raise ValueError(f"model.domain_features: {type(problem).__name__} offers no input features here "
                             "(poisson with domain=slit does)")
        if features and derivatives == "taylor":
            raise ValueError("model.domain_features: the features' derivatives need derivatives=autograd")
        if causal_epsilon is not None and "t" not in coords:
            raise ValueError(f"model.causal_epsilon: causal weighting needs a time coordinate 't'; {type(problem).__name__} has {coords}")
        true = problem.coefficients()
        unknown = sorted(set(learn or {}) - set(true))
        if unknown:
            raise ValueError(f"model.learn: {type(problem).__name__} has no coefficient {unknown[0]!r} "
                             f"(coefficients: {', '.join(true) or 'none'})")
        bad_log = sorted(set(learn_log or []) - set(learn or {}))
        if bad_log:
            raise ValueError(f"model.learn_log: {bad_log[0]!r} is not among model.learn ({', '.join(learn or {}) or 'none'})")
        if any((learn or {})[k] <= 0 for k in learn_log or []):
            raise ValueError("model.learn_log: a coefficient learned in log space needs a positive initial value")
        if singular_power and getattr(problem, "singular_point", None) is None:
            raise ValueError(f"model.singular_power: {type(problem).__name__} has no singular point here "
                             "(poisson with domain=lshape or slit has one)")
        if learn and not n_observations:
            raise ValueError("model.learn: learning coefficients needs observations; set model.n_observations")
        if n_observations and type(problem).observations is PhysicsResidual.observations:
            raise ValueError(f"model.n_observations: {type(problem).__name__} offers no observations")
        if resample_every == 0 and adaptive == "rad":
            raise ValueError("model.adaptive: rad redraws points every model.resample_every steps; set it > 0")
        if adaptive == "rad" and rad_pool < n_interior:
            raise ValueError(f"model.rad_pool: RAD picks model.n_interior={n_interior} points among "
                             f"{rad_pool} candidates; raise rad_pool to at least {n_interior}")

        self.features = bool(features)
        self.net = MLP(len(coords) + len(features), problem.n_outputs, width, depth, activation, init,
                       input_bounds=[*problem.bounds, *features], fourier_features=fourier_features,
                       fourier_scale=fourier_scale)
        self.mode, self.hard = derivatives, bool(hard_constraints)
        self.n_interior, self.n_initial, self.n_boundary = n_interior, n_initial, n_boundary
        self.resample_every, self.resample_until = resample_every, resample_until
        self.adaptive, self.rad_k, self.rad_c, self.rad_pool = adaptive, rad_k, rad_c, rad_pool
        self.causal_epsilon, self.causal_bins = causal_epsilon, causal_bins
        self.singular_power, self.singular_radius = float(singular_power), float(singular_radius)
        if self.singular_power:
            self.register_buffer("singular_point", torch.tensor(problem.singular_point))
        self.balance, self.balance_every, self.balance_alpha = balance, balance_every, balance_alpha
        self.n_observations = n_observations
        self.true_coefficients = true
        self.log_learned = frozenset(learn_log or [])
        self.learned = nn.ParameterDict({
            k: nn.Parameter(torch.tensor(math.log(v) if k in self.log_learned else float(v)))
            for k, v in (learn or {}).items()})

        self.steady = "t" not in coords  # no initial condition
        conditions = [] if self.hard else (["boundary"] if self.steady else ["initial", "boundary"])
        self.terms = ["residual"] + conditions + (["data"] if n_observations else [])
        # state a resumed run needs: the adaptive points of the current draw, the balanced weights
        self.register_buffer("interior", torch.zeros(n_interior, len(coords)))
        self.register_buffer("interior_draw", torch.tensor(-1))
        self.register_buffer("balance_weights", torch.ones(len(self.terms)))
        self._cache: dict[str, tuple[Any, Any]] = {}
        self._balance_now = False
        self._problem = problem  # the constraint transform is part of the forward pass
        self._draw_held = -1  # interior_draw as a Python int, read once a draw rather than per step

    # -- loss weights: the configured ones times the balanced factors ----------------------------
    @property
    def loss_weights(self) -> dict[str, float]:
        factors = dict(zip(self.terms, self.balance_weights.tolist())) if self.balance != "none" else {}
        return {k: w * factors.get(k, 1.0) for k, w in self._base_weights.items()}

    @loss_weights.setter
    def loss_weights(self, weights: dict[str, float]) -> None:
        self._base_weights = dict(weights)

    # -- the solution and its derivatives --------------------------------------------------------
    def inputs(self, points: Tensor) -> Tensor:
        if not self.features:
            return points
        return torch.cat([points, self._problem.input_features(points)], dim=1)

    def fields(self, problem: PhysicsResidual, points: Tensor, constraint: dict | None = None) -> dict[str, Tensor]:
        """The derivatives the problem's residual needs at ``points``, by name, ``[N, m]`` each.
        ``constraint``: the constraint transform's derivatives at ``points``, if known."""
        keys = list(self.wanted.values())
        if self.mode == "autograd":
            d = autograd_derivatives(self, points, keys)
        else:
            d = self.net.derivatives(points, self._closure(keys), "taylor")
            if self.hard:
                d = self._transform(d, constraint or self._constraint_derivatives(points, keys), keys)
        return {name: d[key] for name, key in self.wanted.items()}

    @staticmethod
    def _closure(keys: list[tuple[int, ...]]) -> set[tuple[int, ...]]:
        """Every sub-derivative the product rule needs: ``()``, ``(i,)``, ``(i, j)``."""
        out = {()}
        for k in keys:
            out.add(k)
            out.update((i,) for i in k)
        return out

    def _constraint_derivatives(self, points: Tensor, keys: list[tuple[int, ...]]):
        """Derivatives of ``g`` and ``phi``: functions of the points only, so computed once per
        set of points and reused at every step."""
        cached = self._cache.get("constraint")
        if cached is not None and cached[0] is points:
            return cached[1]
        with torch.enable_grad():
            wanted = self._closure(keys)
            m = self._problem.n_outputs
            # in chunks: the second derivatives of a polygon's lift hold ~150 kB of graph per point
            parts = []
            for chunk in points.split(CONSTRAINT_CHUNK):
                part = autograd_derivatives(lambda p: torch.cat(self._problem.constraint(p), dim=1), chunk, wanted)
                parts.append({k: v.detach() for k, v in part.items()})  # the chunk's graph goes now
            both = {k: torch.cat([part[k] for part in parts]) for k in parts[0]}
        value = {k: (v[:, :m].detach(), v[:, m:].detach()) for k, v in both.items()}
        self._cache["constraint"] = (points, value)
        return value

    @staticmethod
    def _transform(n: dict, gp: dict, keys: list[tuple[int, ...]]) -> dict[tuple[int, ...], Tensor]:
        """Derivatives of ``g + phi N`` by the product rule (orders up to 2)."""
        out = {}
        for k in keys:
            g, phi = gp[k]
            if len(k) == 0:
                out[k] = g + phi * n[()]
            elif len(k) == 1:
                out[k] = g + gp[k][1] * n[()] + gp[()][1] * n[k]
            else:
                i, j = (k[0],), (k[1],)
                out[k] = (g + phi * n[()] + gp[i][1] * n[j] + gp[j][1] * n[i] + gp[()][1] * n[k])
        return out

    def coefficients(self) -> dict[str, Tensor | float]:
        return {**self.true_coefficients, **self.learned_values()}

    def learned_values(self) -> dict[str, Tensor]:
        """The learned coefficients (``exp(theta)`` for those in ``learn_log``)."""
        return {k: torch.exp(v) if k in self.log_learned else v for k, v in self.learned.items()}

    # -- data ------------------------------------------------------------------------------------
    def _draw(self, step: int) -> int:
        if not self.resample_every:
            return 0
        if self.resample_until is not None:
            step = min(step, max(self.resample_until - 1, 0))
        return step // self.resample_every

    def batch(self, problem: PhysicsResidual, step: int, seed: int) -> dict[str, Tensor]:
        self._balance_now = self.balance != "none" and step % self.balance_every == 0
        draw = self._draw(step)
        s = 3 * (seed * 1_000_003 + draw)  # distinct Sobol scrambles per term and draw
        if self._draw_held != draw:
            self._draw_held = int(self.interior_draw)  # a resumed run's buffer
        if self._draw_held != draw:
            if self.adaptive == "rad" and draw > 0:
                points = self._rad(problem, seed, draw)
            else:
                points = problem.sample_interior(self.n_interior, s)
            self.interior.copy_(points)
            self.interior_draw.fill_(draw)
            self._draw_held = draw
        key = (seed, draw, problem.device, problem.dtype)
        cached = self._cache.get("batch")
        if cached is None or cached[0] != key:
            batch = {"interior": self.interior.clone()}
            if not self.hard:
                if not self.steady:
                    batch["initial"] = problem.sample_initial(self.n_initial, s + 1)
                batch["boundary"] = problem.sample_boundary(self.n_boundary, s + 2)
            if self.n_observations:
                batch["obs_points"], batch["obs_values"] = self._observations(problem, seed)
            at = [batch[k] for k in ("initial", "boundary", "obs_points") if k in batch]
            if at:
                batch["values_at"] = torch.cat(at)
            self._cache["batch"] = (key, batch)
        return self._cache["batch"][1]

    def shard(self, batch: dict[str, Tensor], rank: int, world: int) -> dict[str, Tensor]:
        """Disjoint collocation, initial, boundary and observed points per rank; the points the
        network is evaluated at in one pass are gathered again from the shares."""
        out = super().shard({k: v for k, v in batch.items() if k != "values_at"}, rank, world)
        at = [out[k] for k in ("initial", "boundary", "obs_points") if k in out]
        if at:
            out["values_at"] = torch.cat(at)
        return out

    def _observations(self, problem: PhysicsResidual, seed: int) -> tuple[Tensor, Tensor]:
        key = (seed, problem.device, problem.dtype)
        cached = self._cache.get("observations")
        if cached is None or cached[0] != key:
            self._cache["observations"] = (key, problem.observations(self.n_observations, seed))
        return self._cache["observations"][1]

    def _rad(self, problem: PhysicsResidual, seed: int, draw: int) -> Tensor:
        """RAD (Wu et al. 2023): ``n_interior`` of ``rad_pool`` candidates, drawn without
        replacement with probability ``|r|^k / mean |r|^k + c``."""
        pool = problem.sample_interior(self.rad_pool, 3 * (seed * 1_000_003 + draw) + 10_000_019)
        r = self._chunked(lambda p: self._residual(problem, p).detach().abs().sum(1), pool)
        density = r.pow(self.rad_k)
        p = density / density.mean() + self.rad_c
        g = torch.Generator().manual_seed(seed * 1_000_003 + draw)
        index = torch.multinomial(p.double().cpu(), self.n_interior, replacement=False, generator=g)
        return pool[index.to(pool.device)]

    # -- objective -------------------------------------------------------------------------------
    def _residual(self, problem: PhysicsResidual, points: Tensor) -> Tensor:
        with torch.enable_grad():
            return problem.residual(self.fields(problem, points), points, self.coefficients())

    def _causal(self, r2: Tensor, points: Tensor, problem: PhysicsResidual) -> Tensor:
        """Mean of the slab losses ``L_i`` weighted by ``exp(-eps sum_{j<i} L_j)``."""
        cached = self._cache.get("slabs")
        if cached is None or cached[0] is not points:
            i_t = self.coords.index("t")
            lo, hi = problem.bounds[i_t]
            slab = ((points[:, i_t] - lo) / (hi - lo) * self.causal_bins).long().clamp(0, self.causal_bins - 1)
            counts = torch.bincount(slab, minlength=self.causal_bins).clamp(min=1).to(r2.dtype)
            self._cache["slabs"] = cached = (points, (slab, counts))
        slab, counts = cached[1]
        losses = torch.zeros(self.causal_bins, dtype=r2.dtype, device=r2.device).index_add(0, slab, r2) / counts
        before = torch.cat([losses.new_zeros(1), torch.cumsum(losses, 0)[:-1]])
        weights = torch.exp(-self.causal_epsilon * before).detach()
        self._causal_min = weights.min()
        return (weights * losses).mean()

    def loss(self, problem: PhysicsResidual, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        # the transform's derivatives need autograd of their own: outside the compiled objective
        constraint = (self._constraint_derivatives(batch["interior"], list(self.wanted.values()))
                      if self.hard and self.mode == "taylor" else None)
        terms = self._objective(problem, batch, constraint)
        if self._balance_now and len(terms) > 1:
            self._rebalance(terms)
        self._balance_now = False  # once per step, not per L-BFGS closure call
        return terms

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """``trainer.compile=true``. With Taylor derivatives the whole objective has a single
        backward, so TorchInductor compiles it and fuses the elementwise chains of every layer
        (the step then costs a fraction of the eager one; the first steps pay the compilation).
        Autograd's double backward cannot be compiled: there only the forward pass is."""
        if self.mode == "taylor":
            self._objective = torch.compile(self._objective, *args, **kwargs)
        else:
            super().compile(*args, **kwargs)

    def _objective(self, problem: PhysicsResidual, batch: dict[str, Tensor], constraint: dict | None
                   ) -> dict[str, Tensor]:
        interior = batch["interior"]
        r2 = problem.residual(self.fields(problem, interior, constraint), interior, self.coefficients()).pow(2).sum(1)
        if self.singular_power:
            distance = torch.linalg.vector_norm(interior - self.singular_point, dim=1)
            r2 = r2 * (distance / self.singular_radius).clamp(max=1.0).pow(self.singular_power)
        terms = {"residual": self._causal(r2, interior, problem) if self.causal_epsilon is not None else r2.mean()}
        # one forward pass for every point set that needs values only
        sets = [(name, batch[name]) for name in ("initial", "boundary") if name in batch]
        sets += [("data", batch["obs_points"])] if self.n_observations else []
        if sets:
            values = self(batch["values_at"]).split([len(p) for _, p in sets])
            checks = {"initial": problem.initial_residual, "boundary": problem.boundary_residual,
                      "data": lambda u, p: u - batch["obs_values"]}
            for (name, points), u in zip(sets, values):
                terms[name] = checks[name](u, points).pow(2).mean()
        return terms

    # -- the loss as a sum of squares ------------------------------------------------------------
    @property
    def least_squares_unmet(self) -> str | None:
        """Why this PINN's loss is not a fixed sum of squares, or ``None`` when it is."""
        if self.causal_epsilon is not None:
            return "causal weighting (model.causal_epsilon) weights the residual by the loss itself"
        if self.balance != "none":
            return "loss balancing (model.balance) weighs the terms by gradient steps that are not taken"
        if any(len(k) > 2 for k in self.wanted.values()):
            return "its residual needs derivatives above the second order"
        return None

    def least_squares(self, problem: PhysicsResidual, batch: dict[str, Tensor]
                      ) -> list[tuple[str, Callable[..., Tensor], tuple[Any, ...]]]:
        """Each term of :meth:`loss` as a sum of squares (see :meth:`Model.least_squares`),
        written pointwise for ``torch.func``: a Gauss-Newton optimiser gets the Jacobian of every
        point's residuals by ``vmap(jacrev(f))`` at the cost of a few backward passes of the
        batch. The network's input derivatives come from ``torch.func`` here, whichever
        ``derivatives`` the loss of the other optimisers uses."""
        names = [name for name, p in self.named_parameters() if p.requires_grad]
        keys = list(self.wanted.values())
        order, dim = max(len(k) for k in keys), len(self.coords)

        def split(params: tuple[Tensor, ...]) -> tuple[dict[str, Tensor], dict[str, Tensor | float]]:
            named = dict(zip(names, params, strict=True))
            net = {k[len("net."):]: v for k, v in named.items() if k.startswith("net.")}
            learned = {k[len("learned."):]: v for k, v in named.items() if k.startswith("learned.")}
            learned = {k: torch.exp(v) if k in self.log_learned else v for k, v in learned.items()}
            return net, {**self.true_coefficients, **learned}

        def network(net: dict[str, Tensor], x: Tensor) -> Tensor:  # [d] -> [m]
            return functional_call(self.net, net, (self.inputs(x[None]),))[0]

        def residual(params, x, w, gp):
            net, coefficients = split(params)

            def n_of(y: Tensor) -> Tensor:
                return network(net, y)

            def with_value(y: Tensor) -> tuple[Tensor, Tensor]:
                value = n_of(y)
                return value, value

            def first(y: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
                jac, value = jacrev(with_value, has_aux=True)(y)
                return jac, (jac, value)

            # one pass of each order: the Hessian's forward-over-reverse sweep carries the Jacobian
            # and the value it went through, rather than a second and third trace of the network
            if order >= 2:
                hes, (jac, value) = jacfwd(first, has_aux=True)(x)
            elif order == 1:
                jac, value = jacrev(with_value, has_aux=True)(x)
            else:
                value = n_of(x)
            d = {(): value[None]}
            if order >= 1:
                d.update({(i,): jac[None, :, i] for i in range(dim)})
            if order >= 2:
                d.update({(i, j): hes[None, :, i, j] for i in range(dim) for j in range(i, dim)})
            if self.hard:
                d = self._transform(d, {k: (g[None], phi[None]) for k, (g, phi) in gp.items()}, keys)
            fields = {name: d[key] for name, key in self.wanted.items()}
            return (w.sqrt() * problem.residual(fields, x[None], coefficients)).reshape(-1)

        interior = batch["interior"]
        w = interior.new_full((len(interior),), 1.0 / len(interior))
        if self.singular_power:
            distance = torch.linalg.vector_norm(interior - self.singular_point, dim=1)
            w = w * (distance / self.singular_radius).clamp(max=1.0).pow(self.singular_power)
        gp = self._constraint_derivatives(interior, keys) if self.hard else {}
        blocks: list[tuple[str, Callable[..., Tensor], tuple[Any, ...]]] = [("residual", residual, (interior, w, gp))]

        checks = {"initial": problem.initial_residual, "boundary": problem.boundary_residual}
        for name, check in checks.items():
            if name in batch:
                def condition(params, x, w, check=check):
                    r = check(network(split(params)[0], x)[None], x[None]).reshape(-1)
                    return (w / r.numel()).sqrt() * r  # loss() takes the mean over every entry

                points = batch[name]
                blocks.append((name, condition, (points, points.new_full((len(points),), 1.0 / len(points)))))
        if self.n_observations:
            points, values = batch["obs_points"], batch["obs_values"]
            g, phi = (self._problem.constraint(points) if self.hard
                      else (torch.zeros_like(values), torch.ones_like(values)))

            def data(params, x, w, value, g, phi):
                u = g + phi * network(split(params)[0], x)
                return w.sqrt() * (u - value)

            blocks.append(("data", data, (points, points.new_full((len(points),), 1.0 / values.numel()),
                                          values, g.detach(), phi.detach())))
        return blocks

    def _rebalance(self, terms: dict[str, Tensor]) -> None:
        params = [p for p in self.parameters() if p.requires_grad]

        def grads(term: Tensor) -> Tensor:
            g = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            return torch.cat([x.abs().flatten() for x in g if x is not None])

        top = grads(terms["residual"]).max()
        with torch.no_grad():
            for i, name in enumerate(self.terms):
                if name != "residual":
                    target = top / grads(terms[name]).mean().clamp(min=1e-30)
                    w = self.balance_weights[i]
                    w.copy_((1 - self.balance_alpha) * w + self.balance_alpha * target)

    def scalars(self) -> dict[str, float]:
        out = {f"coef/{k}": v.item() for k, v in self.learned_values().items()}
        if self.balance != "none":
            out.update({f"weight/{k}": v for k, v in self.loss_weights.items() if k in self.terms})
        if self.causal_epsilon is not None and hasattr(self, "_causal_min"):
            out["causal/min_weight"] = self._causal_min.item()
        return out

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self, problem: PhysicsResidual, resolution: int | None = None, split: str = "test") -> Evaluation:
        """:meth:`FieldModel.evaluate`'s metrics and, for learned coefficients, ``coef/<name>``
        and ``coef_rel_err/<name>``."""
        evaluation = super().evaluate(problem, resolution, split)
        for name, value in self.learned_values().items():
            true = self.true_coefficients[name]
            evaluation.metrics[f"coef/{name}"] = value.item()
            evaluation.metrics[f"coef_rel_err/{name}"] = abs(value.item() - true) / abs(true)
        return evaluation

    def figures(self, problem: PhysicsResidual, evaluation: Evaluation, title: str) -> dict[str, Any]:
        """The error maps of :class:`~sciml_cli.models.field.FieldModel`, the residual map, and
        for ``(x, t)`` problems slices at ``t = 0.25, 0.5, 0.75`` of the time span (Raissi et al.
        2019, fig. 1)."""
        from .. import plotting

        figures = super().figures(problem, evaluation, title)
        grid = evaluation.grid
        points = self._grid_points(grid)
        # second derivatives through the constraint's lift hold a large graph per point: small chunks
        residual = self._chunked(lambda p: self._residual(problem, p).detach().abs(), points, CONSTRAINT_CHUNK)[:, 0]
        residual = torch.where(torch.isnan(evaluation.reference.reshape(-1)), torch.nan, residual)
        shape = [len(g) for g in grid.values()]
        figures["residual"] = plotting.field_figure(grid, residual.reshape(shape), title=f"{title}: |PDE residual|")
        if list(grid) == ["x", "t"] and evaluation.prediction.ndim == 2:
            figures["slices"] = plotting.slices_figure(grid, evaluation.prediction, evaluation.reference,
                                                       fractions=(0.25, 0.5, 0.75), title=title)
        return figures
