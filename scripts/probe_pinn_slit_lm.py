"""Probe, outside the trainer: the slit PINN trained by Levenberg-Marquardt (a damped
Gauss-Newton method on the residual vector), with and without an input feature for the slit.

Not a preset and not part of `sciml train`: it measures whether the two ideas close the gap of
`pinn_poisson_slit` (1.76e-2 against the issue's 5e-3) before they are built into the PINN and
the optimiser phases. Same problem as the preset (`Poisson(domain="slit")`: exact crack-tip
solution, exact boundary data u = g + phi N from the problem's own lift and distance function,
residual weighted by min(1, r)^3, float64, 2 threads); the network is a tanh MLP, its residual
and per-point Jacobian are taken with torch.func (hessian of N in x, jacrev in the weights),
and each iteration solves (J^T J + mu I) d = -J^T r, accepting d only if the loss falls
(mu / 3) and otherwise raising mu (x 2).

Why the slit feature (`--cut 1`: the distance to the slit, |y| for x > 0, r for x < 0, as a
third input): with u = g + phi N, the N = (u - g) / phi that the exact solution needs is a
smooth function of (x, y, |y|) near the slit, so it has a kink across it that no smooth network
of (x, y) can make; the strong-form residual then cannot vanish on both sides of the slit.

Measured on 2 cores (20 x 3 network, 941 / 921 weights, 8000 Sobol points redrawn every 10
iterations, 200 s of iterations, seed 0), the relative L2 error on the problem's 257 x 257
reference grid, at the end and over the printed iterations 160-300:
  --cut 1: 3.38e-3 at the end (294 iterations); 2.6e-3 - 4.9e-3
  --cut 0: 1.09e-2 at the end (312 iterations); 6.7e-3 - 1.6e-2
against 1.76e-2 for the Adam + BFGS preset (5081 weights, 459 s). An earlier draft of this
script (the same method) gave 4.43e-3 and 5.49e-3; on 2000 fixed points without the feature,
1.9e-2 with a loss of 2e-7 on its points and 3.5 on fresh ones (overfitted). The error moves
with each redrawn set: a few points near the slit's far end (1, 0), where the lift and the
distance function bend sharply, carry most of a set's residual.

    python scripts/probe_pinn_slit_lm.py --n 8000 --resample 10 --cut 1 --budget 200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, grad, hessian, jacrev, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sciml_cli.problems.poisson import Poisson  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=20)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--n", type=int, default=8000, help="collocation points per set")
    ap.add_argument("--resample", type=int, default=10, help="redraw the points every k iterations (0: never)")
    ap.add_argument("--power", type=float, default=3.0, help="residual weight min(1, r)^power")
    ap.add_argument("--cut", type=int, default=1, help="1: the distance to the slit as a third input")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iters", type=int, default=100000)
    ap.add_argument("--budget", type=float, default=200, help="seconds")
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(a.seed)
    dtype = torch.float64
    problem = Poisson(domain="slit").to("cpu", dtype)

    layers: list[nn.Module] = [nn.Linear(3 if a.cut else 2, a.width), nn.Tanh()]
    for _ in range(a.depth - 1):
        layers += [nn.Linear(a.width, a.width), nn.Tanh()]
    net = nn.Sequential(*layers, nn.Linear(a.width, 1)).to(dtype)
    names, shapes = zip(*((k, v.shape) for k, v in net.named_parameters()))
    sizes = [s.numel() for s in shapes]
    theta = torch.cat([v.detach().reshape(-1) for v in net.parameters()])
    print(f"weights: {theta.numel()}")

    def unflat(t):
        return {k: c.view(s) for k, c, s in zip(names, t.split(sizes), shapes)}

    def features(x):
        if not a.cut:
            return x
        d = torch.where(x[..., 0] > 0, x[..., 1].abs(), x.norm(dim=-1))
        return torch.cat([x, d[..., None]], -1)

    def n_of(t, x):
        return functional_call(net, unflat(t), (features(x[None]),))[0, 0]

    def residual(t, x, lap_g, phi, grad_phi, lap_phi, scale):
        """Scaled Laplacian of u = g + phi N at one point (f = 0 here)."""
        lap_n = torch.trace(hessian(n_of, argnums=1)(t, x))
        return scale * (lap_g + lap_phi * n_of(t, x) + 2 * (grad_phi * grad(n_of, argnums=1)(t, x)).sum() + phi * lap_n)

    def point_set(seed):
        x = problem.sample_interior(a.n, seed).requires_grad_(True)
        g, phi = problem.constraint(x)
        parts = []
        for f in (g[:, 0], phi[:, 0]):
            (df,) = torch.autograd.grad(f.sum(), x, create_graph=True)
            lap = sum(torch.autograd.grad(df[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(2))
            parts.append((f.detach(), df.detach(), lap.detach()))
        (_, _, lap_g), (phi_v, grad_phi, lap_phi) = parts
        scale = (x.detach().norm(dim=1).clamp(max=1.0) ** a.power / a.n).sqrt()
        return x.detach(), lap_g, phi_v, grad_phi, lap_phi, scale

    residuals = vmap(residual, in_dims=(None, 0, 0, 0, 0, 0, 0))
    jacobian = vmap(jacrev(residual), in_dims=(None, 0, 0, 0, 0, 0, 0), chunk_size=512)

    axes, ref = problem.reference()
    grid = torch.stack([m.reshape(-1) for m in torch.meshgrid(*axes.values(), indexing="ij")], 1)
    inside = ~torch.isnan(ref.reshape(-1))
    grid, exact = grid[inside], ref.reshape(-1)[inside]
    g_grid, phi_grid = problem.constraint(grid)

    def prediction(t):
        with torch.no_grad():
            return g_grid[:, 0] + phi_grid[:, 0] * functional_call(net, unflat(t), (features(grid),))[:, 0]

    def error(t):
        return ((prediction(t) - exact).norm() / exact.norm()).item()

    data, mu, start = point_set(1), 1e-3, time.perf_counter()
    loss = residuals(theta, *data).pow(2).sum().item()
    eye = torch.eye(theta.numel(), dtype=dtype)
    for it in range(a.iters):
        if a.resample and it and it % a.resample == 0:
            data = point_set(1 + it)
            loss = residuals(theta, *data).pow(2).sum().item()
        r, jac = residuals(theta, *data), jacobian(theta, *data)
        normal, gradient = jac.T @ jac, jac.T @ r
        for _ in range(30):
            factor, info = torch.linalg.cholesky_ex(normal + mu * eye)
            if info:
                mu *= 4
                continue
            step = -torch.cholesky_solve(gradient[:, None], factor)[:, 0]
            new = residuals(theta + step, *data).pow(2).sum().item()
            if new < loss:
                theta, loss, mu = theta + step, new, max(mu / 3, 1e-12)
                break
            mu *= 2
        if it % 20 == 0:
            print(f"iteration {it}: loss {loss:.3e}, damping {mu:.1e}, rel-L2 {error(theta):.3e}, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
        if time.perf_counter() - start > a.budget:
            break
    print(f"final rel-L2 {error(theta):.3e} after {it + 1} iterations, {time.perf_counter() - start:.0f} s")
    fresh = point_set(12345)
    print(f"loss on its points {residuals(theta, *data).pow(2).sum().item():.3e}, "
          f"on fresh points {residuals(theta, *fresh).pow(2).sum().item():.3e}")
    e, radius = prediction(theta) - exact, grid.norm(dim=1)
    for lo, hi in [(0, 0.05), (0.05, 0.2), (0.2, 0.5), (0.5, 1), (1, 2)]:
        m = (radius >= lo) & (radius < hi)
        print(f"r in [{lo}, {hi}): share of the squared error {(e[m] ** 2).sum() / (e ** 2).sum():.3f}, "
              f"max |error| {e[m].abs().max():.2e}")


if __name__ == "__main__":
    main()
