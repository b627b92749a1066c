"""Measure an FNO preset end to end: train, then score the test split against its target.

    .venv/bin/python scripts/bench_fno_presets.py PRESET [--resolutions 256,512] [--keep DIR]
        [--json out.json] [-- extra train overrides ...]

PRESET is one of the ``experiment=fno_*`` presets below. Runs the real commands,
``sciml train experiment=PRESET`` then ``sciml eval run=<run> resolutions=[...]``, in a temporary
directory (or ``--keep DIR``, whose ``outputs/data`` cache is then reused), and prints one JSON
report: the whole train command's wall time (data generation on first use included), the
training time, the test rel-L2 (mean, median, max) with the preset's target, the resolution
sweep, the problem's classical baseline, and the peak resident memory of the train process
(host memory; ``scripts/bench_fno.py`` measures GPU memory).

Measured figures and the commands that produced them are in the README's table of presets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: preset -> (problem-model directory, test rel-L2 target, default eval resolutions)
PRESETS = {
    "fno_burgers_quick": ("burgers-fno", 1e-2, [256, 512, 1024]),
    "fno_burgers": ("burgers-fno", 1.5e-3, [256, 512, 1024, 2048]),
    "fno_heat2d": ("heat2d-fno", 5e-3, [64, 128]),
    "fno_navier_stokes_small": ("navier_stokes-fno", 1e-2, [32, 64]),
    "fno_navier_stokes": ("navier_stokes-fno", 0.0128, []),
}


def sciml(*args: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "sciml_cli", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"sciml {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("--resolutions", help="comma-separated eval resolutions (default: the preset's)")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep the run and the data")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("overrides", nargs="*", help="extra `sciml train` overrides (after --)")
    args = parser.parse_args()
    run_name, target, resolutions = PRESETS[args.preset]
    if args.resolutions:
        resolutions = [int(r) for r in args.resolutions.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        before = {p for p in (work / "outputs" / "train" / run_name).glob("*")}
        train = ["train", f"experiment={args.preset}", "trainer.callbacks.progress=null", *args.overrides]
        start = time.perf_counter()
        sciml(*train, cwd=work)
        wall = time.perf_counter() - start
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        (run,) = {p for p in (work / "outputs" / "train" / run_name).glob("*")} - before
        metrics = json.loads((run / "metrics.json").read_text())
        run_info = json.loads((run / "run.json").read_text())
        evaluate = ["eval", f"run={run}"] + ([f"resolutions=[{','.join(map(str, resolutions))}]"] if resolutions else [])
        sciml(*evaluate, cwd=work)
        result = json.loads((run / "eval.json").read_text())

    import torch

    test = result["metrics"]
    report = {
        "commands": ["sciml " + " ".join(train), "sciml " + " ".join(evaluate[:1] + ["run=<run>"] + evaluate[2:])],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "device": run_info.get("device"),
        "command_wall_s": round(wall, 1),
        "training_wall_s": metrics["wall_time_s"],
        "steps": metrics["step"],
        "val_rel_l2": metrics["val/rel_l2"],
        "test_rel_l2": test["rel_l2"],
        "test_rel_l2_median": test["rel_l2_median"],
        "test_rel_l2_max": test["rel_l2_max"],
        "target_rel_l2": target,
        "meets_target": None if target is None else test["rel_l2"] <= target,
        "baselines": result.get("baselines", {}),
        "resolution_sweep": {r: m["rel_l2"] for r, m in result.get("resolution_sweep", {}).items()},
        "peak_rss_mib": round(peak_mib),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
