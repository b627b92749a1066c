"""PINN against Deep Ritz on Poisson's problem: same network, same step budget, same reference.

    .venv/bin/python scripts/bench_poisson.py [--cases square lshape slit cube10] [--seeds 0 1 2]
        [--steps 2000] [--width 40] [--depth 4] [--json results.json]
        [--pinn-overrides model.singular_power=2 ...] [--drm-overrides ...] [-- extra overrides ...]

For every case and seed, runs the real commands one after the other (never two trainings at once
on a small machine): ``sciml train model=pinn ...`` and ``sciml train model=drm ...`` with the
same fully connected tanh network (``width`` x ``depth``), the same number of Adam steps on a
cosine schedule, float64, exact boundary data through the distance-function transform where the
problem offers it (a penalty otherwise, weight 500 for the DRM as E & Yu 2018 use), and reads the
run's ``metrics.json``. The PINN takes Taylor-mode derivatives. Prints one Markdown table (median
over seeds of the relative L2 error, the relative H1 error, the max error, the training wall
time, the number of parameters) and writes every run to ``--json``. Overrides after ``--`` go to
both methods; ``--pinn-overrides`` / ``--drm-overrides`` to one of them (an option only that
model has, e.g. the PINN's ``model.singular_power``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = {
    "square": ["problem.domain=square"],
    "lshape": ["problem.domain=lshape"],
    "slit": ["problem.domain=slit"],
    "cube10": ["problem.domain=cube", "problem.dim=10"],
}
#: the boundary data imposed exactly where the problem offers the transform (not on pairs)
HARD = {"square": True, "lshape": True, "slit": True, "cube10": False}
METHODS = {
    "pinn": ["model=pinn", "model.derivatives=taylor"],
    "drm": ["model=drm", "model.network=mlp"],
}


def parameters(overrides: list[str]) -> int:
    from sciml_cli import config
    from sciml_cli.commands import compose

    cfg, _ = compose("train", overrides)
    problem = config.instantiate(cfg.problem)
    return sum(p.numel() for p in config.instantiate(cfg.model, problem=problem).parameters())


def run(case: str, method: str, seed: int, args: argparse.Namespace) -> dict:
    overrides = [
        "problem=poisson", *CASES[case], *METHODS[method], "model.activation=tanh",
        f"model.width={args.width}", f"model.depth={args.depth}", f"model.hard_constraints={str(HARD[case]).lower()}",
        f"model.n_interior={args.points}", "optim=adam_cosine", f"optim.steps={args.steps}", f"optim.lr={args.lr}",
        f"trainer.seed={seed}", f"trainer.val_every={args.steps}", f"trainer.checkpoint_every={args.steps}",
        "trainer.dtype=float64", "trainer.threads=2", "trainer.device=cpu", "trainer.callbacks.progress=null",
        *args.extra, *getattr(args, f"{method}_overrides"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "sciml_cli", "train", *overrides], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        (path,) = Path(tmp, "outputs", "train").glob("*/*/metrics.json")
        m = json.loads(path.read_text())
    return {"case": case, "method": method, "seed": seed, "rel_l2": m["val/rel_l2"], "rel_h1": m["val/rel_h1"],
            "max_abs": m["val/max_abs"], "wall_s": m["wall_time_s"], "parameters": parameters(overrides),
            "overrides": overrides}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--width", type=int, default=40)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--points", type=int, default=2000, help="interior points per step")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--pinn-overrides", nargs="+", default=[], help="overrides for the PINN runs only")
    parser.add_argument("--drm-overrides", nargs="+", default=[], help="overrides for the DRM runs only")
    parser.add_argument("extra", nargs="*", help="overrides after --")
    args = parser.parse_args()
    runs = []
    for case in args.cases:
        for method in args.methods:
            for seed in args.seeds:
                runs.append(run(case, method, seed, args))
                print(json.dumps({k: v for k, v in runs[-1].items() if k != "overrides"}), file=sys.stderr)
                if args.json:
                    args.json.write_text(json.dumps(runs, indent=2))
    print(f"\n{args.width} x {args.depth} tanh MLP, {args.steps} Adam steps (cosine, lr {args.lr:g}), "
          f"{args.points} points per step, median of seeds {args.seeds}\n")
    print("| case | method | rel-L2 | rel-H1 | max error | wall s | parameters |")
    print("|---|---|---|---|---|---|---|")
    for case in args.cases:
        for method in args.methods:
            rs = [r for r in runs if r["case"] == case and r["method"] == method]
            med = {k: statistics.median(r[k] for r in rs) for k in ("rel_l2", "rel_h1", "max_abs", "wall_s")}
            print(f"| {case} | {method} | {med['rel_l2']:.2e} | {med['rel_h1']:.2e} | {med['max_abs']:.2e} | "
                  f"{med['wall_s']:.0f} | {rs[0]['parameters']} |")


if __name__ == "__main__":
    main()
