"""Per-step cost of data-parallel training: 2 gloo processes against 1 process at half the batch.

    .venv/bin/python scripts/bench_ddp.py [--steps 300] [--points 8000] [--repeats 3] [--json out.json]

Both do the same work per process: a PINN on the heat equation (4 x 64 tanh MLP) whose global
batch of ``--points`` collocation points (plus 1/10 as many initial and boundary points) is
split over 2 ranks, against one process that holds half of it. The difference is the cost of
data parallelism: the averaging of gradients and losses after every backward, the agreement on
stop signals, and the sharding. Each process gets one thread (``OMP_NUM_THREADS=1``), so on a
2-core machine the ranks do not compete for cores. Times are the trainer's own wall time
(``wall_time_s`` in ``metrics.json``) over the steps, so start-up is not counted; the two
configurations alternate, and each figure is the median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def _run(points: int, steps: int, devices: int, cwd: Path) -> float:
    args = ["model.width=64", "model.depth=4", f"model.n_interior={points}", f"model.n_initial={points // 10}",
            f"model.n_boundary={points // 10}", "optim=adam", f"optim.steps={steps}", f"trainer.val_every={steps}",
            f"trainer.checkpoint_every={steps}", "trainer.callbacks.progress=null", "trainer.device=cpu",
            f"trainer.devices={devices}", "output=json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "sciml_cli", "train", *args], cwd=cwd, capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"sciml train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    run = Path(json.loads(proc.stdout.strip().splitlines()[-1])["run_dir"])
    metrics = json.loads((run / "metrics.json").read_text())
    return 1e3 * metrics["wall_time_s"] / metrics["step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--points", type=int, default=8000, help="global batch of collocation points")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    a = parser.parse_args()
    one, two = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.repeats):
            one.append(_run(a.points // 2, a.steps, 1, Path(tmp)))
            two.append(_run(a.points, a.steps, 2, Path(tmp)))
    m1, m2 = statistics.median(one), statistics.median(two)
    result = {"steps": a.steps, "global_points": a.points, "one_process_half_batch_ms": one,
              "two_processes_ms": two, "median_one_ms": m1, "median_two_ms": m2, "overhead": m2 / m1 - 1}
    print(f"1 process, {a.points // 2} points: {m1:.2f} ms/step (runs {', '.join(f'{t:.2f}' for t in one)})")
    print(f"2 gloo processes, {a.points} points: {m2:.2f} ms/step (runs {', '.join(f'{t:.2f}' for t in two)})")
    print(f"per-step overhead of data parallelism: {100 * (m2 / m1 - 1):+.1f} %")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
