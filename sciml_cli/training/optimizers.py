"""Optimisers torch does not ship.

:class:`BFGS` keeps the whole inverse Hessian approximation. On the small networks a PINN uses
(a few thousand weights) the n × n matrix costs little next to one evaluation of the loss, and
it converges to losses that L-BFGS's short history does not reach (Urbán et al. 2025;
Kiyani et al. 2025).

:class:`LevenbergMarquardt` uses that the loss of a PINN is a sum of squared residuals: its
damped Gauss-Newton steps use the Jacobian of the residuals, not only their gradient (with the
slit's distance as an input, it takes the slit Poisson preset to its target).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch.func import jacrev, vmap
from torch.optim.lbfgs import _strong_wolfe

from ..constraints import PositiveFloat, PositiveInt

#: the update is skipped where the curvature s·y is below this share of |s| |y| (not positive
#: enough to keep the matrix positive definite in floating point)
CURVATURE_FLOOR = 1e-10


def rank_two(s: torch.Tensor, y: torch.Tensor, Hy: torch.Tensor, scaling: str):
    """The BFGS update of an inverse Hessian approximation H by the step s and the change of
    gradient y, given H y: the factor τ and the n × 2 matrices U, V with
    τ H ← (I − ρ s yᵀ) τH (I − ρ y sᵀ) + ρ s sᵀ = τH + U Vᵀ, ρ = 1 / s·y (Nocedal & Wright 2006,
    eq. 6.17), τ = 1 unless ``scaling == "oren_luenberger"``. None where the curvature s·y is
    too small to keep H positive definite."""
    ys = float(y.dot(s))
    if ys <= CURVATURE_FLOOR * float(y.norm() * s.norm()):
        return None
    yHy = float(y.dot(Hy))
    tau = min(1.0, ys / yHy) if scaling == "oren_luenberger" else 1.0
    Hy, yHy, rho = Hy * tau, yHy * tau, 1.0 / ys
    U = torch.stack([s, Hy], dim=1)
    V = torch.stack([(rho * rho * yHy + rho) * s - rho * Hy, -rho * s], dim=1)
    return tau, U, V


class _InverseHessian:
    """The dense inverse Hessian approximation H = c B + U Vᵀ: the rank-2 updates gather in U
    and V and fold into B once per optimiser step. The n × n matrix is memory-bound at the sizes
    BFGS is used for, and this way an iteration reads it once (the product H g) instead of
    reading it three times and writing it once (H y, the update, H g)."""

    def __init__(self, B: torch.Tensor):
        self.B, self.c = B, 1.0
        self.U = self.V = B.new_zeros(B.shape[0], 0)

    def mv(self, v: torch.Tensor) -> torch.Tensor:
        return torch.addmv(self.U @ (self.V.T @ v), self.B, v, alpha=self.c)

    def update(self, s: torch.Tensor, y: torch.Tensor, Hy: torch.Tensor, scaling: str):
        """Applies :func:`rank_two`; returns its result."""
        factors = rank_two(s, y, Hy, scaling)
        if factors is not None:
            tau, U, V = factors
            self.c *= tau
            self.U, self.V = torch.cat([self.U, U], dim=1), torch.cat([self.V * tau, V], dim=1)
        return factors

    def fold(self) -> torch.Tensor:
        if self.U.shape[1] or self.c != 1.0:
            self.B.addmm_(self.U, self.V.T, beta=self.c)
        self.c = 1.0
        self.U = self.V = self.B.new_zeros(self.B.shape[0], 0)
        return self.B


class BFGS(torch.optim.LBFGS):
    """BFGS with the dense inverse Hessian approximation and a strong-Wolfe line search
    (Nocedal & Wright 2006, Algorithm 6.1), used like ``torch.optim.LBFGS``: each ``step(closure)``
    runs up to ``max_iter`` iterations.

    ``scaling=oren_luenberger`` multiplies the matrix by τ = min(1, s·y / y·Hy) before each
    update: the self-scaled BFGS of Oren & Luenberger (1974), capped at 1 as Al-Baali (1998)
    recommends; Urbán et al. (2025) use self-scaled BFGS to train PINNs to near machine
    precision. ``none`` is plain BFGS, its first matrix scaled by s·y / y·y (Nocedal & Wright,
    eq. 6.20).

    The matrix is part of the optimiser's state, so a checkpoint holds n² numbers (n the number
    of weights; 5000 weights in float64: 200 MB) and a resumed run continues bit for bit.
    A direction that is not a descent direction (rounding in a nearly singular matrix) restarts
    the matrix from the identity.
    """

    def __init__(
        self,
        params,
        lr: PositiveFloat = 1.0,
        max_iter: PositiveInt = 20,
        max_eval: PositiveInt | None = None,
        tolerance_grad: PositiveFloat = 1e-7,
        tolerance_change: PositiveFloat = 1e-9,
        scaling: Literal["none", "oren_luenberger"] = "none",
    ):
        super().__init__(params, lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                         tolerance_change=tolerance_change, history_size=1, line_search_fn="strong_wolfe")
        for group in self.param_groups:
            group["scaling"] = scaling
        self.defaults["scaling"] = scaling

    @staticmethod
    def _update(H: _InverseHessian | None, s: torch.Tensor, y: torch.Tensor, g: torch.Tensor,
                d: torch.Tensor, scaling: str) -> tuple[_InverseHessian | None, torch.Tensor | None]:
        """Updates H by the step s and the change of gradient y; returns it with the product
        H g under the updated matrix. The last direction was d = −H g_prev, so H y = H g + d
        costs no second product with the matrix."""
        if H is None:
            ys = float(y.dot(s))
            if ys <= CURVATURE_FLOOR * float(y.norm() * s.norm()):
                return None, None
            gamma = ys / float(y.dot(y))  # the first matrix (Nocedal & Wright, eq. 6.20)
            H = _InverseHessian(torch.eye(s.numel(), dtype=s.dtype, device=s.device).mul_(gamma))
            Hg, Hy = g * gamma, y * gamma
        else:
            Hg = H.mv(g)
            Hy = Hg + d
            if Hy.norm() < 1e-6 * d.norm():  # g barely moved: the difference lost its digits
                Hy = H.mv(y)
        factors = H.update(s, y, Hy, scaling)
        if factors is not None:
            tau, U, V = factors
            Hg = U @ (V.T @ g) + tau * Hg
        return H, Hg

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        closure = torch.enable_grad()(closure)
        group = self.param_groups[0]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        state = self.state[self._params[0]]  # global state, kept with the first parameter as LBFGS does
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        orig_loss = closure()
        loss = float(orig_loss)
        evals = 1
        state["func_evals"] += 1
        g = self._gather_flat_grad()
        if g.abs().max() <= tolerance_grad:
            return orig_loss

        H, d, t = state.get("H"), state.get("d"), state.get("t")
        g_prev, loss_prev = state.get("prev_flat_grad"), state.get("prev_loss")
        H = None if H is None else _InverseHessian(H)
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] > 1:  # the first iteration ever has no matrix yet
                H, Hg = self._update(H, d.mul(t), g.sub(g_prev), g, d, group["scaling"])
            d = g.neg() if H is None else Hg.neg()
            gtd = g.dot(d)
            if H is not None and gtd >= 0:  # lost positive definiteness: start again from steepest descent
                H, d = None, g.neg()
                gtd = g.dot(d)
            if g_prev is None:
                g_prev = g.clone(memory_format=torch.contiguous_format)
            else:
                g_prev.copy_(g)
            loss_prev = loss
            # steepest descent (the first iteration, or a restart) has no natural step length
            t = min(1.0, 1.0 / float(g.abs().sum())) * lr if H is None else lr
            if gtd > -tolerance_change:
                break

            x0 = self._clone_param()
            loss, g, t, ls_evals = _strong_wolfe(
                lambda x, step, direction: self._directional_evaluate(closure, x, step, direction),
                x0, t, d, loss, g, gtd, max_ls=max_eval - evals)
            self._add_grad(t, d)
            evals += ls_evals
            state["func_evals"] += ls_evals

            if (n_iter == max_iter or evals >= max_eval or g.abs().max() <= tolerance_grad
                    or d.mul(t).abs().max() <= tolerance_change or abs(loss - loss_prev) < tolerance_change):
                break

        state.update(H=None if H is None else H.fold(), d=d, t=t, prev_flat_grad=g_prev, prev_loss=loss_prev)
        return orig_loss


#: residual blocks ``(f, inputs, weight)``: the loss is ``sum weight * |f(params, *sample)|^2`` over
#: blocks and samples (see :meth:`sciml_cli.models.base.Model.least_squares`)
System = Sequence[tuple[Callable[..., torch.Tensor], tuple[Any, ...], float]]


class LevenbergMarquardt(torch.optim.Optimizer):
    """Levenberg-Marquardt (Levenberg 1944; Marquardt 1963; Nocedal & Wright 2006, section
    10.3) on the residuals of a model's :meth:`~sciml_cli.models.base.Model.least_squares`.

    Each ``step(system)`` is one iteration: the residuals ``r`` and their Jacobian ``J`` with
    respect to every weight, then ``(J^T J + mu I) d = -J^T r`` solved by Cholesky, the step
    ``lr * d`` taken if it lowers the loss (then ``mu /= decrease``), otherwise ``mu *=
    increase`` and solved again, up to ``max_tries`` times. ``mu`` (``damping``) moves between
    Gauss-Newton steps (small) and short gradient steps (large); it is kept in the parameter
    group, so a checkpoint carries it and a resumed run continues bit for bit.

    The Jacobian has one row per residual and one column per weight, and ``J^T J`` is n x n:
    for the networks of a few thousand weights at most. The normal equations are formed and
    solved in float64 whatever the model's dtype (forming them squares the condition number;
    on MPS, which has no float64, in the model's).
    ``chunk_size`` samples go through ``jacrev`` at once (``null``: all; fastest, the most
    memory). The step returns the gradient too: the trainer stops the run, weights unchanged,
    where it or the loss is not finite.
    """

    least_squares = True  # the trainer steps it with the model's residual blocks, not a closure
    #: settings the optimiser adapts as it goes: a resumed run keeps the checkpoint's
    evolving = ("damping",)

    def __init__(
        self,
        params,
        lr: PositiveFloat = 1.0,
        damping: PositiveFloat = 1e-3,
        increase: PositiveFloat = 2.0,
        decrease: PositiveFloat = 3.0,
        max_tries: PositiveInt = 30,
        min_damping: PositiveFloat = 1e-12,
        max_damping: PositiveFloat = 1e12,
        chunk_size: PositiveInt | None = 2048,
    ):
        if increase <= 1 or decrease <= 1:
            raise ValueError("increase and decrease must be above 1")
        if not min_damping <= damping <= max_damping:
            raise ValueError(f"damping must lie between min_damping ({min_damping}) and max_damping ({max_damping})")
        super().__init__(params, dict(lr=lr, damping=damping, increase=increase, decrease=decrease,
                                      max_tries=max_tries, min_damping=min_damping, max_damping=max_damping,
                                      chunk_size=chunk_size))
        if len(self.param_groups) != 1:
            raise ValueError("LevenbergMarquardt takes one parameter group")

    @staticmethod
    def residuals(system: System, params: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """Each block's residuals at ``params``, unweighted, one vector per block."""
        return [vmap(f, in_dims=(None, *[0] * len(inputs)))(params, *inputs).reshape(-1) for f, inputs, _ in system]

    @staticmethod
    def loss(system: System, parts: Sequence[torch.Tensor]) -> float:
        return sum(w * float(r.square().sum()) for (_, _, w), r in zip(system, parts))

    @staticmethod
    def jacobian(system: System, params: tuple[torch.Tensor, ...], chunk_size: int | None = None) -> torch.Tensor:
        """``[residuals, weights]``: the Jacobian of the weighted residuals (every block's times
        the square root of its weight), its columns in the order of ``params`` (each flattened)."""
        rows = []
        for f, inputs, w in system:
            parts = vmap(jacrev(f), in_dims=(None, *[0] * len(inputs)), chunk_size=chunk_size)(params, *inputs)
            rows.append(torch.cat([j.reshape(j.shape[0] * j.shape[1], -1) for j in parts], dim=1).mul_(w ** 0.5))
        return torch.cat(rows)

    def step(self, system: System) -> tuple[list[torch.Tensor], torch.Tensor]:  # type: ignore[override]
        """One iteration; returns each block's residuals and the loss gradient ``2 J^T r``, both
        at the parameters before the step."""
        group = self.param_groups[0]
        params = tuple(p.detach() for p in group["params"])
        parts = self.residuals(system, params)
        current = self.loss(system, parts)
        jac = self.jacobian(system, params, group["chunk_size"])
        r = torch.cat([p * w ** 0.5 for p, (_, _, w) in zip(parts, system)])
        if jac.device.type != "mps":  # MPS has no float64
            jac, r = jac.double(), r.double()
        normal, gradient = jac.T @ jac, jac.T @ r
        del jac
        if not bool(torch.isfinite(gradient).all()):  # the trainer stops the run on it
            return parts, gradient.to(parts[0].dtype)
        eye = torch.eye(len(normal), dtype=normal.dtype, device=normal.device)
        mu = group["damping"]
        for _ in range(group["max_tries"] if math.isfinite(current) else 0):
            factor, info = torch.linalg.cholesky_ex(normal + mu * eye)
            if not info.item():
                d = torch.cholesky_solve(gradient[:, None], factor)[:, 0].mul_(-group["lr"]).to(params[0].dtype)
                trial = tuple(p + piece.view_as(p) for p, piece in zip(params, d.split([p.numel() for p in params])))
                new = self.loss(system, self.residuals(system, trial))
                if new < current:  # NaN is never below
                    with torch.no_grad():
                        for p, t in zip(group["params"], trial):
                            p.copy_(t)
                    mu = max(mu / group["decrease"], group["min_damping"])
                    break
            mu = min(mu * group["increase"], group["max_damping"])
        group["damping"] = mu
        return parts, gradient.mul_(2).to(parts[0].dtype)
