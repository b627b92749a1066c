"""Measure ``problem=dataset``: memory of reading a large v7.3 file, and accuracy of training on a
file against training on our own generated data.

    .venv/bin/python scripts/bench_dataset.py memory [--gib 1.0] [--dir DIR] [--json out.json]
    .venv/bin/python scripts/bench_dataset.py accuracy [--preset quick|full] [--seed S] [--keep DIR] [--json out.json]

``memory`` writes an FNO-layout Burgers-shaped MATLAB v7.3 file (``a``, ``u``: N samples at
s = 8192, float64, stored column-major as MATLAB does) of about ``--gib`` GiB, then, in a fresh
process, reads the train split (1000 samples) and the test split (200) at s = 1024 as
``experiment=fno_burgers_file`` does, then the test split at s = 2048 as ``eval``'s resolution
sweep does, and the train split at the file's full s = 8192, and reports the peak resident memory above what the process held before each read
(Linux: ``VmHWM`` after resetting it through ``/proc/self/clear_refs``) against the target: two
batches (20 pairs at s = 1024, float32) plus the arrays read. The process's one-time costs
(torch's thread pool, HDF5's buffers) are paid first by a 2-sample read. Also the time of the
reads and of the file's SHA-256, which every train, eval and resume computes once.

``accuracy`` writes a Burgers file in the FNO layout with ``sciml solve problem=burgers
format=mat`` (fresh seeds, the same distribution as the training data sciml generates), then
trains the same preset twice, on our generated data (``experiment=fno_burgers_quick``) and on the
file (``experiment=fno_burgers_file_quick``), and compares the test rel-L2 of ``sciml eval``;
``--preset full``: ``fno_burgers`` against ``fno_burgers_file`` on 1400 samples at s = 8192
(about 70 min on this 2-core CPU). Target: within 10 %. Both then score each run's ``best.pt`` on
both test splits, so a gap between the runs can be told from a gap between their test sets;
``cross`` does only that, for two runs already trained.
    .venv/bin/python scripts/bench_dataset.py cross OWN_RUN FILE_RUN [--work DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: preset -> (own-data preset, file preset, samples in the file, file resolution)
ACCURACY = {"quick": ("fno_burgers_quick", "fno_burgers_file_quick", 700, 1024),
            "full": ("fno_burgers", "fno_burgers_file", 1400, 8192)}


def _write_file(path: Path, gib: float, resolution: int = 8192, block: int = 256) -> tuple[int, int]:
    """An ``a``/``u`` v7.3 file of about ``gib`` GiB, written a block of samples at a time."""
    import h5py
    import numpy as np

    from sciml_cli.data.export import write_mat73

    n = max(1400, int(gib * 2**30 / (2 * 8 * resolution)))
    write_mat73(path, {"a": np.zeros((1, resolution)), "u": np.zeros((1, resolution))})  # header, classes
    rng = np.random.default_rng(0)
    with h5py.File(path, "r+") as f:
        for name in ("a", "u"):
            cls = f[name].attrs["MATLAB_class"]
            del f[name]
            d = f.create_dataset(name, shape=(resolution, n), dtype="f8")  # MATLAB's [N, X], column-major
            d.attrs["MATLAB_class"] = cls
            for i in range(0, n, block):
                j = min(n, i + block)
                d[:, i:j] = rng.standard_normal((resolution, j - i)).cumsum(0) / resolution
    return n, resolution


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _measure_read(path: str) -> dict:
    """Run in a fresh process: read the splits as experiment=fno_burgers_file does."""
    import torch

    from sciml_cli.data.readers import file_sha256
    from sciml_cli.problems.dataset import Dataset

    start = time.perf_counter()
    digest = file_sha256(path)
    sha_s = time.perf_counter() - start
    problem = Dataset(path=path, resolution=1024, splits={"train": [0, 1000], "val": [1000, 1200], "test": [-200, None]})
    problem.to("cpu", torch.float32)
    batch = 20 * 2 * 1024 * 4
    result = {"sha256": digest, "sha256_s": round(sha_s, 2), "one_batch_mib": round(batch / 2**20, 3)}
    # one-time costs of the process (torch's thread pool and kernels, HDF5's buffers) are paid
    # first on a 2-sample read, so what follows is what the data themselves cost
    problem.operator_pairs("val", 2, 256)
    held = []
    for when, split, n, res in (("train_and_test", None, None, 1024), ("test_at_2048", "test", 200, 2048),
                                ("train_at_8192", "train", 1000, 8192)):
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current resident size
        before = _vm("VmRSS")
        start = time.perf_counter()
        if split is None:  # what training reads: the train split, then validation's
            new = [*problem.operator_pairs("train", 1000, res)[:2], *problem.operator_pairs("test", 200, res)[:2]]
        else:  # what eval's resolution sweep reads next, the earlier splits still held
            new = list(problem.operator_pairs(split, n, res)[:2])
        seconds = time.perf_counter() - start
        peak = _vm("VmHWM") - before
        size = sum(t.numel() * t.element_size() for t in new)
        held += new
        result[when] = {"read_s": round(seconds, 3), "peak_above_start_mib": round(peak / 2**20, 2),
                        "arrays_read_mib": round(size / 2**20, 2), "target_mib": round((2 * batch + size) / 2**20, 2),
                        "met": peak <= 2 * batch + size}
    return result


def memory(args) -> dict:
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "burgers_big.mat"
        start = time.perf_counter()
        n, res = _write_file(path, args.gib)
        write_s = time.perf_counter() - start
        proc = subprocess.run([sys.executable, __file__, "_read", str(path)], capture_output=True, text=True, check=True)
        result = json.loads(proc.stdout)
        return {"file": f"v7.3, a and u [{n}, {res}] float64, {path.stat().st_size / 2**30:.2f} GiB",
                "write_s": round(write_s, 1), **result}


def _sciml(*args: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "sciml_cli", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"sciml {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


def _train_and_eval(work: Path, preset: str, extra: list[str]) -> dict:
    start = time.perf_counter()
    out = json.loads(_sciml("train", f"experiment={preset}", "trainer.callbacks.progress=null", "output=json",
                            *extra, cwd=work))
    wall = time.perf_counter() - start
    run = out["run_dir"]
    result = json.loads(_sciml("eval", f"run={run}", "output=json", cwd=work))
    return {"command": " ".join(["sciml train", f"experiment={preset}", *extra]), "train_wall_s": round(wall, 1),
            "run_dir": str(Path(work, run)), "test_rel_l2": result["metrics"]["rel_l2"],
            "baselines": result.get("baselines", {})}


def cross(runs: dict[str, str], work: Path) -> dict:
    """Each run's ``best.pt`` on each run's test split (the FNO's own resolution), so that a
    difference of the two runs can be told from a difference of their test sets."""
    import torch

    from sciml_cli.commands.eval import restore

    here = Path.cwd()
    os.chdir(work)  # a run's data directory is relative to where it was trained
    try:
        loaded = {k: restore(Path(run, "checkpoints", "best.pt"), "cpu") for k, run in runs.items()}
        tests = {k: problem.operator_pairs("test", model.n_test, model.resolution)
                 for k, (_, problem, model, _) in loaded.items()}
    finally:
        os.chdir(here)
    scores = {}
    for trained, (_, _, model, _) in loaded.items():
        for scored, (a, u, grid) in tests.items():
            with torch.no_grad():
                pred = torch.cat([model(a[i:i + model.batch_size], grid) for i in range(0, len(a), model.batch_size)])
            errors = (torch.linalg.vector_norm((pred - u).flatten(1).double(), dim=1)
                      / torch.linalg.vector_norm(u.flatten(1).double(), dim=1))
            scores[f"trained on {trained}, test set of {scored}"] = round(errors.mean().item(), 7)
    return scores


def accuracy(args) -> dict:
    own, file_preset, n, res = ACCURACY[args.preset]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        solve = ["solve", "problem=burgers", f"n_samples={n}", f"problem.fine_resolution={res}", "seed=11",
                 "format=mat", "progress=null", "output=json"]
        made = json.loads(_sciml(*solve, cwd=work))
        mat = next(f for f in made["files"] if f.endswith(".mat"))
        seed = [f"trainer.seed={args.seed}"] if args.seed is not None else []
        ours = _train_and_eval(work, own, seed)
        theirs = _train_and_eval(work, file_preset, [f"problem.path={mat}", *seed])
        scores = cross({"own data": ours["run_dir"], "file": theirs["run_dir"]}, work)
    ratio = theirs["test_rel_l2"] / ours["test_rel_l2"]
    return {"file": "sciml " + " ".join(solve[:-2]), "own_data": ours, "file_data": theirs,
            "ratio_file_over_own": round(ratio, 4), "target": "ratio within 0.9 .. 1.1", "met": 0.9 <= ratio <= 1.1,
            "mean_rel_l2_crossed": scores}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_read":
        print(json.dumps(_measure_read(sys.argv[2])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--gib", type=float, default=1.0)
    m.add_argument("--dir", help="where to write the temporary file (default: the system's)")
    a = sub.add_parser("accuracy")
    a.add_argument("--preset", choices=sorted(ACCURACY), default="quick")
    a.add_argument("--keep", type=Path, help="work in this directory and keep runs and files")
    a.add_argument("--seed", type=int, help="trainer.seed of both runs (default: the presets', 0); the file is the same")
    c = sub.add_parser("cross", help="score two finished runs (own data, file) on both test sets")
    c.add_argument("own_run", type=Path)
    c.add_argument("file_run", type=Path)
    c.add_argument("--work", type=Path, default=Path("."), help="where the runs were trained (their data paths are relative to it)")
    for p in (m, a, c):
        p.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    import torch

    if args.what == "memory":
        result = memory(args)
    elif args.what == "accuracy":
        result = accuracy(args)
    else:
        result = {"mean_rel_l2_crossed": cross({"own data": str(args.own_run.resolve()),
                                                "file": str(args.file_run.resolve())}, args.work)}
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
              **result}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
