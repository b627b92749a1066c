"""Universal differential equations (Rackauckas et al. 2020): the known terms of the dynamics plus
a network for the rest, trained through the solver; then symbolic regression reads the network
back as an equation, which replaces it and is refit.

For Lotka–Volterra with the linear terms known, as the course writes it,

    dx/dt = alpha x + NN_1(x, y),        dy/dt = NN_2(x, y) - theta y,

with ``theta`` learnable if asked (``learn``). At the start of the optimiser phase named
``sindy_phase`` symbolic regression picks, for each state, the monomials of the states up to
``sindy_degree`` that replace the network, in one of two ways (``sindy_select``):

- ``threshold``: the network's output, along the model's own trajectory (and on extra points of
  the data's range, ``sindy_points``), is fitted by sequentially thresholded least squares
  (STLSQ, Brunton, Proctor & Kutz 2016, from pysindy). Columns and targets are scaled to unit RMS
  first, so ``sindy_threshold`` is the smallest share of a state's missing term a monomial must
  carry, whatever the units.
- ``aicc``: every set of at most ``sindy_max_terms`` monomials is fitted to the *observations* in
  integral form, ``u_i(t_k) = c_i + int_0^t_k (known_i + sum_j xi_ij theta_j(u)) dt``, with the
  integrals taken along the model's flow from each observed state over one observation interval
  (Schaeffer & McCalla 2017 for the integral form: no differentiated data). The residual is then
  the measurement noise, and the set with the smallest corrected Akaike information criterion
  wins (Mangan et al. 2017, "Model selection for dynamical systems via sparse regression and
  information criteria"), the sparsest within 2 of the smallest (Burnham & Anderson 2002: such
  models are as well supported). With few samples on one arc of the orbit, the network's own
  term can be tens of percent off even where its trajectory fits the data (measured on the UDE
  paper's setup, see the README); this choice leans on the data instead.

The terms kept replace the network; that phase and the ones after refit their coefficients (with
``theta`` and the initial state) by the same trainer.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..constraints import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from ..nn.mlp import Activation, Init
from ..numerics.ode import Method
from ..problems.base import Evaluation, Trajectories
from .neural_ode import NeuralODE, _rel, _scores

log = logging.getLogger(__name__)
#: sets whose AICc is within this of the smallest are as well supported (Burnham & Anderson 2002);
#: the sparsest of them is kept
AICC_MARGIN = 2.0


class UDE(NeuralODE):
    """Known terms + network, then the recovered equation (see the module).

    Parameters
    ----------
    problem
        Supplies the trajectories and which terms are known (``problem.known_terms``).
    width, depth, activation, init, method, step_size, rtol, atol, adjoint, learn_u0, segments, segment_length, segments_until, max_steps
        As for :class:`sciml_cli.models.neural_ode.NeuralODE` (the defaults are Rackauckas et
        al.'s network: 3 hidden layers of 5 Gaussian radial basis units).
    learn
        Known coefficients to learn, with their initial values (e.g. ``{delta: 1.0}``, the
        course's ``theta``); the others stay at the problem's values.
    sindy_phase
        Name of the optimiser phase at whose start the symbolic regression runs and the
        recovered equation replaces the network; ``null``: keep the network.
    sindy_select
        How the terms are chosen (see the module): ``threshold`` (STLSQ on the network's output)
        or ``aicc`` (every small set fitted to the observations in integral form, ranked by AICc).
    sindy_degree, sindy_threshold, sindy_ridge
        Library (monomials of the states up to this degree, constant included), STLSQ threshold
        on the RMS-scaled coefficients, and its ridge weight (``threshold``).
    sindy_max_terms
        Largest number of monomials per state ``aicc`` considers (none is a candidate too).
    sindy_samples, sindy_points
        The regression's data: the model's flow from each observed state over one observation
        interval, at ``sindy_samples`` times, plus (``threshold``) ``sindy_points`` Sobol points
        of the observed states' bounding box.
    """

    def __init__(
        self,
        problem: Trajectories,
        width: PositiveInt = 5,
        depth: PositiveInt = 3,
        activation: Activation = "gaussian",
        init: Init = "xavier_normal",
        method: Method = "dopri5",
        step_size: PositiveFloat | None = None,
        rtol: PositiveFloat = 1e-6,
        atol: PositiveFloat = 1e-8,
        adjoint: bool = False,
        learn_u0: bool = True,
        segments: PositiveInt | None = None,
        segment_length: PositiveInt = 10,
        segments_until: NonNegativeInt | None = None,
        learn: dict[str, float] | None = None,
        sindy_phase: str | None = "refit",
        sindy_select: Literal["threshold", "aicc"] = "threshold",
        sindy_degree: PositiveInt = 3,
        sindy_threshold: NonNegativeFloat = 0.1,
        sindy_ridge: NonNegativeFloat = 1e-3,
        sindy_max_terms: PositiveInt = 3,
        sindy_samples: PositiveInt = 10,
        sindy_points: NonNegativeInt = 0,
        loss_weights: dict[str, NonNegativeFloat] | None = None,
        max_steps: PositiveInt = 2000,
    ) -> None:
        super().__init__(problem, width, depth, activation, init, method, step_size, rtol, atol, adjoint,
                         learn_u0, segments, segment_length, segments_until, loss_weights, max_steps)
        learn = dict(learn or {})
        for name in learn:
            if name not in problem.known_terms:
                raise ValueError(f"model.learn: {name!r} is not a known term of {type(problem).__name__} "
                                 f"(known: {', '.join(problem.known_terms) or 'none'})")
        self.learned = nn.ParameterDict({k: nn.Parameter(torch.tensor(float(v))) for k, v in learn.items()})
        self.sindy_phase, self.sindy_select, self.sindy_degree = sindy_phase, sindy_select, sindy_degree
        self.sindy_max_terms = sindy_max_terms
        self.sindy_threshold, self.sindy_ridge = sindy_threshold, sindy_ridge
        self.sindy_samples, self.sindy_points = sindy_samples, sindy_points
        n = len(self.state_names)
        powers = [p for d in range(sindy_degree + 1) for p in _powers(n, d)]
        self.register_buffer("powers", torch.tensor(powers, dtype=torch.long))  # [L, S]
        self.xi = nn.Parameter(torch.zeros(n, len(powers)))  # the recovered equation's coefficients
        self.register_buffer("mask", torch.zeros(n, len(powers), dtype=torch.bool))
        self.register_buffer("recovered", torch.tensor(False))

    @classmethod
    def unmet(cls, problem: Trajectories) -> str | None:
        if not getattr(problem, "known_terms", ()):
            return f"needs known terms of the dynamics; this {type(problem).__name__} has none (problem.known_terms)"
        return None

    # -- dynamics ---------------------------------------------------------------------------------
    def network_term(self, u: Tensor) -> Tensor:
        return self.out_scale * self.net(u)

    def library(self, u: Tensor) -> Tensor:
        """Monomials of the states, ``[..., L]``, in the order of :attr:`powers`."""
        return torch.prod(u.unsqueeze(-2) ** self.powers.to(u.dtype), dim=-1)

    def equation_term(self, u: Tensor) -> Tensor:
        return self.library(u) @ (self.xi * self.mask).T

    def rhs(self, u: Tensor) -> Tensor:
        return self._equation_rhs(u) if bool(self.recovered) else self._network_rhs(u)

    def _network_rhs(self, u: Tensor) -> Tensor:
        return self._problem.known_rhs(u, dict(self.learned.items())) + self.network_term(u)

    def _equation_rhs(self, u: Tensor) -> Tensor:
        return self._problem.known_rhs(u, dict(self.learned.items())) + self.equation_term(u)

    # -- stages -----------------------------------------------------------------------------------
    def start_phase(self, problem: Trajectories, name: str) -> None:
        if self.sindy_phase is None or name != self.sindy_phase:
            return
        if not bool(self.recovered):
            self.recover(problem)
        if bool(self.recovered):
            self.net.requires_grad_(False)  # from here the equation's coefficients are fitted

    def named_phases(self) -> dict[str, str]:
        return {} if self.sindy_phase is None else {"model.sindy_phase": self.sindy_phase}

    def recover(self, problem: Trajectories) -> bool:
        """Symbolic regression of the network's term; on success the equation replaces it."""
        import numpy as np

        data = problem.trajectories()
        with torch.no_grad():
            # the model's flow from each observed state over one observation interval: points
            # along the data whether the model was fitted on whole trajectories or on segments
            n_traj, n_times, n_states = data.observed.shape
            starts = data.observed[:, :-1].reshape(-1, n_states)
            dt = float(data.t[1] - data.t[0])
            t = torch.linspace(0.0, dt, self.sindy_samples + 1, device=starts.device, dtype=starts.dtype)
            flows = self._safe_trajectory(starts, t, self._network_rhs)  # [N (T - 1), K + 1, S]
            if not torch.isfinite(flows).all():
                log.warning("symbolic regression: the network's trajectory is not finite; keeping the networks")
                return False
            if self.sindy_select == "aicc":
                # integrals from t_0 to every t_k of the library and of the fixed known terms (a
                # learned one is a column of the regression, fitted with the new terms)
                lib = torch.trapezoid(self.library(flows), t, dim=1).reshape(n_traj, n_times - 1, -1)
                fixed = problem.known_rhs(flows, {name: 0.0 for name in self.learned})
                known = torch.trapezoid(fixed, t, dim=1).reshape(n_traj, n_times - 1, n_states)
                zero = lambda a: torch.cat([torch.zeros_like(a[:, :1]), a.cumsum(1)], 1)  # noqa: E731
                values = self.library(flows[:, :-1].reshape(-1, n_states)).double().cpu().numpy()
                xi, learned = self._select_aicc(problem, data.observed.double().cpu().numpy(),
                                                zero(lib).double().cpu().numpy(), zero(known).double().cpu().numpy(),
                                                values)
                for name, value in learned.items():
                    self.learned[name].fill_(value)
            else:
                xi = self._select_threshold(problem, flows[:, :-1].reshape(-1, n_states))
        if not np.any(xi):
            if self.sindy_select == "aicc":
                log.warning("symbolic regression: no monomial that carries model.sindy_threshold=%g of the term "
                            "improves the fit to the observations (AICc); keeping the networks", self.sindy_threshold)
            else:
                log.warning("symbolic regression: threshold %g removes every term; keeping the networks "
                            "(lower model.sindy_threshold)", self.sindy_threshold)
            return False
        with torch.no_grad():
            self.xi.copy_(torch.as_tensor(xi, dtype=self.xi.dtype))
            self.mask.copy_(torch.as_tensor(xi != 0))
            self.recovered.fill_(True)
            text = "; ".join(self.equation(problem))
            # the refit starts from the model's initial state: an equation that diverges there
            # cannot be refit
            if not torch.isfinite(self._safe_trajectory(self.u0, data.t)).all():
                self.recovered.fill_(False)
                log.warning("symbolic regression: the recovered equation (%s) diverges on the data window; "
                            "keeping the networks (try another model.sindy_threshold or sindy_degree)", text)
                return False
        log.info("symbolic regression: %s", text)
        return True

    def _select_threshold(self, problem: Trajectories, states: Tensor):
        """STLSQ on the network's output at ``states`` (plus Sobol points of the data's box)."""
        import numpy as np
        import pysindy as ps

        from ..numerics.sampling import sobol

        if self.sindy_points:
            box = sobol(self.sindy_points, problem.state_bounds(), 0, device=states.device, dtype=states.dtype)
            states = torch.cat([states, box])
        theta = self.library(states).double().cpu().numpy()
        target = self.network_term(states).double().cpu().numpy()
        col = np.sqrt((theta ** 2).mean(axis=0)) + 1e-300
        row = np.sqrt((target ** 2).mean(axis=0)) + 1e-300
        xi = np.zeros((target.shape[1], theta.shape[1]))
        for i in range(target.shape[1]):
            keep = ~self._known_columns(problem, i)
            opt = ps.STLSQ(threshold=self.sindy_threshold, alpha=self.sindy_ridge, normalize_columns=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "eliminated all coefficients": said below
                opt.fit(theta[:, keep] / col[keep], target[:, i] / row[i])
            xi[i, keep] = opt.coef_.reshape(-1) * row[i] / col[keep]
        return xi

    def _select_aicc(self, problem: Trajectories, observed, lib, known, values):
        """For each state, the set of at most ``sindy_max_terms`` monomials whose integral-form
        least-squares fit to the observations ``[N, T, S]`` has the smallest AICc (the sparsest
        within :data:`AICC_MARGIN` of it), among the sets in which every monomial carries at least
        ``sindy_threshold`` of the recovered term's RMS along the data (``values`` ``[M, L]``:
        the library there); an information criterion alone keeps terms the noise supports, however
        small. ``lib`` ``[N, T, L]`` and ``known`` ``[N, T, S]`` are the integrals from the first
        sample of the library and of the fixed known terms. Each trajectory has its own unknown
        starting value, and the learned known coefficients are fitted with every set. Returns the
        coefficients ``[S, L]`` and the learned known coefficients by name."""
        import numpy as np

        n_traj, n_times, n_states = observed.shape
        n = n_traj * n_times
        start = np.kron(np.eye(n_traj), np.ones((n_times, 1)))  # one intercept per trajectory
        index = {tuple(q): j for j, q in enumerate(self.powers.tolist())}
        xi, learned = np.zeros((n_states, lib.shape[-1])), {}
        for i in range(n_states):
            target = (observed[..., i] - known[..., i]).reshape(n)
            forced = [(t, index[t.powers]) for t in problem.terms() if t.state == i and t.coefficient in self.learned]
            base = np.concatenate([start] + [lib[..., j].reshape(n, 1) for _, j in forced], axis=1)
            free = np.flatnonzero(~self._known_columns(problem, i))
            scored = []
            for size in range(min(self.sindy_max_terms, free.size) + 1):
                for cols in itertools.combinations(free, size):
                    a = np.concatenate([base, lib[..., list(cols)].reshape(n, size)], axis=1)
                    coef, *_ = np.linalg.lstsq(a, target, rcond=None)
                    new_terms = values[:, list(cols)] * coef[base.shape[1]:]
                    share = np.sqrt((new_terms ** 2).mean(0)) / (np.sqrt((new_terms.sum(1) ** 2).mean()) + 1e-300)
                    if size and share.min() < self.sindy_threshold:
                        continue
                    k = a.shape[1]
                    rss = max(float(((a @ coef - target) ** 2).sum()), 1e-300)
                    aicc = n * math.log(rss / n) + 2 * k + (2 * k * (k + 1) / (n - k - 1) if n > k + 1 else math.inf)
                    scored.append((aicc, size, cols, coef[n_traj:]))
            # the set without new terms is always admissible, so there is a best
            best = min(s[0] for s in scored)
            _, _, cols, coef = min((s for s in scored if s[0] <= best + AICC_MARGIN), key=lambda s: (s[1], s[0]))
            for (term, _), value in zip(forced, coef):
                learned[term.coefficient] = float(value) / term.sign
            xi[i, list(cols)] = coef[len(forced):]
        return xi, learned

    def _known_columns(self, problem: Trajectories, state: int):
        """Library columns a known term of ``state`` already carries: its coefficient (fixed or
        learned) and a recovered one could not be told apart, so they are left out."""
        import numpy as np

        known = {t.powers for t in problem.terms() if t.state == state and t.coefficient in problem.known_terms}
        return np.array([tuple(p) in known for p in self.powers.tolist()])

    # -- reading the result -----------------------------------------------------------------------
    def equation(self, problem: Trajectories) -> list[str]:
        """The model's equations as text, known terms (their current values) and recovered ones,
        e.g. ``dx/dt = 1.300 x - 0.899 x y``."""
        values = {**problem.coefficients(), **{k: v.item() for k, v in self.learned.items()}}
        lines = []
        for i, name in enumerate(self.state_names):
            terms = [(t.powers, t.sign * values[t.coefficient]) for t in problem.terms()
                     if t.state == i and t.coefficient in problem.known_terms]
            if bool(self.recovered):
                terms += [(tuple(p.tolist()), c.item()) for p, c, m in zip(self.powers, self.xi[i], self.mask[i]) if m]
            else:
                terms.append((None, None))
            lines.append(f"d{name}/dt = " + _join(terms, self.state_names))
        return lines

    def coefficient_report(self, problem: Trajectories) -> list[dict[str, Any]]:
        """Each recovered or true missing term with its value, the truth and the relative error;
        and each learned known coefficient."""
        truth = problem.missing_polynomial()
        rows = []
        found = {}
        if bool(self.recovered):
            for i in range(len(self.state_names)):
                for p, c, m in zip(self.powers, self.xi[i], self.mask[i]):
                    if m:
                        found[(i, tuple(p.tolist()))] = c.item()
        for key in sorted(set(found) | set(truth)):
            state, powers = key
            name, true = truth.get(key, (None, 0.0))
            value = found.get(key, 0.0)
            rows.append({"state": self.state_names[state], "term": _monomial(powers, self.state_names) or "1",
                         "coefficient": name, "recovered": value, "true": true,
                         "rel_error": abs(value - true) / abs(true) if true else None})
        values = problem.coefficients()
        for name, p in self.learned.items():
            rows.append({"state": None, "term": None, "coefficient": name, "recovered": p.item(),
                         "true": values[name], "rel_error": abs(p.item() - values[name]) / abs(values[name])})
        return rows

    def scalars(self) -> dict[str, float]:
        out = {f"coef/{k}": v.item() for k, v in self.learned.items()}
        if bool(self.recovered):
            out["sindy/terms"] = float(self.mask.sum())
        return out

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self, problem: Trajectories, resolution: int | None = None, split: str = "test") -> Evaluation:
        """As the neural ODE's, for the current model (the recovered equation once there is one),
        plus ``network_rel_l2[_extrapolation]`` of the UDE with its networks, ``term_rel_l2``
        of the network's term against the true missing term along the true trajectory and, once
        recovered, each coefficient's relative error (``coef_rel_error/<name>``) and the largest
        spurious coefficient relative to the largest coefficient (``spurious_ratio``)."""
        with torch.no_grad():
            data = problem.trajectories()
            curves = self.curves(problem)
            pred = curves["recovered equation" if bool(self.recovered) else "UDE (networks)"].unsqueeze(0)
            metrics, reference = _scores(pred, data)
            if bool(self.recovered):
                scores, _ = _scores(curves["UDE (networks)"].unsqueeze(0), data)
                metrics.update({f"network_{k}": v for k, v in scores.items() if k != "rel_l2_data"})
            truth = data.truth[0]
            metrics["term_rel_l2"] = _rel(self.network_term(truth), problem.missing_rhs(truth))
            details: dict[str, Any] = {"equation": self.equation(problem)}
            if bool(self.recovered):
                rows = self.coefficient_report(problem)
                details["coefficients"] = rows
                for r in rows:
                    if r["coefficient"] is not None and r["rel_error"] is not None:
                        metrics[f"coef_rel_error/{r['coefficient']}"] = r["rel_error"]
                recovered = [abs(r["recovered"]) for r in rows if r["term"] is not None]
                spurious = [abs(r["recovered"]) for r in rows if r["term"] is not None and r["coefficient"] is None]
                metrics["spurious_ratio"] = max(spurious, default=0.0) / max(max(recovered), 1e-300)
        t = torch.cat([data.t, data.t_extrapolate])
        return Evaluation(metrics, pred[0], reference[0], {"t": t}, details=details)

    def curves(self, problem: Trajectories) -> dict[str, Tensor]:
        """Trajectories ``[T + T2, S]`` over both windows from the learned initial state: the UDE
        with its networks and, once recovered, the equation."""
        data = problem.trajectories()
        with torch.no_grad():
            out = {"UDE (networks)": self._window_and_after(data, self._network_rhs)[0]}
            if bool(self.recovered):
                out["recovered equation"] = self._window_and_after(data)[0]
        return out

    def figures(self, problem: Trajectories, evaluation: Evaluation, title: str) -> dict[str, Any]:
        from .. import plotting

        data = problem.trajectories()
        truth = data.truth[0]
        with torch.no_grad():
            learned, true = self.network_term(truth), problem.missing_rhs(truth)
        return {"": plotting.trajectory_figure(data, self.curves(problem), self.state_names, title),
                "term": plotting.term_figure(data.t, learned, true, self.state_names,
                                             f"{title}: the network's term")}


def _powers(n: int, degree: int) -> list[tuple[int, ...]]:
    """Exponent tuples of the monomials of ``n`` variables of total ``degree``, in pysindy's
    order (``x^2, x y, y^2``)."""
    out = []
    for combo in itertools.combinations_with_replacement(range(n), degree):
        p = [0] * n
        for i in combo:
            p[i] += 1
        out.append(tuple(p))
    return out


def _monomial(powers: tuple[int, ...], names: tuple[str, ...]) -> str:
    return " ".join(n if p == 1 else f"{n}^{p}" for n, p in zip(names, powers) if p)


def _join(terms: list[tuple[tuple[int, ...] | None, float | None]], names: tuple[str, ...]) -> str:
    parts = []
    for powers, c in terms:
        if powers is None:
            parts.append(("+", "NN"))
            continue
        mono = _monomial(powers, names)
        parts.append(("-" if c < 0 else "+", f"{abs(c):.3f}" + (f" {mono}" if mono else "")))
    if not parts:
        return "0"
    text = ("-" if parts[0][0] == "-" else "") + parts[0][1]
    return text + "".join(f" {s} {body}" for s, body in parts[1:])

