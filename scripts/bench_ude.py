"""Neural ODE vs UDE + symbolic regression on Lotka–Volterra: the targets of the presets, over seeds.

For each seed ``s`` (the trainer's seed and the noise of the data, ``problem.noise_seed=s``) the
presets ``node_lotka_volterra``, ``ude_lotka_volterra`` (UDE paper, Rackauckas et al. 2020) and
``ude_lotka_volterra_course`` are trained by ``sciml train`` (one at a time). Reported per run:
wall time, rel-L2 against the truth in the window and on the extrapolation window, the recovered
equation, the relative error of beta and gamma, and the largest spurious coefficient relative to
the largest. Then the trainer's overhead: seconds per Adam iteration of the neural ODE through
the trainer against a bare loop (torchdiffeq's ``odeint`` on the same network and data, Adam),
interleaved, median of ``--repeats``, with fixed-step RK4 (an adaptive solver's step count
would differ between the two as their iterates drift apart). And one figure of data, truth, neural ODE, UDE networks and
recovered equation on the UDE paper's setup (seed 0).

``--floor N`` measures what the data allow at best: the true equation (alpha, delta known as the
UDE is given them; beta, gamma and the initial state free) fitted by maximum likelihood
(least squares through the ODE, each state weighted by its noise level) to the observations of
noise seeds 0 .. N-1, scored like the presets. No method that sees only these data can be
expected to beat it; on the UDE paper's setup it misses the targets on most noise draws.

    python scripts/bench_ude.py [--seeds 0 1 2] [--json out.json] [--figure ude.png]
    python scripts/bench_ude.py --presets --overhead-steps 0 --floor 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["node_lotka_volterra", "ude_lotka_volterra", "ude_lotka_volterra_course"]
QUIET = ["trainer.callbacks.progress=null", "trainer.callbacks.tensorboard=null"]


def train(preset: str, seed: int, out: Path, overrides: list[str] = ()) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sciml_cli", "train", f"experiment={preset}",
                           f"trainer.seed={seed}", f"problem.noise_seed={seed}", *QUIET, f"paths.outputs={out}",
                           *overrides],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{preset} seed {seed} failed:\n{proc.stderr}")
    run = next(p for p in (out / "train").glob("*/*") if p.is_dir())
    m = json.loads((run / "metrics.json").read_text())
    row = {"preset": preset, "seed": seed, "wall_s": round(wall, 1), "train_s": m["wall_time_s"],
           "rel_l2": m["val/rel_l2"], "rel_l2_extrapolation": m["val/rel_l2_extrapolation"], "run": str(run)}
    if "val/spurious_ratio" in m:
        log = (run / "train.log").read_text()
        eq = [ln.split("symbolic regression: ", 1)[1] for ln in log.splitlines() if "symbolic regression: " in ln]
        row.update(beta=m.get("val/coef_rel_error/beta"), gamma=m.get("val/coef_rel_error/gamma"),
                   spurious=m["val/spurious_ratio"], equation=eq[-1] if eq else None,
                   network_rel_l2_extrapolation=m.get("val/network_rel_l2_extrapolation"))
    return row


def overhead(steps: int, repeats: int) -> dict:
    """Seconds per Adam iteration: the trainer against a bare torchdiffeq loop, same model."""
    import torch
    from torchdiffeq import odeint

    from sciml_cli.models.neural_ode import NeuralODE
    from sciml_cli.problems.lotka_volterra import LotkaVolterra
    from sciml_cli.training import Phase, Trainer

    torch.set_num_threads(1)
    # a fixed-step method: both loops then evaluate the network equally often at every iteration
    kw = {"width": 32, "depth": 2, "method": "rk4", "step_size": 0.1}

    def bare() -> float:
        torch.manual_seed(0)
        problem = LotkaVolterra().to("cpu", torch.float64)
        model = NeuralODE(problem, **kw).double()
        data = problem.trajectories()
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        f = lambda t, u: model.out_scale * model.net(u)  # noqa: E731
        start = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad()
            u = odeint(f, model.u0, data.t, method="rk4", options={"step_size": 0.1}).transpose(0, 1)
            ((u - data.observed) / model.state_scale).pow(2).mean().backward()
            opt.step()
        return (time.perf_counter() - start) / steps

    def trainer() -> float:
        problem = LotkaVolterra()
        torch.manual_seed(0)
        phase = Phase("adam", steps, lambda p: torch.optim.Adam(p, lr=1e-2))
        t = Trainer([phase], device="cpu", dtype="float64", val_every=10 ** 9, checkpoint_every=10 ** 9,
                    log_every=10, callbacks={})
        model = NeuralODE(problem, **kw)
        with tempfile.TemporaryDirectory() as d:
            t.fit(model, problem, Path(d), "")
        # the final validation and checkpoint are not iterations: time them out
        return (t.elapsed - _final_work(t, model, problem)) / steps

    bare(), trainer()  # warm up
    a, b = [], []
    for _ in range(repeats):
        a.append(bare())
        b.append(trainer())
    ta, tb = statistics.median(a), statistics.median(b)
    return {"bare_s_per_iter": ta, "trainer_s_per_iter": tb, "overhead": tb / ta - 1, "steps": steps}


def floor(setup: str, draws: int) -> dict:
    """The maximum-likelihood fit of the true equation to noise draws ``0 .. draws - 1``."""
    import torch
    from torchdiffeq import odeint

    from sciml_cli.problems.lotka_volterra import LotkaVolterra

    torch.set_num_threads(1)
    rows = []
    for seed in range(draws):
        problem = LotkaVolterra(setup=setup, noise_seed=seed).to("cpu", torch.float64)
        c, data = problem.coefficients(), problem.trajectories()
        sigma = problem.noise_std(data.truth)[0]  # the noise level the data were drawn with
        beta = torch.tensor(c["beta"] * 0.8, requires_grad=True)
        gamma = torch.tensor(c["gamma"] * 1.2, requires_grad=True)
        u0 = data.observed[0, 0].clone().requires_grad_(True)

        def f(t, u):
            x, y = u[..., 0], u[..., 1]
            return torch.stack([c["alpha"] * x - beta * x * y, gamma * x * y - c["delta"] * y], -1)

        opt = torch.optim.LBFGS([beta, gamma, u0], lr=1.0, max_iter=200, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-10, tolerance_change=1e-14)

        def closure():
            opt.zero_grad()
            loss = ((odeint(f, u0, data.t, rtol=1e-7, atol=1e-9) - data.observed[0]) / sigma).pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            t = torch.cat([data.t, data.t_extrapolate])
            after = odeint(f, u0, t, rtol=1e-9, atol=1e-11)[data.t.numel():]
            truth = data.truth_extrapolate[0]
            rows.append({"seed": seed, "beta": abs(beta.item() - c["beta"]) / c["beta"],
                         "gamma": abs(gamma.item() - c["gamma"]) / c["gamma"],
                         "rel_l2_extrapolation": ((after - truth).norm() / truth.norm()).item()})
    keys = ("beta", "gamma", "rel_l2_extrapolation")
    met = sum(all(r[k] <= 0.05 for k in keys) for r in rows)
    return {"setup": setup, "draws": draws, "draws_meeting_all_targets": met, "rows": rows,
            **{f"median_{k}": statistics.median(r[k] for r in rows) for k in keys}}


def _final_work(trainer, model, problem) -> float:
    start = time.perf_counter()
    model.eval()
    model.evaluate(problem, split="val")
    model.train()
    return time.perf_counter() - start


def figure(rows: list[dict], path: Path) -> None:
    import torch

    from sciml_cli import plotting
    from sciml_cli.commands.eval import restore

    node = next(r for r in rows if r["preset"] == "node_lotka_volterra" and r["seed"] == 0)
    ude = next(r for r in rows if r["preset"] == "ude_lotka_volterra" and r["seed"] == 0)
    _, problem, m_node, _ = restore(Path(node["run"]) / "checkpoints" / "last.pt", "cpu")
    _, _, m_ude, _ = restore(Path(ude["run"]) / "checkpoints" / "last.pt", "cpu")
    with torch.no_grad():
        curves = {"neural ODE": m_node.evaluate(problem).prediction, **m_ude.curves(problem)}
    plotting.save(plotting.trajectory_figure(problem.trajectories(), curves, problem.state_names,
                                             "Lotka-Volterra (UDE paper setup, seed 0)"), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--presets", nargs="*", default=PRESETS)
    ap.add_argument("--floor", type=int, default=0, metavar="N",
                    help="also fit the true equation by maximum likelihood to N noise draws of each --floor-setups")
    ap.add_argument("--floor-setups", nargs="+", default=["ude_paper"], choices=["ude_paper", "course"])
    ap.add_argument("--overrides", nargs="*", default=[], help="extra overrides for every UDE run, e.g. model.sindy_select=aicc")
    ap.add_argument("--overhead-steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--figure", type=Path, default=Path("ude_lotka_volterra.png"))
    ap.add_argument("--outputs", type=Path, default=Path(tempfile.mkdtemp(prefix="bench_ude_")))
    args = ap.parse_args()
    rows = []
    for preset in args.presets:
        for seed in args.seeds:
            extra = args.overrides if preset.startswith("ude") else []
            row = train(preset, seed, args.outputs / f"{preset}-{seed}", extra)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "run"}), flush=True)
    print("\n| preset | seed | wall s | rel-L2 window | rel-L2 extrapolation | beta err | gamma err | spurious | recovered |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f = lambda k: "" if r.get(k) is None else f"{r[k]:.2e}"  # noqa: E731
        print(f"| {r['preset']} | {r['seed']} | {r['wall_s']:.0f} | {f('rel_l2')} | {f('rel_l2_extrapolation')} | "
              f"{f('beta')} | {f('gamma')} | {f('spurious')} | {r.get('equation') or ''} |")
    result = {"runs": rows}
    if args.overhead_steps:
        result["overhead"] = o = overhead(args.overhead_steps, args.repeats)
        print(f"\ntrainer {o['trainer_s_per_iter'] * 1e3:.2f} ms/iter, bare torchdiffeq loop "
              f"{o['bare_s_per_iter'] * 1e3:.2f} ms/iter: overhead {100 * o['overhead']:+.1f} %")
    if args.floor:
        result["floor"] = []
        print("\n| setup (true equation, maximum likelihood) | draws | median beta err | median gamma err "
              "| median rel-L2 extrapolation | draws meeting all three targets |")
        print("|---|---|---|---|---|---|")
        for setup in args.floor_setups:
            fl = floor(setup, args.floor)
            result["floor"].append(fl)
            print(f"| {setup} | {fl['draws']} | {fl['median_beta']:.2%} | {fl['median_gamma']:.2%} | "
                  f"{fl['median_rel_l2_extrapolation']:.2%} | {fl['draws_meeting_all_targets']} |")
            print("  first draws: " + ", ".join(f"seed {r['seed']}: beta {r['beta']:.2%}, gamma {r['gamma']:.2%}, "
                                                 f"extrapolation {r['rel_l2_extrapolation']:.2%}" for r in fl["rows"][:3]))
    if "node_lotka_volterra" in args.presets and "ude_lotka_volterra" in args.presets and 0 in args.seeds:
        figure(rows, args.figure)
        print(f"figure: {args.figure}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
