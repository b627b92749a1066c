"""Measure a hyperparameter search end to end: a 16-trial Optuna study on the joblib launcher
(2 workers) against the same study on Hydra's basic launcher (one trial after another), and the
best trial against the preset's own settings.

    .venv/bin/python scripts/bench_sweep.py [--trials 16] [--steps 250] [--keep DIR] [--json out.json]

Runs the real commands in a temporary directory (or ``--keep DIR``):

    sciml sweep experiment=fno_burgers_quick hparams_search=fno_burgers_quick <short> [hydra/launcher=joblib]
    sciml train experiment=fno_burgers_quick <short>

where ``<short>`` is ``optim.steps=<steps>`` (the preset's 2500 shortened; the cosine schedule
follows) and a validation at the end. The dataset is generated once before the timed commands.
The joblib study runs first, as shipped (TPE, seed 0); the basic launcher then runs the same
trials: its study starts with the joblib study's parameter sets enqueued (Optuna's
``enqueue_trial``), which the sweeper asks for before sampling anything. Two TPE studies would
sample alike only until their results differ (one thread or two round differently), and a study
drawing more of the widest networks takes longer on any launcher. Reports each sweep's wall time,
the sum of its trials' training times, its best validation rel-L2, the ratio of the wall times
(target: joblib <= 0.6x basic), and the preset's own validation rel-L2 (target: the best trial
beats it).

``--ceiling`` measures instead what bounds that ratio on this machine: one trial alone on two
threads (what the basic launcher runs), alone on one thread, and two one-thread trials at once
(what two joblib workers run), each by the training's own wall time; the best ratio two workers
can reach with equal trials, no batch gaps and no worker start-up is the pair's time over twice
the two-thread trial's. Beside it, the same for two bare kernels, one bound by arithmetic (a
matrix product) and one by memory (a 128 MB copy): how much two processes gain over one here.
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


_KERNEL = """
import sys, time, torch
torch.set_num_threads(1)
if sys.argv[1] == "matmul":
    a = torch.randn(512, 512); b = torch.randn(512, 512); work, size = (lambda: a @ b), 2 * 512 ** 3
else:
    a = torch.randn(2 ** 25); b = torch.empty_like(a); work, size = (lambda: b.copy_(a)), 2 * a.numel() * 4
start, n = time.perf_counter(), 0
while time.perf_counter() - start < 5:
    work(); n += 1
print(n * size / (time.perf_counter() - start))
"""


def _kernel_gain(kind: str) -> dict:
    """Throughput of one process running a one-thread kernel, and of two at once."""
    def rate(copies: int) -> float:
        procs = [subprocess.Popen([sys.executable, "-c", _KERNEL, kind], stdout=subprocess.PIPE, text=True)
                 for _ in range(copies)]
        return sum(float(p.communicate()[0]) for p in procs)

    one, two = rate(1), rate(2)
    unit = 1e9
    return {"one_process": round(one / unit, 1), "two_processes": round(two / unit, 1), "gain": round(two / one, 2)}


def ceiling(short: list[str], work: Path) -> dict:
    """What two one-thread workers can gain over one two-thread trial on this machine."""
    def trial(threads: int, copies: int = 1) -> float:
        procs = [subprocess.Popen([sys.executable, "-m", "sciml_cli", "train", *short, f"trainer.threads={threads}",
                                   f"paths.outputs=ceiling{i}", "paths.data=outputs/data", "output=json"],
                                  cwd=work, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": str(threads)})
                 for i in range(copies)]
        walls = [json.loads(p.communicate()[0].strip().splitlines()[-1])["metrics"]["wall_time_s"] for p in procs]
        return max(walls)

    two_threads, one_thread, pair = trial(2), trial(1), trial(1, copies=2)
    return {
        "trial_s": {"alone_2_threads": two_threads, "alone_1_thread": one_thread,
                    "two_at_once_1_thread_each": pair},
        "second_thread_gain": round(one_thread / two_threads, 2),
        "slowdown_of_a_trial_beside_another": round(pair / one_thread, 2),
        "best_joblib_over_basic": round(pair / (2 * two_threads), 3),
        "kernels_GFLOPs_or_GBs": {"matmul": _kernel_gain("matmul"), "copy": _kernel_gain("copy")},
    }


def _storage(work: Path, study: str) -> str:
    return f"sqlite:///{work / 'outputs' / 'sweep' / 'studies' / study}.db"  # the config's default


def _trial_params(work: Path, study: str) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return [t.params for t in optuna.load_study(study_name=study, storage=_storage(work, study)).trials]


def _replay(work: Path, source: str, target: str) -> None:
    """A new study ``target`` whose first trials are ``source``'s, in order."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    done = optuna.load_study(study_name=source, storage=_storage(work, source))
    study = optuna.create_study(study_name=target, storage=_storage(work, target), direction=done.direction)
    for trial in done.trials:
        study.enqueue_trial(trial.params)


def _training_time(result: dict) -> float:
    """The sum of the sweep's trials' own training times."""
    return sum(j["wall_time_s"] or 0.0 for j in result["jobs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--keep", type=Path, help="work in this directory and keep the runs")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--ceiling", action="store_true", help="measure the best ratio this machine allows instead")
    args = parser.parse_args()
    short = ["experiment=fno_burgers_quick", f"optim.steps={args.steps}", f"trainer.val_every={args.steps}",
             f"trainer.checkpoint_every={args.steps}", "trainer.callbacks.progress=null",
             "trainer.callbacks.tensorboard=null"]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        _sciml("train", *short, "optim.steps=1", "trainer.val_every=1", cwd=work)  # the dataset, once
        if args.ceiling:
            report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                      "trial": " ".join(short), **ceiling(short, work)}
            print(json.dumps(report, indent=2))
            if args.json:
                args.json.write_text(json.dumps(report, indent=2) + "\n")
            return
        defaults, default_wall = _sciml("train", *short, cwd=work)
        report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                  "trial": " ".join(short), "trials": args.trials,
                  "preset_defaults": {"val_rel_l2": defaults["metrics"]["val/rel_l2"], "wall_s": round(default_wall, 1)}}
        for launcher, extra in (("joblib", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]), ("basic", [])):
            if launcher == "basic":
                _replay(work, "bench_joblib", "bench_basic")
            result, wall = _sciml("sweep", *short, "hparams_search=fno_burgers_quick", f"hydra.sweeper.n_trials={args.trials}",
                                  f"hydra.sweeper.study_name=bench_{launcher}", *extra, cwd=work)
            report[launcher] = {"command": "sciml sweep " + " ".join([*short, "hparams_search=fno_burgers_quick",
                                                                         f"hydra.sweeper.n_trials={args.trials}", *extra]),
                                "wall_s": round(wall, 1), "best_val_rel_l2": result["best_value"],
                                "finished": sum(j["status"] == "finished" for j in result["jobs"]),
                                "trials_training_s": round(_training_time(result), 1),
                                "trials": _trial_params(work, f"bench_{launcher}")}
        if report["basic"]["trials"] != report["joblib"]["trials"]:
            sys.exit("the basic launcher did not run the joblib study's trials")
        report["same_trials"] = True
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
