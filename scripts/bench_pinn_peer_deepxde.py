"""Time one full Adam step of DeepXDE's own Burgers PINN, for comparison with ours (issue 8).

Run it with the separate benchmark environment, never with the package's `.venv` (DeepXDE is not
a dependency of `sciml_cli`, and this script is not imported by the package or the tests):

    python3 -m venv /work/bench/venv
    /work/bench/venv/bin/pip install torch==2.13.0 deepxde==1.15.0
    /work/bench/venv/bin/python scripts/bench_pinn_peer_deepxde.py                 # 3 x 20
    /work/bench/venv/bin/python scripts/bench_pinn_peer_deepxde.py --preset large  # 4 x 50

Setup, as in DeepXDE's examples/pinn_forward/Burgers.py: x in Interval(-1, 1), t in
TimeDomain(0, 0.99), residual y_t + y y_x - (0.01/pi) y_xx through dde.grad.jacobian/hessian,
DirichletBC y = 0 on x = +-1, IC y = -sin(pi x), dde.data.TimePDE(num_domain, num_boundary,
num_initial) with DeepXDE's default Hammersley sampling, dde.nn.FNN([2] + [width] * depth + [1],
"tanh", "Glorot normal"), model.compile("adam", lr=1e-3), float32, backend pytorch on the CPU.

Presets:
  burgers  width 20, depth 3, 2540 domain + 80 boundary + 160 initial points (the example's).
  large    width 50, depth 4, 20000 domain points; boundary and initial points scaled by the same
           factor as the domain points (20000 / 2540), i.e. 630 + 1260, so that the mix of
           residual, BC and IC points is the example's. Any --width/--depth/--n-* flag overrides.

What is timed. After a warm-up call, each repeat times `model.train(iterations=N,
display_every=10**9, verbose=0)` and divides by N (`step_s`, median over repeats; `step_s_all`
lists every repeat). One DeepXDE training iteration (`Model._train_sgd`) is: the callback hooks,
`data.train_next_batch` (cached arrays for TimePDE, no resampling), `torch.as_tensor` of the
inputs, the network forward on all training rows, the PDE residual with first and second
derivatives (torch.autograd.grad with create_graph=True), the MSE losses of residual, BC and IC,
`zero_grad`, `backward`, and `torch.optim.Adam.step`. display_every=10**9 and verbose=0 remove
all printing and all periodic evaluation, but `train()` itself still evaluates the losses twice
per call (once before the loop and once after the last iteration; each evaluation is a forward +
residual on the training set and again on the "test" set, which for TimePDE without num_test is
the training set, with no backward). That fixed cost is amortised over N and is part of
`step_s`. `step_s_loop` excludes it: it times the loop only, from the start of the first to the
start of the last iteration (N - 1 iterations), via a callback; use it when our side is timed
without periodic evaluation. Choose N large (>= 200) so the two agree within a few percent.

Note that DeepXDE evaluates the network and the full residual (with the Hessian) on every
training row: the `rows` reported below are the BC and IC collocation points (duplicates taken
from the sampled set) stacked on top of the domain + boundary + initial points, and the residual
loss then discards the first `bc_rows` of them. That is how DeepXDE runs this example.

Prints one JSON line to stdout; DeepXDE's own messages go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time

PRESETS = {
    "burgers": {"width": 20, "depth": 3, "n_domain": 2540, "n_boundary": 80, "n_initial": 160},
    "large": {"width": 50, "depth": 4, "n_domain": 20000, "n_boundary": 630, "n_initial": 1260},
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="burgers")
    p.add_argument("--width", type=int)
    p.add_argument("--depth", type=int)
    p.add_argument("--n-domain", type=int)
    p.add_argument("--n-boundary", type=int)
    p.add_argument("--n-initial", type=int)
    p.add_argument("--steps", type=int, default=500, help="Adam steps per timed train() call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=20, help="Adam steps in the untimed first call")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.steps < 2 or args.repeats < 1:
        p.error("need --steps >= 2 and --repeats >= 1")
    return args


def main() -> None:
    args = parse_args()
    backend = os.environ.setdefault("DDE_BACKEND", "pytorch")
    if backend != "pytorch":
        sys.exit(f"DDE_BACKEND={backend}: this benchmark needs the pytorch backend")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    with contextlib.redirect_stdout(sys.stderr):  # DeepXDE prints its backend on import
        import deepxde as dde

        if torch.cuda.is_available() or torch.get_default_device().type != "cpu":
            sys.exit("DeepXDE moved the default device off the CPU; this benchmark is CPU-only")
        dde.config.set_default_float("float32")
        dde.config.set_random_seed(args.seed)
        torch.set_num_threads(args.threads)  # again, in case an import changed it

        # --- DeepXDE's Burgers example, verbatim apart from the sizes ---
        def pde(x, y):
            dy_x = dde.grad.jacobian(y, x, i=0, j=0)
            dy_t = dde.grad.jacobian(y, x, i=0, j=1)
            dy_xx = dde.grad.hessian(y, x, i=0, j=0)
            return dy_t + y * dy_x - 0.01 / np.pi * dy_xx

        geom = dde.geometry.Interval(-1, 1)
        timedomain = dde.geometry.TimeDomain(0, 0.99)
        geomtime = dde.geometry.GeometryXTime(geom, timedomain)
        bc = dde.icbc.DirichletBC(geomtime, lambda x: 0, lambda _, on_boundary: on_boundary)
        ic = dde.icbc.IC(
            geomtime, lambda x: -np.sin(np.pi * x[:, 0:1]), lambda _, on_initial: on_initial
        )
        data = dde.data.TimePDE(
            geomtime,
            pde,
            [bc, ic],
            num_domain=args.n_domain,
            num_boundary=args.n_boundary,
            num_initial=args.n_initial,
        )
        net = dde.nn.FNN([2] + [args.width] * args.depth + [1], "tanh", "Glorot normal")
        model = dde.Model(data, net)
        model.compile("adam", lr=1e-3, verbose=0)
        # ---

        class LoopClock(dde.callbacks.Callback):
            """Start time of each iteration of the current train() call."""

            def on_train_begin(self):
                self.starts = []

            def on_batch_begin(self):
                self.starts.append(time.perf_counter())

        clock = LoopClock()
        display_every = 10**9  # never reached: no periodic evaluation or printing

        model.train(
            iterations=args.warmup, display_every=display_every, verbose=0, callbacks=[clock]
        )
        step_s_all, loop_s_all = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model.train(
                iterations=args.steps, display_every=display_every, verbose=0, callbacks=[clock]
            )
            wall = time.perf_counter() - t0
            step_s_all.append(wall / args.steps)
            loop_s_all.append((clock.starts[-1] - clock.starts[0]) / (len(clock.starts) - 1))

    param = next(model.net.parameters())
    assert param.dtype == torch.float32 and param.device.type == "cpu", (param.dtype, param.device)
    report = {
        "peer": "deepxde",
        "version": dde.__version__,
        "backend": dde.backend.backend_name,
        "torch": torch.__version__,
        "preset": args.preset,
        "width": args.width,
        "depth": args.depth,
        "points": {
            "domain": args.n_domain,
            "boundary": args.n_boundary,
            "initial": args.n_initial,
            "rows": int(model.train_state.X_train.shape[0]),
            "bc_rows": [int(n) for n in data.num_bcs],
        },
        "params": sum(p.numel() for p in model.net.parameters()),
        "dtype": "float32",
        "steps": args.steps,
        "repeats": args.repeats,
        "step_s": statistics.median(step_s_all),
        "step_s_min": min(step_s_all),
        "step_s_all": step_s_all,
        "step_s_loop": statistics.median(loop_s_all),
        "step_s_loop_all": loop_s_all,
        "loss_final": float(np.sum(model.train_state.loss_train)),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
