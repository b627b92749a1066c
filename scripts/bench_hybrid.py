"""Benchmark the hybrid solver-in-the-loop presets against the targets of the hybrid model.

For a preset (``hybrid_burgers``, ``hybrid_navier_stokes``) this trains, one after the other on
a quiet machine, the preset itself (solver in the loop, ``model.unroll`` from the preset) and the
same network trained on one-step corrections (``model.unroll=1``, Um et al.'s non-interacting
baseline, on the preset's optimiser schedule, phases included), with ``sciml train`` as a user would, then scores both on the test split (unseen
initial conditions, ``model.test_steps`` coarse steps) beside the coarse solver alone and the
same solver on 2x and 4x finer grids (its step shrunk alike). Wall times of the test rollout
(every test sample at once) are the best of ``--repeats`` runs after a warm-up, on the device
of the run.

Targets checked: mean rel-L2 over the rollout >= 4x below the coarse solver; below the one-step
model; no worse than the plain solver on the 2x grid and faster than it; bounded over a rollout
of >= 10x the training unroll; training within the preset's time budget.

    python scripts/bench_hybrid.py --preset hybrid_burgers [--json out.json] [--figure fig.png]
    python scripts/bench_hybrid.py --runs RUN_LOOP RUN_ONESTEP      # score existing runs
    python scripts/bench_hybrid.py --runs RUN RUN --against /tmp/old   # and time another checkout's code
    python scripts/bench_hybrid.py --schemes hybrid_burgers       # why the coarse solver is low order
    python scripts/bench_hybrid.py --schemes hybrid_navier_stokes_low_viscosity --scheme-samples 16 --scheme-steps 100

``--against DIR`` also rolls each run out with the ``sciml_cli`` of another checkout (e.g. a
``git worktree`` of an older commit), its weights loaded into that code's model, in the same
process: this code, that code and the 2x solver take turns, ``--rounds`` times, and the medians of
the per-round ratios are printed (the machine's speed drifts too much for separate calls).

``--schemes`` runs no training: for the preset's problem it scores the plain coarse solver with
each of the problem's coarse schemes on 1x, 2x and 4x grids (4 test trajectories, 50 coarse
steps), to show how much error a hybrid has to remove and how it falls with the grid.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

#: training-time budgets of the presets on 2 CPU cores (the hybrid model's targets)
BUDGET_S = {"hybrid_burgers": 180, "hybrid_navier_stokes": 1200, "hybrid_navier_stokes_low_viscosity": 1200}


def train(preset: str, outputs: Path, extra: list[str]) -> tuple[Path, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sciml_cli", "train", f"experiment={preset}",
                           f"paths.outputs={outputs}", "output=json", *extra],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"sciml train {preset} {' '.join(extra)} failed:\n{proc.stdout}\n{proc.stderr}") from None
    if proc.returncode:
        raise SystemExit(f"sciml train {preset} {' '.join(extra)} failed: {result.get('error')}")
    return Path(result["run_dir"]), wall


def best_time(fn, device: torch.device, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t)
    return best


def score(run: Path, device: str, repeats: int) -> dict:
    from sciml_cli.commands.eval import restore
    from sciml_cli.models.hybrid import FINER

    _, problem, model, dev = restore(run / "checkpoints" / "best.pt", device)
    evaluation = model.evaluate(problem, split="test")
    reference = model.trajectories(problem, "test")
    steps = reference.shape[1] - 1
    with torch.no_grad():
        times = {"hybrid": best_time(lambda: model.rollout(problem, reference[:, 0], steps), dev, repeats)}
        for factor in (1, *FINER):
            n = factor * model.resolution
            if problem.fine_resolution % n == 0:
                times[f"solver_{factor}x"] = best_time(
                    lambda n=n: problem.solver_trajectories("test", reference.shape[0], steps, n), dev, repeats)
    return {"run": str(run), "unroll": model.unroll, "test_steps": steps, "dt": model.dt, "n_test": reference.shape[0],
            "device": str(dev), "metrics": evaluation.metrics, "seconds": times,
            "curves": evaluation.details["curves"]}


def against(run: Path, checkout: Path, rounds: int) -> dict:
    """Time the rollout of ``run`` with this code, with ``checkout``'s code and the 2x solver, in
    turns; the medians of the per-round ratios."""
    import importlib.util
    import statistics

    from omegaconf import OmegaConf

    from sciml_cli.commands.eval import restore

    if "sciml_against" not in sys.modules:
        spec = importlib.util.spec_from_file_location("sciml_against", checkout / "sciml_cli" / "__init__.py",
                                                      submodule_search_locations=[str(checkout / "sciml_cli")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["sciml_against"] = module
        spec.loader.exec_module(module)
    from sciml_against.models.hybrid import Hybrid as Other

    _, problem, model, _ = restore(run / "checkpoints" / "best.pt", "cpu")
    config = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "config.yaml").model)
    other = Other(problem, **{k: v for k, v in config.items() if k != "_target_"})
    other = other.to(next(model.parameters()).dtype)
    other.load_state_dict(model.state_dict())
    reference = model.trajectories(problem, "test")
    initial, steps = reference[:, 0], reference.shape[1] - 1
    calls = {"this": lambda: model.rollout(problem, initial, steps),
             "other": lambda: other.rollout(problem, initial, steps),
             "solver_2x": lambda: problem.solver_trajectories("test", reference.shape[0], steps, 2 * model.resolution)}
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    with torch.no_grad():
        difference = (calls["this"]() - calls["other"]()).abs().max() / reference.abs().max()
        for _ in range(rounds):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                seconds[name].append(time.perf_counter() - start)

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(seconds[a], seconds[b]))

    return {"max_difference": difference.item(), "medians": {k: statistics.median(v) for k, v in seconds.items()},
            "this/other": ratio("this", "other"), "this/solver_2x": ratio("this", "solver_2x"),
            "other/solver_2x": ratio("other", "solver_2x")}


def schemes(preset: str, extra: list[str], samples: int = 4, steps: int = 50) -> None:
    import typing

    from sciml_cli import config
    from sciml_cli.commands import compose
    from sciml_cli.models.hybrid import _diverged_step, _rel_l2

    cfg, _ = compose("train", [f"experiment={preset}", *extra])
    cls = config.import_target(cfg.problem._target_, "problem")
    options = typing.get_args(typing.get_type_hints(cls.__init__)["coarse_scheme"])
    print(f"{preset}: plain coarse solver, mean rel-L2 over {steps} coarse steps of {samples} test trajectories "
          "(a diverged rollout: the step its error passed 100 %)")
    for scheme in options:
        cfg.problem.coarse_scheme = scheme
        problem = config.instantiate(cfg.problem).to("cpu", torch.float64)
        reference = problem.reference_trajectories("test", samples, steps)
        row = []
        for factor in (1, 2, 4):
            plain = problem.solver_trajectories("test", samples, steps, factor * problem.coarse_resolution)
            curve = _rel_l2(plain[:, 1:], reference[:, 1:], reference.dim() - 2).mean(0)
            lost = _diverged_step(curve)
            row.append(f"{curve.mean().item():.2e}" if lost is None else f"diverges at step {lost}")
        print(f"  {scheme:10s} " + "  ".join(f"{f}x: {e}" for f, e in zip((1, 2, 4), row)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(BUDGET_S))
    ap.add_argument("--runs", nargs=2, type=Path, metavar=("LOOP", "ONESTEP"),
                    help="score two existing runs instead of training")
    ap.add_argument("--schemes", choices=sorted(BUDGET_S), help="score the coarse schemes of a preset's problem")
    ap.add_argument("--scheme-samples", type=int, default=4, help="--schemes: test trajectories")
    ap.add_argument("--scheme-steps", type=int, default=50, help="--schemes: coarse steps")
    ap.add_argument("--outputs", type=Path, default=Path("outputs/bench_hybrid"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--against", type=Path, metavar="DIR", help="with --runs: time another checkout's code too")
    ap.add_argument("--rounds", type=int, default=15, help="--against: turns of each rollout")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--figure", type=Path)
    ap.add_argument("overrides", nargs="*", help="extra overrides for both trainings")
    args = ap.parse_args()
    if args.schemes:
        return schemes(args.schemes, args.overrides, args.scheme_samples, args.scheme_steps)
    if not args.preset and not args.runs:
        ap.error("give --preset or --runs")
    if args.against:
        if not args.runs:
            ap.error("--against needs --runs")
        for run in dict.fromkeys(args.runs):
            r = against(run, args.against, args.rounds)
            m = r["medians"]
            print(f"{run}: rollout, median of {args.rounds} turns: this code {m['this']:.4f} s, {args.against} "
                  f"{m['other']:.4f} s, solver on the 2x grid {m['solver_2x']:.4f} s; per turn this/other "
                  f"{r['this/other']:.3f}, this/2x solver {r['this/solver_2x']:.3f}, other/2x solver "
                  f"{r['other/solver_2x']:.3f}; largest difference of the rollouts {r['max_difference']:.1e} "
                  "of the reference's largest value")
        return

    walls: dict[str, float | None] = {"loop": None, "onestep": None}
    if args.runs:
        loop_run, onestep_run = args.runs
    else:
        device = [f"trainer.device={args.device}"]
        loop_run, walls["loop"] = train(args.preset, args.outputs, [*device, *args.overrides])
        onestep_run, walls["onestep"] = train(args.preset, args.outputs, [*device, "model.unroll=1", *args.overrides])
    loop, onestep = score(loop_run, args.device, args.repeats), score(onestep_run, args.device, args.repeats)
    m, s = loop["metrics"], loop["seconds"]
    targets = {
        "4x below the coarse solver": m["rel_l2_coarse"] / m["rel_l2"] >= 4,
        "below the one-step model": m["rel_l2"] < onestep["metrics"]["rel_l2"],
        "no worse than the solver on the 2x grid": m["rel_l2"] <= m.get("rel_l2_solver_2x", -1.0),
        "faster than the solver on the 2x grid": s["hybrid"] < s.get("solver_2x", 0.0),
        "bounded over >= 10x the unroll": (loop["test_steps"] >= 10 * loop["unroll"] and m["rel_l2_last_step"] < 1
                                           and m["max_abs_ratio"] < 2),
    }
    if walls["loop"] is not None and args.preset:
        targets[f"training within {BUDGET_S[args.preset]} s"] = walls["loop"] <= BUDGET_S[args.preset]
    result = {"preset": args.preset, "machine": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "train_wall_s": walls, "loop": loop, "onestep": onestep,
              "targets": targets}

    print(f"test split: {loop['n_test']} unseen initial conditions, {loop['test_steps']} coarse steps "
          f"(training unroll {loop['unroll']}), device {loop['device']}")
    print(f"{'method':34s} {'mean rel-L2':>12s} {'last step':>10s} {'rollout s':>10s}  error > 100 % from step")
    rows = [(f"solver in the loop (unroll {loop['unroll']})", m["rel_l2"], m["rel_l2_last_step"], s["hybrid"],
             m.get("diverged_step_hybrid")),
            ("one-step correction (unroll 1)", onestep["metrics"]["rel_l2"], onestep["metrics"]["rel_l2_last_step"],
             onestep["seconds"]["hybrid"], onestep["metrics"].get("diverged_step_hybrid"))]
    for key, label in (("1x", "coarse solver alone"), ("2x", "solver on the 2x grid"), ("4x", "solver on the 4x grid")):
        curve = loop["curves"].get("coarse solver" if key == "1x" else f"solver on {key} grid")
        if curve is not None:
            rows.append((label, sum(curve) / len(curve), curve[-1], s.get(f"solver_{key}"),
                         m.get("diverged_step_coarse" if key == "1x" else f"diverged_step_solver_{key}")))
    for name, mean, last, sec, lost in rows:
        print(f"{name:34s} {mean:12.3e} {last:10.3e} {sec:10.4f}  {'never' if lost is None else int(lost)}")
    print(f"improvement over the coarse solver: {m['rel_l2_coarse'] / m['rel_l2']:.2f}x; "
          f"training wall time {walls['loop'] or float('nan'):.0f} s (one-step {walls['onestep'] or float('nan'):.0f} s)")
    for name, ok in targets.items():
        print(f"  [{'met' if ok else 'NOT met'}] {name}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.figure:
        from sciml_cli import plotting

        curves = {f"solver in the loop (unroll {loop['unroll']})": loop["curves"]["hybrid"],
                  "one-step correction": onestep["curves"]["hybrid"],
                  **{k: v for k, v in loop["curves"].items() if k != "hybrid"}}
        t = torch.arange(1, loop["test_steps"] + 1, dtype=torch.float64) * loop["dt"]
        plotting.save(plotting.curves_figure(t, curves, "t", "relative L2 error", title=args.preset or "",
                                               ceiling=10.0), args.figure)


if __name__ == "__main__":
    main()
