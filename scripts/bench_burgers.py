"""Benchmark the Burgers FNO-setup data generator: samples per second, and accuracy against dt.

Speed: ``Burgers.solve`` end to end (GRF draw, ETDRK4 on the fine grid, heat baseline,
subsampling) for 1200 samples on 1024 fine points, float64, with torch's default thread count
unless ``--threads`` is given. Target on the 2-core CPU: under 60 s.

Accuracy (``--accuracy``): relative L2 error of u(., 1) at the configured ``dt`` against a run
with ``dt / 16``, worst over 16 samples, for both GRF choices; this is what the default ``dt``
is chosen by.

    python scripts/bench_burgers.py [--n-samples 1200] [--fine-resolution 1024] [--resolution 256]
                                    [--dt 0.005] [--grf released|paper] [--device cpu|cuda]
                                    [--threads N] [--accuracy] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from sciml_cli.numerics.metrics import relative_l2
from sciml_cli.problems.burgers import Burgers


def speed(args: argparse.Namespace, device: torch.device) -> dict:
    problem = Burgers(setup="fno", grf=args.grf, fine_resolution=args.fine_resolution, dt=args.dt)
    problem.to(device, torch.float64)
    problem.solve(resolution=args.resolution, n_samples=8, seed=1)  # warm-up: FFT plans, allocator
    start = time.perf_counter()
    sol = problem.solve(resolution=args.resolution, n_samples=args.n_samples, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    return {
        "n_samples": args.n_samples, "fine_resolution": args.fine_resolution,
        "resolution": args.resolution, "dt": sol.attrs["dt"], "n_steps": sol.attrs["n_steps"],
        "grf": args.grf, "seconds": wall, "samples_per_s": args.n_samples / wall,
        "baseline_heat_rel_l2": sol.attrs["baseline_heat_rel_l2"],
        "amplitude_ratio": sol.attrs["amplitude_ratio"],
    }


def accuracy(args: argparse.Namespace, device: torch.device) -> list[dict]:
    rows = []
    for grf in ("released", "paper"):
        problem = Burgers(grf=grf, fine_resolution=args.fine_resolution).to(device, torch.float64)
        u0 = problem.random_initial_conditions(16, seed=0)
        ref = problem.evolve(u0, problem.t_end, dt=args.dt / 16)
        for factor in (4, 2, 1, 0.5):
            dt = args.dt * factor
            err = relative_l2(problem.evolve(u0, problem.t_end, dt=dt), ref).max().item()
            rows.append({"grf": grf, "dt": dt, "rel_l2_vs_dt/16": err})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=1200)
    parser.add_argument("--fine-resolution", type=int, default=1024)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--dt", type=float, default=0.005)
    parser.add_argument("--grf", choices=["released", "paper"], default="released")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    report = {
        "torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "load_average": os.getloadavg(),
    }
    report["speed"] = speed(args, device)
    s = report["speed"]
    print(f"{s['n_samples']} samples, {s['fine_resolution']} -> {s['resolution']} points, "
          f"dt={s['dt']:g} ({s['n_steps']} ETDRK4 steps), {report['threads']} threads on {device}: "
          f"{s['seconds']:.2f} s, {s['samples_per_s']:.1f} samples/s "
          f"(load average before: {report['load_average'][0]:.2f})")
    print(f"heat-equation baseline rel-L2 {s['baseline_heat_rel_l2']:.4f}, "
          f"|u(1)| / |u(0)| = {s['amplitude_ratio']:.4f}")
    if args.accuracy:
        report["accuracy"] = accuracy(args, device)
        for row in report["accuracy"]:
            print(f"  grf={row['grf']:8s} dt={row['dt']:<8g} "
                  f"rel-L2 vs dt/16: {row['rel_l2_vs_dt/16']:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
