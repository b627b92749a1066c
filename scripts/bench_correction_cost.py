"""What one corrected step of a hybrid preset costs, part by part, against the plain solver on
the 2x grid: why ``hybrid_burgers`` cannot beat that solver's wall time on a CPU.

For a hybrid preset (default ``hybrid_burgers``) this builds the preset's problem and model
(untrained: the cost does not depend on the weights) and times, on ``--batch`` states of the
coarse grid in the preset's dtype, in turns for ``--rounds`` rounds (the machine's speed drifts):

- the coarse solver step;
- the correction network alone, eagerly and compiled with ``torch.compile`` (``--no-compile``
  skips it);
- the whole hybrid step (``Hybrid.advance``);
- the plain solver on the 2x grid: two steps of half the time step, the work the hybrid must
  undercut per coarse step.

It also counts the network's multiply-adds per step and measures the machine's matrix-product
rate (a square float32 ``matmul`` of the same order of work), so the network's time can be read
as arithmetic or overhead: a convolution network on a CPU is bound by its arithmetic, which a
coarse finite-difference step has almost none of.

    python scripts/bench_correction_cost.py [--preset hybrid_burgers] [--batch 16] [--rounds 7] [model.width=8 ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def per_call(fn, n: int) -> float:
    """Seconds per call of ``fn`` over ``n`` calls, after a warm-up."""
    with torch.no_grad():
        for _ in range(max(5, n // 20)):
            fn()
        start = time.perf_counter()
        for _ in range(n):
            fn()
    return (time.perf_counter() - start) / n


def conv_macs(net: torch.nn.Module, points: int, batch: int) -> int:
    """Multiply-adds of the convolutions (and linear layers) of ``net`` on ``batch`` grids of ``points``."""
    macs = 0
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)):
            macs += m.weight.numel() * points * batch
        elif isinstance(m, torch.nn.Linear):
            macs += m.weight.numel() * points * batch
    return macs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="hybrid_burgers")
    parser.add_argument("--batch", type=int, default=16, help="states stepped at once (the preset's n_test)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=400, help="calls per timing")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.width=8")
    args = parser.parse_args()

    from sciml_cli import config
    from sciml_cli.commands import compose

    cfg, _ = compose("train", [f"experiment={args.preset}", "trainer.device=cpu", *args.overrides])
    dtype = {"float32": torch.float32, "float64": torch.float64}[str(cfg.trainer.dtype)]
    problem = config.instantiate(cfg.problem).to("cpu", dtype)
    model = config.instantiate(cfg.model, problem=problem).to("cpu", dtype).eval()
    n, dt, dims = model.resolution, model.dt, model.n_dims
    torch.manual_seed(0)
    # smooth periodic states of unit size: a few low Fourier modes
    modes = torch.randn(args.batch, 4, dtype=dtype)

    def smooth(points: int) -> torch.Tensor:
        x = torch.arange(points, dtype=dtype) / points
        line = sum(modes[:, k, None] * torch.sin(2 * torch.pi * (k + 1) * x + k) for k in range(4))
        return line if dims == 1 else line[:, :, None] * line[:, None, :]

    state, fine = smooth(n), smooth(2 * n)
    scales = tuple(torch.ones((), dtype=dtype) for _ in range(3))
    stepped = problem.coarse_step(state, dt)
    fields = [stepped, stepped - state]

    parts = {
        "coarse step": lambda: problem.coarse_step(state, dt),
        "network, eager": lambda: model._network(fields),
        "hybrid step (advance)": lambda: model.advance(problem, state, scales),
    }
    parts["2x solver: two half steps"] = lambda: problem.coarse_step(problem.coarse_step(fine, dt / 2), dt / 2)
    if not args.no_compile:
        compiled = torch.compile(model.net, dynamic=False)
        stacked = torch.stack(fields, 1)
        start = time.perf_counter()
        with torch.no_grad():
            compiled(stacked)
        print(f"torch.compile of the network: {time.perf_counter() - start:.1f} s")
        parts["network, compiled"] = lambda: compiled(stacked)
    macs = conv_macs(model.net, n**dims, args.batch)
    side = max(64, round((macs) ** (1 / 3)))
    a, b = torch.randn(side, side, dtype=dtype), torch.randn(side, side, dtype=dtype)
    parts[f"matmul {side}^3 (the network's work)"] = lambda: a @ b

    samples: dict[str, list[float]] = {k: [] for k in parts}
    for _ in range(args.rounds):
        for name, fn in parts.items():
            samples[name].append(per_call(fn, args.calls))
    med = {k: statistics.median(v) for k, v in samples.items()}
    threads = torch.get_num_threads()
    print(f"{args.preset} {' '.join(args.overrides)}: coarse grid {n}^{dims}, batch {args.batch}, {cfg.trainer.dtype}, {threads} threads, "
          f"network {type(model.net).__name__} ({sum(p.numel() for p in model.net.parameters())} weights), "
          f"{macs / 1e6:.1f} M multiply-adds per step; medians of {args.rounds} rounds")
    for name, seconds in med.items():
        extra = ""
        if name.startswith("network") or name.startswith("matmul"):
            work = macs if name.startswith("network") else side**3
            extra = f"  {2 * work / seconds / 1e9:6.1f} GFLOP/s"
        print(f"  {name:<38} {seconds * 1e6:9.1f} us{extra}")
    print(f"  hybrid step / 2x solver's two steps: {med['hybrid step (advance)'] / med['2x solver: two half steps']:.2f}")


if __name__ == "__main__":
    main()
