"""Integration of ``du/dt = f(u)`` by torchdiffeq (Chen et al. 2018), differentiable by
backpropagation through the solver's operations or by the adjoint method.

Fixed-step methods (``euler``, ``midpoint``, ``rk4``) take a step size; their outputs at times
between steps are interpolated, so a step that divides the spacing of the output times gives the
step values themselves. Adaptive methods (``bosh3``, ``dopri5``, ``dopri8``) control the local
error to ``rtol`` / ``atol``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import Tensor

Method = Literal["euler", "midpoint", "rk4", "bosh3", "dopri5", "dopri8"]
#: design order of each fixed-step method; adaptive ones are ``None`` here
FIXED_ORDER: dict[str, int] = {"euler": 1, "midpoint": 2, "rk4": 4}
ADAPTIVE = ("bosh3", "dopri5", "dopri8")
#: right-hand side evaluations per step of each adaptive method (first-same-as-last counted once)
STAGES: dict[str, int] = {"bosh3": 3, "dopri5": 6, "dopri8": 12}


def check_solver(method: str, step_size: float | None, rtol: float, atol: float, prefix: str = "model") -> None:
    """One-line errors for a solver configuration that cannot run."""
    if method not in FIXED_ORDER and method not in ADAPTIVE:
        raise ValueError(f"{prefix}.method: {method!r} is not one of {', '.join([*FIXED_ORDER, *ADAPTIVE])}")
    if method in FIXED_ORDER and step_size is None:
        raise ValueError(f"{prefix}.step_size: {method} is a fixed-step method; give a step size (e.g. {prefix}.step_size=0.01)")
    if step_size is not None and step_size <= 0:
        raise ValueError(f"{prefix}.step_size: must be positive, got {step_size}")
    if rtol <= 0 or atol <= 0:
        raise ValueError(f"{prefix}.rtol/atol: tolerances must be positive, got rtol={rtol}, atol={atol}")


def integrate(f: Callable[[Tensor], Tensor], u0: Tensor, t: Tensor, method: str = "dopri5",
              step_size: float | None = None, rtol: float = 1e-6, atol: float = 1e-8,
              adjoint: bool = False, params: Iterable[Tensor] = (), max_steps: int | None = None) -> Tensor:
    """States ``[T, *u0.shape]`` at times ``t`` ``[T]`` (``t[0]`` the initial time) of the
    autonomous system ``du/dt = f(u)``.

    ``adjoint=True`` computes gradients by solving the adjoint system backwards (Chen et al.
    2018), with memory independent of the number of steps; ``params`` are then the tensors the
    gradient is wanted for (those ``f`` closes over). ``max_steps`` bounds an adaptive solver's
    steps over the whole solve (it raises ``AssertionError`` beyond), so a diverging trajectory
    fails instead of hanging: torchdiffeq's own ``max_num_steps`` counts per output interval, which
    lets a solve with many output times take that many steps on each, and its autograd graph
    grow to gigabytes, before it gives up.
    """
    from torchdiffeq import odeint, odeint_adjoint

    check_solver(method, step_size, rtol, atol)
    if method in FIXED_ORDER:
        options = {"step_size": step_size}
    else:
        options = {} if max_steps is None else {"max_num_steps": max_steps}
        if max_steps is not None:  # + 1: rejected steps' evaluations
            f = _Budget(f, (STAGES[method] + 1) * max_steps, forward_only=adjoint)
    if adjoint:
        params = tuple(p for p in params if p.requires_grad)
        return odeint_adjoint(_Autonomous(f), u0, t, rtol=rtol, atol=atol, method=method, options=options,
                              adjoint_params=params)
    return odeint(lambda _, u: f(u), u0, t, rtol=rtol, atol=atol, method=method, options=options)


class _Budget:
    """``f``, which raises ``AssertionError`` (as torchdiffeq does) after ``calls`` evaluations.
    ``forward_only``: count only evaluations without autograd, the adjoint method's forward solve
    (its backward solve, inside ``backward()``, must not fail)."""

    def __init__(self, f: Callable[[Tensor], Tensor], calls: int, forward_only: bool = False) -> None:
        self.f, self.left, self.forward_only = f, calls, forward_only

    def __call__(self, u: Tensor) -> Tensor:
        if self.forward_only and torch.is_grad_enabled():
            return self.f(u)
        self.left -= 1
        if self.left < 0:
            raise AssertionError("max_num_steps exceeded over the whole solve")
        return self.f(u)


class _Autonomous(torch.nn.Module):
    """``(t, u) -> f(u)`` as a module, which the adjoint method wraps."""

    def __init__(self, f: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.f = f

    def forward(self, t: Tensor, u: Tensor) -> Tensor:
        return self.f(u)
