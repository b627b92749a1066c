"""Time a full Adam step of our PINN on DeepXDE's Burgers example setup, against DeepXDE itself.

    .venv/bin/python scripts/bench_pinn.py [--preset burgers|large] [--variants autograd taylor taylor+compile]
        [--steps 320] [--repeats 5] [--threads 2] [--peer-python /path/to/venv/bin/python]

Setups (float32, tanh, Glorot normal, Adam at 1e-3, DeepXDE's point counts):
  burgers  3 x 20, 2540 interior + 80 boundary + 160 initial points (DeepXDE's
           examples/pinn_forward/Burgers.py)
  large    4 x 50, 20 000 interior + 630 boundary + 1260 initial (the same mix, scaled)

Our step is the real trainer's (``Trainer.fit`` with one Adam phase: batch, loss terms, the
non-finite check, backward, fused Adam step), measured between two log steps so start-up, the
final validation and the checkpoint are left out. The peer is DeepXDE 1.15 run by
``scripts/bench_pinn_peer_deepxde.py`` in its own environment (``--peer-python``; install it
there with ``pip install torch==2.13.0 deepxde==1.15.0``, never into ours); its step is
``model.train(iterations=N)`` divided by N. The two are run in turn, ours then the peer's,
``--repeats`` times, and the ratio is taken pair by pair, so drift of a shared machine cancels.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

SETUPS = {
    "burgers": {"width": 20, "depth": 3, "n_interior": 2540, "n_boundary": 80, "n_initial": 160},
    "large": {"width": 50, "depth": 4, "n_interior": 20000, "n_boundary": 630, "n_initial": 1260},
}
PEER = Path(__file__).with_name("bench_pinn_peer_deepxde.py")


def our_step(setup: dict, variant: str, steps: int, threads: int) -> float:
    """Seconds per Adam step of our trainer, in a fresh process (as the peer runs). ``variant``:
    ``autograd``, ``taylor`` or ``taylor+compile`` (``trainer.compile=true``; compilation
    happens in the warm-up steps, which are not timed)."""
    derivatives, _, compiled = variant.partition("+")
    code = f"""
import json, sys, tempfile, time, functools
import torch
torch.set_num_threads({threads})
from sciml_cli.models.pinn import PINN
from sciml_cli.problems.burgers import Burgers
from sciml_cli.training.callbacks import Callback
from sciml_cli.training.trainer import Phase, Trainer
setup = {setup!r}
warm, steps = 40, {steps}
class Clock(Callback):
    def __init__(self): self.marks = []
    def on_log(self, trainer, logs): self.marks.append(time.perf_counter())
clock = Clock()
phase = Phase("adam", warm + steps, functools.partial(torch.optim.Adam, lr=1e-3, fused=True))
trainer = Trainer([phase], device="cpu", dtype="float32", seed=0, val_every=10**9,
                  log_every=warm, checkpoint_every=10**9, callbacks={{"clock": clock}},
                  compile={compiled == "compile"})
trainer.seed_everything()
problem = Burgers(setup="raissi")
model = PINN(problem, width=setup["width"], depth=setup["depth"], n_interior=setup["n_interior"],
             n_boundary=setup["n_boundary"], n_initial=setup["n_initial"], derivatives="{derivatives}",
             init="xavier_normal")
with tempfile.TemporaryDirectory() as tmp:
    trainer.fit(model, problem, tmp, "trainer: {{}}\\n")
# marks at step warm, 2 warm, ...; the last mark is the final step
print(json.dumps({{"step_s": (clock.marks[-1] - clock.marks[0]) / (warm + steps - warm)}}))
"""
    if steps % 40:
        raise SystemExit("--steps must be a multiple of 40")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return json.loads(out.stdout.strip().splitlines()[-1])["step_s"]


def peer_step(python: str, preset: str, steps: int, threads: int) -> dict:
    out = subprocess.run([python, str(PEER), "--preset", preset, "--steps", str(steps), "--repeats", "1",
                          "--threads", str(threads)], check=True, capture_output=True, text=True,
                         env={**os.environ, "DDE_BACKEND": "pytorch", "OMP_NUM_THREADS": str(threads)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(SETUPS), default="burgers")
    parser.add_argument("--variants", nargs="+", default=["autograd", "taylor", "taylor+compile"])
    parser.add_argument("--steps", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peer-python", default=None, help="python of an environment with DeepXDE 1.15")
    args = parser.parse_args()
    setup = SETUPS[args.preset]
    times: dict[str, list[float]] = {d: [] for d in args.variants}
    peer: list[float] = []
    peer_info: dict = {}
    for _ in range(args.repeats):
        for d in args.variants:
            times[d].append(our_step(setup, d, args.steps, args.threads))
        if args.peer_python:
            peer_info = peer_step(args.peer_python, args.preset, args.steps, args.threads)
            peer.append(peer_info["step_s_loop"])
    import torch

    report = {
        "setup": {"preset": args.preset, **setup, "dtype": "float32", "threads": args.threads,
                  "steps": args.steps, "repeats": args.repeats},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "ours_step_s": {d: statistics.median(v) for d, v in times.items()},
        "ours_step_s_all": times,
    }
    if peer:
        report["deepxde"] = {"version": peer_info.get("version"), "step_s": statistics.median(peer),
                             "step_s_all": peer}
        report["ratio_ours_over_deepxde"] = {
            d: statistics.median(a / b for a, b in zip(v, peer)) for d, v in times.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
