"""Measure the `pinn_heat` preset: accuracy against the exact solution, wall time, peak memory.

    .venv/bin/python scripts/bench_pinn_heat.py [extra overrides ...]

Runs the real command (`sciml train experiment=pinn_heat`) in a temporary directory and reports
the whole command's wall time (start-up included), the training time, the final rel-L2 and the
peak resident memory of the training process.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    extra = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "sciml_cli", "train", "experiment=pinn_heat",
               "trainer.callbacks.progress=null", *extra]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        (metrics_file,) = Path(tmp, "outputs", "train", "heat-pinn").glob("*/metrics.json")
        metrics = json.loads(metrics_file.read_text())
    import torch

    report = {
        "command": "sciml train experiment=pinn_heat " + " ".join(extra),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "command_wall_s": round(wall, 1),
        "training_wall_s": metrics["wall_time_s"],
        "steps": metrics["step"],
        "val_rel_l2": metrics["val/rel_l2"],
        "val_max_abs": metrics["val/max_abs"],
        "peak_rss_mib": round(peak_mib),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
