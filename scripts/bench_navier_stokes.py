"""Cost and accuracy of the Navier–Stokes reference solver on this machine.

Three questions, for Li et al.'s (2021) nu = 1e-3 data (64 x 64 output, t_end = 50):

1. What does the paper-faithful setting cost?  256 x 256 grid, dt = 1e-4: 500k steps per
   trajectory. Timed over a few hundred steps and extrapolated (steps cost the same throughout:
   nothing in a step depends on the state but the arithmetic).
2. How close is a cheaper reference? 256 x 256 with ``--ref-dt`` (default 1e-3) against
   dt = 1e-4 over ``--check-t`` time units.
3. Does a coarse 64 x 64 solver with a large, CFL-limited dt reproduce the fine reference?
   Each coarse run starts from the reference's t = 0 field (the 256 field subsampled to 64, as a
   dataset user would) and is compared with the reference snapshots at every recorded time.

Usage (from the repository root)::

    .venv/bin/python scripts/bench_navier_stokes.py                  # full run, ~45 min on 2 cores
    .venv/bin/python scripts/bench_navier_stokes.py --t-end 5 --check-t 0.2   # a quick look

Prints a table and writes JSON with ``--json PATH``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

from sciml_cli.problems.navier_stokes import NavierStokes


def steps_per_second(
    problem: NavierStokes, n: int, batch: int, dt: float, n_steps: int, windows: int = 5
) -> tuple[float, float]:
    """Best and median steps/s over ``windows`` timing windows of ``n_steps`` steps each.

    The best window estimates the machine's uncontended speed; the median shows what other
    jobs on a shared machine cost.
    """
    w_hat = torch.fft.rfft2(problem.initial_vorticity(batch, n, torch.Generator().manual_seed(0)))
    for _ in range(3):  # build and cache the operators, warm the FFT plans
        w_hat = problem.step_spectral(w_hat, dt)
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(n_steps):
            w_hat = problem.step_spectral(w_hat, dt)
        rates.append(n_steps / (time.perf_counter() - start))
    rates.sort()
    return rates[-1], rates[len(rates) // 2]


def trajectory(
    problem: NavierStokes, w0: torch.Tensor, dt: float, record_every: float, n_records: int
):
    """Snapshots ``[B, n_records + 1, n, n]`` of ``step_spectral`` runs from ``w0``, and the wall time."""
    n = w0.shape[-1]
    per_record = round(record_every / dt)
    start = time.perf_counter()
    w_hat = torch.fft.rfft2(w0)
    out = [w0]
    with torch.no_grad():
        for _ in range(n_records):
            for _ in range(per_record):
                w_hat = problem.step_spectral(w_hat, dt)
            w = torch.fft.irfft2(w_hat, s=(n, n))
            out.append(w)
            if not torch.isfinite(w).all():
                break
    return torch.stack(out, dim=1), time.perf_counter() - start


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-time relative L2 error over the grid, ``[B, T]``."""
    return torch.linalg.vector_norm(a - b, dim=(-2, -1)) / torch.linalg.vector_norm(b, dim=(-2, -1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-samples", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--t-end", type=float, default=50.0)
    ap.add_argument("--fine", type=int, default=256)
    ap.add_argument("--coarse", type=int, default=64)
    ap.add_argument("--ref-dt", type=float, default=1e-3)
    ap.add_argument(
        "--check-t", type=float, default=1.0, help="horizon of the ref-dt vs 1e-4 check"
    )
    ap.add_argument(
        "--coarse-dts", type=float, nargs="+", default=[1e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1]
    )
    ap.add_argument(
        "--timing-steps", type=int, default=200, help="per window (1/8 on the fine grid)"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--cache", type=Path, default=None, help="reuse/store the fine reference here")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--timing-only", action="store_true", help="stop after the cost figures")
    ap.add_argument("--skip-timing", action="store_true", help="only the accuracy comparison")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float64)
    report: dict = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "loadavg_at_start": os.getloadavg(),
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    paper_steps = round(50.0 / 1e-4)

    # 1. cost of the paper-faithful setting ----------------------------------------------------
    timing = []
    for scheme in () if args.skip_timing else ("cn_heun", "cn_euler"):
        p = NavierStokes(scheme=scheme)
        for n in (args.fine, args.coarse):
            for batch in sorted({1, args.n_samples}):
                reps = args.timing_steps if n <= 64 else max(10, args.timing_steps // 8)
                sps, median = steps_per_second(p, n, batch, 1e-4, reps)
                hours = paper_steps / sps / 3600
                timing.append(
                    {
                        "scheme": scheme,
                        "grid": n,
                        "batch": batch,
                        "steps_per_s_best": sps,
                        "steps_per_s_median": median,
                        "hours_per_batch_to_t50_at_dt_1e-4": hours,
                        "samples_per_s": batch * sps / paper_steps,
                    }
                )
                print(
                    f"[cost] {scheme:8s} {n:3d}^2 batch {batch}: {sps:8.1f} steps/s "
                    f"(median {median:8.1f}) -> "
                    f"{hours:8.2f} h per batch for 500k steps, {batch * sps / paper_steps:.2e} samples/s"
                )
    report["paper_faithful_cost"] = timing
    if args.timing_only:
        print(json.dumps(report["machine"]))
        return

    # 2. the fine reference ----------------------------------------------------------------------
    n_records = round(args.t_end)
    ref_problem = NavierStokes(
        t_end=float(n_records),
        record_every=1.0,
        dt=args.ref_dt,
        resolution=args.coarse,
        fine_resolution=args.fine,
    )
    cached = None
    if args.cache and args.cache.is_file():
        cached = torch.load(args.cache, weights_only=True)
        if cached.get("key") != [
            args.fine,
            args.coarse,
            args.ref_dt,
            n_records,
            args.n_samples,
            args.seed,
        ]:
            cached = None
    if cached is None:
        sol = ref_problem.solve(n_samples=args.n_samples, seed=args.seed)
        cached = {
            "key": [args.fine, args.coarse, args.ref_dt, n_records, args.n_samples, args.seed],
            "w": sol.fields["w"],
            "wall": sol.attrs["wall_time_s"],
            "max_cfl": sol.attrs["max_cfl"],
        }
        if args.cache:
            torch.save(cached, args.cache)
    reference = cached["w"]
    print(
        f"[reference] {args.fine}^2, dt={args.ref_dt:g}, t_end={n_records}: {cached['wall']:.0f} s, "
        f"max CFL {cached['max_cfl']:.3f}, |w| max {reference.abs().max().item():.3f}"
    )
    report["reference"] = {
        "grid": args.fine,
        "dt": args.ref_dt,
        "t_end": n_records,
        "wall_s": cached["wall"],
        "max_cfl": cached["max_cfl"],
    }

    # the reference's own time error: ref-dt against the paper's 1e-4 on the fine grid
    w0_fine = ref_problem.initial_vorticity(
        args.n_samples, args.fine, torch.Generator().manual_seed(args.seed)
    )
    fine_ref, _ = trajectory(ref_problem, w0_fine, args.ref_dt, args.check_t, 1)
    fine_paper, wall = trajectory(ref_problem, w0_fine, 1e-4, args.check_t, 1)
    dt_err = rel_l2(fine_ref[:, -1], fine_paper[:, -1]).max().item()
    print(
        f"[reference] dt={args.ref_dt:g} vs dt=1e-4 on {args.fine}^2 at t={args.check_t:g}: "
        f"rel L2 {dt_err:.2e} ({wall:.0f} s for the 1e-4 run)"
    )
    report["reference"]["rel_l2_vs_dt_1e-4_at_check_t"] = dt_err

    # 3. coarse solver with large dt against the reference -------------------------------------
    coarse = NavierStokes(resolution=args.coarse, fine_resolution=args.coarse)
    w0 = reference[:, 0]
    rows = []
    for dt in args.coarse_dts:
        traj, wall = trajectory(coarse, w0, dt, 1.0, n_records)
        finite = traj.shape[1] == n_records + 1 and bool(torch.isfinite(traj).all())
        row = {
            "grid": args.coarse,
            "dt": dt,
            "wall_s": wall,
            "finite": finite,
            "samples_per_s": args.n_samples / wall * (n_records / 50.0) if finite else 0.0,
        }
        if finite:
            err = rel_l2(traj, reference).amax(dim=0)  # worst sample, [T]
            at = {t: err[t].item() for t in (1, 10, 25, 50) if t <= n_records}
            at[n_records] = err[-1].item()
            row.update(
                {
                    "max_cfl": coarse.cfl(traj.flatten(0, 1), dt).max().item(),
                    "rel_l2_max_over_t": err.max().item(),
                    "rel_l2_at_t": at,
                }
            )
            shown = ", ".join(f"t={t} {e:.2e}" for t, e in at.items())
            print(
                f"[coarse] {args.coarse}^2 dt={dt:<6g} CFL {row['max_cfl']:.3f}  {wall:7.1f} s  "
                f"rel L2 vs ref: {shown}, max {row['rel_l2_max_over_t']:.2e}"
            )
        else:
            print(f"[coarse] {args.coarse}^2 dt={dt:<6g} non-finite (unstable)")
        rows.append(row)
    report["coarse_vs_reference"] = rows
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float))
        print(f"wrote {args.json}")
    if not math.isfinite(dt_err):
        raise SystemExit("reference check failed")


if __name__ == "__main__":
    main()
