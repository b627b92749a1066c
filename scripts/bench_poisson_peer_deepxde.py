"""DeepXDE's PINN on our L-shape problem, for an accuracy and time comparison with ours (issue 10).

Run it with the separate benchmark environment, never with the package's `.venv` (DeepXDE is not
a dependency of `sciml_cli`; this script imports `sciml_cli` only for the reference grid):

    python3 -m venv /work/bench/venv
    /work/bench/venv/bin/pip install torch==2.13.0 deepxde==1.15.0 -e .
    DDE_BACKEND=pytorch /work/bench/venv/bin/python scripts/bench_poisson_peer_deepxde.py

Setup, as DeepXDE's examples/pinn_forward/Poisson_Lshape.py builds it, on our exact problem:
`dde.geometry.Polygon` of the L-shape, the residual -u_xx - u_yy through `dde.grad.hessian`, a
`DirichletBC` with the exact data r^(2/3) sin(2 theta / 3) on the whole boundary (a penalty, weight
1), `dde.data.PDE(num_domain, num_boundary)` with DeepXDE's default sampling,
`dde.nn.FNN([2] + [width] * depth + [1], "tanh", "Glorot normal")`, Adam at a constant rate,
float64, on the CPU. Scored like ours: relative L2 error on the 257 x 257 reference grid of
`sciml_cli.problems.poisson.Poisson(domain="lshape")`, points outside the domain left out.

Ours on the same setup (soft boundary term, fixed points, same network, steps and rate):

    sciml train model=pinn problem=poisson problem.domain=lshape model.width=40 model.depth=4 \\
        model.n_interior=2000 model.n_boundary=400 model.derivatives=taylor optim=adam \\
        optim.steps=5000 optim.lr=1e-3 trainer.dtype=float64 trainer.threads=2
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("DDE_BACKEND", "pytorch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=40)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--n-domain", type=int, default=2000)
    parser.add_argument("--n-boundary", type=int, default=400)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import deepxde as dde
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    dde.config.set_default_float("float64")
    dde.config.set_random_seed(args.seed)

    def exact(x: np.ndarray) -> np.ndarray:
        r = np.hypot(x[:, 0:1], x[:, 1:2])
        theta = np.mod(np.arctan2(x[:, 1:2], x[:, 0:1]), 2 * np.pi)
        return r ** (2 / 3) * np.sin(2 * theta / 3)

    def pde(x, y):
        return -dde.grad.hessian(y, x, i=0, j=0) - dde.grad.hessian(y, x, i=1, j=1)

    geom = dde.geometry.Polygon([[0, 0], [1, 0], [1, 1], [-1, 1], [-1, -1], [0, -1]])
    bc = dde.icbc.DirichletBC(geom, exact, lambda _, on_boundary: on_boundary)
    data = dde.data.PDE(geom, pde, bc, num_domain=args.n_domain, num_boundary=args.n_boundary)
    net = dde.nn.FNN([2] + [args.width] * args.depth + [1], "tanh", "Glorot normal")
    model = dde.Model(data, net)
    model.compile("adam", lr=args.lr)
    start = time.perf_counter()
    model.train(iterations=args.steps, display_every=10**9, verbose=0)
    wall = time.perf_counter() - start

    from sciml_cli.problems.poisson import Poisson

    grid, reference = Poisson(domain="lshape").to("cpu", torch.float64).reference()
    mesh = torch.meshgrid(*grid.values(), indexing="ij")
    points = torch.stack([m.reshape(-1) for m in mesh], dim=1).numpy()
    ref = reference.reshape(-1).numpy()
    inside = ~np.isnan(ref)
    pred = model.predict(points[inside])[:, 0]
    rel = float(np.linalg.norm(pred - ref[inside]) / np.linalg.norm(ref[inside]))
    print(json.dumps({"peer": f"deepxde {dde.__version__}", "rel_l2": rel, "max_abs": float(np.abs(pred - ref[inside]).max()),
                      "train_wall_s": round(wall, 1), "steps": args.steps, "width": args.width, "depth": args.depth,
                      "n_domain": args.n_domain, "n_boundary": args.n_boundary}))


if __name__ == "__main__":
    main()
