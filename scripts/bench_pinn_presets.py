"""Measure a PINN preset over several seeds: accuracy, learned coefficients, wall time, memory.

    .venv/bin/python scripts/bench_pinn_presets.py <preset> [overrides ...] [--seeds 0 1 2]

e.g. ``scripts/bench_pinn_presets.py pinn_burgers --seeds 0 1 2`` or
``scripts/bench_pinn_presets.py pinn_burgers_inverse problem.noise=0.01``. Each seed runs the
real command (``sciml train experiment=<preset> trainer.seed=<s>``) in a temporary directory,
one after the other (never two trainings at once on a small machine). Reports per seed the
validation rel-L2 against the exact solution over the whole reference grid (for Burgers,
Raissi's 256 x 100 grid), the learned coefficients' relative errors if any, training and
whole-command wall time and peak resident memory; and the median over seeds. One JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(preset: str, seed: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "sciml_cli", "train", f"experiment={preset}", f"trainer.seed={seed}",
               "trainer.callbacks.progress=null", *extra]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        subprocess.run(cmd, cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        (metrics_file,) = Path(tmp, "outputs", "train").glob("*/*/metrics.json")
        m = json.loads(metrics_file.read_text())
    out = {"seed": seed, "rel_l2": m["val/rel_l2"], "best_rel_l2": m["best/rel_l2"], "max_abs": m["val/max_abs"],
           "training_wall_s": m["wall_time_s"], "command_wall_s": round(wall, 1), "steps": m["step"],
           # the largest child so far: exact for the first run, an upper bound after it
           "peak_rss_mib": round(max(peak, before) / 1024)}
    out.update({k.removeprefix("val/"): v for k, v in m.items() if k.startswith(("val/coef", "val/coef_rel_err"))})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("extra", nargs="*", help="overrides for every seed's training")
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        runs.append(run(args.preset, seed, args.extra))
        print(json.dumps(runs[-1]), file=sys.stderr)
    import torch

    keys = [k for k in runs[0] if k not in ("seed", "steps")]
    report = {
        "command": f"sciml train experiment={args.preset} trainer.seed=<seed> " + " ".join(args.extra),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "runs": runs,
        "median": {k: statistics.median(r[k] for r in runs) for k in keys},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
