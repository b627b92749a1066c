"""Measure a hyperparameter search end to end: a 16-trial Optuna study on the joblib launcher
(2 workers) against the same study on Hydra's basic launcher (one trial after another), and the
best trial against the preset's own settings.

    .venv/bin/python scripts/bench_sweep.py [--trials 16] [--steps 250] [--keep DIR] [--json out.json]

Runs the real commands in a temporary directory (or ``--keep DIR``):

    sciml sweep experiment=fno_burgers_quick hparams_search=fno_burgers_quick <short> [hydra/launcher=joblib]
    sciml train experiment=fno_burgers_quick <short>

where ``<short>`` is ``optim.steps=<steps>`` (the preset's 2500 shortened; the cosine schedule
follows) and a validation at the end. The dataset is generated once before the timed commands.
Both studies use the same sampler seed, so their first trials coincide. Reports each sweep's
wall time and best validation rel-L2, their ratio (target: joblib <= 0.6x basic), and the
preset's own validation rel-L2 (target: the best trial beats it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _sciml(*args: str, cwd: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sciml_cli", *args, "output=json"], cwd=cwd, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"sciml {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--keep", type=Path, help="work in this directory and keep the runs")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    short = ["experiment=fno_burgers_quick", f"optim.steps={args.steps}", f"trainer.val_every={args.steps}",
             f"trainer.checkpoint_every={args.steps}", "trainer.callbacks.progress=null",
             "trainer.callbacks.tensorboard=null"]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        _sciml("train", *short, "optim.steps=1", "trainer.val_every=1", cwd=work)  # the dataset, once
        defaults, default_wall = _sciml("train", *short, cwd=work)
        report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                  "trial": " ".join(short), "trials": args.trials,
                  "preset_defaults": {"val_rel_l2": defaults["metrics"]["val/rel_l2"], "wall_s": round(default_wall, 1)}}
        for launcher, extra in (("basic", []), ("joblib", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])):
            result, wall = _sciml("sweep", *short, "hparams_search=fno_burgers_quick", f"hydra.sweeper.n_trials={args.trials}",
                                  f"hydra.sweeper.study_name=bench_{launcher}", *extra, cwd=work)
            report[launcher] = {"command": "sciml sweep " + " ".join([*short, "hparams_search=fno_burgers_quick",
                                                                         f"hydra.sweeper.n_trials={args.trials}", *extra]),
                                "wall_s": round(wall, 1), "best_val_rel_l2": result["best_value"],
                                "finished": sum(j["status"] == "finished" for j in result["jobs"])}
    report["joblib_over_basic"] = round(report["joblib"]["wall_s"] / report["basic"]["wall_s"], 3)
    report["targets"] = {
        "joblib <= 0.6x basic": report["joblib_over_basic"] <= 0.6,
        "best trial beats the preset's settings": min(report["basic"]["best_val_rel_l2"], report["joblib"]["best_val_rel_l2"])
        < report["preset_defaults"]["val_rel_l2"],
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
