"""Training speed of the ``fno_burgers`` preset, and the trainer's overhead over a bare loop.

Each of ``--repeats`` runs (per ``trainer.compile`` setting) is one real :meth:`Trainer.fit`
(progress and TensorBoard off; validation and checkpoint only after the timed steps) with
``log_every`` = one window (an epoch, or ``--steps`` steps). A callback makes the two loops
alternate window by window, so slow drifts in machine load hit both alike:

* **trainer** window: from the end of the previous bare window to ``on_log``: all the loop does
  per step (``model.batch``, closure, NaN check, scheduler) plus one logging step. With
  ``n_train`` below 1000 an epoch is shorter than the preset's ``log_every = 50``, so the trainer
  logs more often than in production and its overhead is overestimated.
* **bare** window, run inside ``on_log``: the trainer's own model (compiled if it is), optimiser
  and scheduler on the same batches as the window just trained (``model.batch``, made before the
  clock starts); per step only ``zero_grad``, ``model.loss(...)["data"]``, ``backward``,
  ``optimizer.step``, ``scheduler.step``. Same weights, shapes and memory as the trainer's steps;
  the extra steps change the training trajectory, not the cost. Needs an optimiser without closure.

The first window of each loop is warm-up (FFT plans, allocator, data load, compilation), then
``--epochs`` timed windows. ``overhead = (trainer - bare) / trainer`` per window pair, median per
run, then median over runs (with min and max), from wall time and from process CPU time
(``time.process_time``, CPU device only: with one thread it hardly sees other processes competing
for the cores); target < 5 %. s/epoch: per run the median window, then median over runs.
``warm-up s``: the first run's warm-up excess over a steady window; compiled, that run pays the
compilation and later runs reuse dynamo's code (inductor leaves complex-valued ops eager, with a
warning).

* **samples/s**: pairs seen per epoch (``(n_train // batch_size) * batch_size``) / s per epoch.
* **GFLOP/s**: FLOPs of one eager forward + backward from
  :class:`torch.utils.flop_counter.FlopCounterMode`, over the time per step. The counter knows no
  FFTs; each is added as ``5 N log2 N`` per complex transform of ``N`` points and ``2.5 N log2 N``
  per real one (the usual convention, e.g. FFTW's benchFFT; torch runs the backward of a real FFT
  as a complex one). A complex multiply-add counts 8 real FLOPs, not the counter's 2. Pointwise
  ops (GELU, normalisation, the Adam update) are not counted, hence "effective".
* **peak memory** over a whole run (both loops, the trainer's final validation included). CUDA:
  ``torch.cuda.max_memory_allocated`` (tensors). CPU: the peak resident set ``VmHWM``, reset per
  run via ``/proc/self/clear_refs``, including the process baseline shown as the RSS at the start.

    python scripts/bench_fno.py [--epochs 2] [--steps N] [--n-train N] [--repeats 3] [--threads N]
        [--device auto|cpu|cuda] [--compile off|on|both] [--data-dir DIR] [--json out.json] [--set k=v]

The first run generates and caches the Burgers pairs in ``--data-dir`` (about 15 s for 1000 + 200
pairs at 1024 points on 2 cores). On a shared machine ``--threads 1`` is far less noisy. glibc
hands the large freed activation buffers back to the OS, so CPU steps page-fault, unevenly between
the loops; ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647`` stops that.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from sciml_cli import config
from sciml_cli.commands import compose
from sciml_cli.training.callbacks import Callback

aten = torch.ops.aten
LOOPS = ("trainer", "bare")


# -- FLOP counting -------------------------------------------------------------------------------
def _fft_rule(kind: str):
    def count(x, dim, *args, out_val=None, **kwargs) -> int:
        real = out_val if kind == "c2r" else x  # the side with the full transform length
        n = math.prod(real.shape[d] for d in dim)
        per_point = 5.0 if kind == "c2c" else 2.5
        return int(per_point * real.numel() * math.log2(n)) if n > 1 else 0  # numel = batch * n

    count._get_raw = True  # receive tensors, not shapes
    return count


def _complex_matmul_rule(op):
    base = flop_registry[op]  # 2 FLOPs per multiply-add; a complex one is 4 mul + 4 add

    def count(a, b, *args, out_val=None, **kwargs) -> int:
        return base(a, b, *args, out_val=out_val, **kwargs) * (4 if a.is_complex() else 1)

    count._get_raw = True
    return count


FLOP_RULES = {**{getattr(aten, f"_fft_{kind}"): _fft_rule(kind) for kind in ("r2c", "c2r", "c2c")},
              **{op: _complex_matmul_rule(op) for op in (aten.mm, aten.bmm)}}


def step_flops(model, problem, seed: int, device: torch.device, amp: bool) -> dict:
    """FLOPs of one eager forward + backward, and how many of them are FFTs."""
    batch = model.batch(problem, 0, seed)
    with FlopCounterMode(display=False, custom_mapping=FLOP_RULES) as counter:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model.loss(problem, batch)["data"]
        loss.backward()
    fft = sum(v for op, v in counter.get_flop_counts()["Global"].items() if "fft" in str(op))
    return {"total": counter.get_total_flops(), "fft": fft}


# -- building and measuring ----------------------------------------------------------------------
def build(overrides: list[str]):
    """Trainer, model and problem as ``sciml train`` builds them (same seed, same init)."""
    cfg, _ = compose("train", overrides)
    trainer = config.instantiate(cfg.trainer)
    trainer.seed_everything()
    problem = config.instantiate(cfg.problem)
    return trainer, config.instantiate(cfg.model, problem=problem), problem


def memory(device: torch.device, reset: bool = False) -> float:
    """MiB. ``reset``: start a new peak window and return the current figure; else the peak since."""
    if device.type == "cuda":
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
        return (torch.cuda.memory_allocated if reset else torch.cuda.max_memory_allocated)(device) / 2**20
    if reset:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := current RSS
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["VmRSS" if reset else "VmHWM"].split()[0]) / 1024  # kB


def stamp(device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds, after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float], end: tuple[float, float]) -> tuple[float, float]:
    return end[0] - start[0], end[1] - start[1]


class Lockstep(Callback):
    """Times each trainer window, then runs and times one bare window (see the module docstring)."""

    def __init__(self, window: int) -> None:
        self.window, self.windows = window, {loop: [] for loop in LOOPS}

    def on_fit_start(self, trainer) -> None:
        self.resume = stamp(trainer.device)

    def on_log(self, trainer, logs) -> None:  # logging has synced through .item() already
        self.windows["trainer"].append(_since(self.resume, stamp(trainer.device)))
        model, problem = trainer.model, trainer.problem
        optimizer, scheduler = trainer.optimizer, trainer.scheduler
        steps = range(trainer.step - self.window, trainer.step)
        batches = [model.batch(problem, step, trainer.seed) for step in steps]
        start = stamp(trainer.device)
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(trainer.device.type, dtype=torch.bfloat16, enabled=trainer.amp):
                loss = model.loss(problem, batch)["data"]
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        self.windows["bare"].append(_since(start, stamp(trainer.device)))
        self.resume = stamp(trainer.device)


def run(overrides: list[str], window: int) -> dict:
    """One ``fit`` with the two loops in lockstep: window times, overheads and peak memory."""
    trainer, model, problem = build(overrides)
    lockstep = Lockstep(window)
    trainer.callbacks.append(lockstep)
    start = memory(trainer.device, reset=True)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer.fit(model, problem, Path(run_dir), "trainer: {}\n")
    out = {"mem_start_mib": start, "mem_peak_mib": memory(trainer.device)}
    for loop, windows in lockstep.windows.items():
        wall, cpu = (list(w) for w in zip(*windows))
        steady = statistics.median(wall[1:])
        out[loop] = {"windows_s": wall, "windows_cpu_s": cpu, "window_s": steady,
                     "window_cpu_s": statistics.median(cpu[1:]), "warmup_excess_s": wall[0] - steady}
    for i, clock in enumerate(("wall", "cpu")):
        pairs = [100 * (t[i] - b[i]) / t[i] for t, b in zip(*lockstep.windows.values())][1:]
        out[f"overhead_{clock}_pct"] = statistics.median(pairs)
    return out


def machine(device: torch.device) -> dict:
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((s.split(":", 1)[1].strip() for s in info if s.startswith("model name")), platform.machine())
    out = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "load_average": os.getloadavg()}
    return out | ({"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {})


def summarise(runs: list[dict], steps_per_epoch: int, window: int, samples: int, flops: int) -> dict:
    """Median over runs (with min and max) of every figure the table shows."""
    out: dict = {"runs": runs, "mem_peak_mib": max(r["mem_peak_mib"] for r in runs),
                 "mem_start_mib": statistics.median(r["mem_start_mib"] for r in runs)}
    for loop in LOOPS:
        per_epoch = [r[loop]["window_s"] * steps_per_epoch / window for r in runs]
        s = statistics.median(per_epoch)
        out[loop] = {"s_per_epoch": s, "s_per_epoch_min": min(per_epoch), "s_per_epoch_max": max(per_epoch),
                     "samples_per_s": samples / s, "gflops": flops * steps_per_epoch / s / 1e9,
                     "first_warmup_excess_s": runs[0][loop]["warmup_excess_s"]}
    for clock in ("wall", "cpu"):
        values = [r[f"overhead_{clock}_pct"] for r in runs]
        out[f"overhead_{clock}_pct"] = {"median": statistics.median(values), "min": min(values),
                                        "max": max(values)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="timed windows after one warm-up window")
    parser.add_argument("--steps", type=int, default=None, help="window length in steps (default: one epoch)")
    parser.add_argument("--n-train", type=int, default=None, help="training pairs (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=3, help="fit runs per compile setting")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", choices=["off", "on", "both"], default="both")
    parser.add_argument("--data-dir", default="/tmp/sciml_bench_data")
    parser.add_argument("--json", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Hydra override")
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error("--epochs: at least one timed window is needed")
    if args.threads:
        torch.set_num_threads(args.threads)

    base = ["experiment=fno_burgers", "trainer.callbacks.progress=null", "trainer.callbacks.tensorboard=null",
            f"paths.data={args.data_dir}", f"trainer.device={args.device}", *args.set]
    base += [f"model.n_train={args.n_train}"] if args.n_train else []
    base += [f"trainer.threads={args.threads}"] if args.threads else []
    trainer, model, problem = build(base)
    device = trainer.device
    steps_per_epoch = model.n_train // model.batch_size
    window = args.steps or steps_per_epoch
    total = window * (1 + args.epochs)
    timing = [f"optim.steps={total}", f"trainer.log_every={window}",
              f"trainer.val_every={total + 1}", f"trainer.checkpoint_every={total + 1}"]

    t = time.perf_counter()  # generate (first time) or load the train and validation pairs
    model.to(device, trainer.dtype)
    problem.to(device, trainer.dtype)
    flops = step_flops(model, problem, trainer.seed, device, trainer.amp)
    problem.operator_pairs("val", model.n_test, model.resolution)
    data_s = time.perf_counter() - t
    samples = steps_per_epoch * model.batch_size

    report = {"command": sys.argv, "machine": machine(device), "overrides": [*base, *timing],
              "n_train": model.n_train, "batch_size": model.batch_size, "steps_per_epoch": steps_per_epoch,
              "window_steps": window, "timed_windows": args.epochs, "repeats": args.repeats,
              "resolution": problem.resolution, "dtype": trainer.dtype_name, "amp": trainer.amp,
              "flops_per_step": flops, "data_s": data_s, "modes": {}}
    print(f"{report['machine']['cpu']}, {report['machine']['cores']} cores, {torch.get_num_threads()} torch "
          f"threads, torch {torch.__version__}, {device}; load average {report['machine']['load_average']}")
    print(f"fno_burgers: n_train={model.n_train}, batch {model.batch_size}, {steps_per_epoch} steps/epoch, "
          f"resolution {problem.resolution}, {trainer.dtype_name}; windows of {window} steps: 1 warm-up + "
          f"{args.epochs} timed, {args.repeats} runs; {flops['total'] / 1e9:.3f} GFLOP/step "
          f"({100 * flops['fft'] / flops['total']:.1f} % FFT); data ready in {data_s:.1f} s")

    for compiled in {"off": [False], "on": [True], "both": [False, True]}[args.compile]:
        overrides = [*base, *timing, f"trainer.compile={str(compiled).lower()}"]
        runs = [run(overrides, window) for _ in range(args.repeats)]
        report["modes"]["compiled" if compiled else "eager"] = summarise(
            runs, steps_per_epoch, window, samples, flops["total"])
    report["load_average_after"] = os.getloadavg()

    mem = "peak alloc" if device.type == "cuda" else "peak RSS"
    head = (f"{'mode':9s}{'loop':9s}{'s/epoch [min-max]':>24s}{'samples/s':>11s}{'GFLOP/s':>9s}"
            f"{'warm-up s':>11s}  {mem} MiB (at start)")
    print(head + "\n" + "-" * len(head))
    for name, res in report["modes"].items():
        for loop in LOOPS:
            r, peak = res[loop], f"{res['mem_peak_mib']:.0f} ({res['mem_start_mib']:.0f})"
            spread = f"{r['s_per_epoch']:.3f} [{r['s_per_epoch_min']:.3f}-{r['s_per_epoch_max']:.3f}]"
            print(f"{name:9s}{loop:9s}{spread:>24s}{r['samples_per_s']:11.1f}{r['gflops']:9.2f}"
                  f"{r['first_warmup_excess_s']:11.2f}  {peak if loop == 'trainer' else 'same runs'}")
    for name, res in report["modes"].items():
        for clock in ("wall", "cpu"):
            o = res[f"overhead_{clock}_pct"]
            print(f"trainer overhead, {name}, {clock:4s} time: {o['median']:6.2f} % (median of "
                  f"{args.repeats} runs, min {o['min']:.2f}, max {o['max']:.2f}) -> "
                  f"{'meets' if o['median'] < 5 else 'MISSES'} the < 5 % target")
    print(f"load average after: {report['load_average_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
