"""Where the time of a GPU step goes, for the presets whose GPU figures are open: the learned CT
training step and the hybrid's rollout.

    python scripts/bench_gpu_overheads.py [--device cuda] [--sections data steps graphs]

* ``data``: drawing 8 random-ellipse training phantoms at 128^2 on the host and copying them,
  against drawing them on the device (what ``Ct.training_pairs`` does now), and the largest pixel
  difference between the two;
* ``steps``: one training step of ``lgd_ct`` and ``lpd_ct`` (batch, loss, backward, Adam) and
  the batch alone, then ``torch.profiler`` tables of 5 steps by device and by host time (a step
  whose host time exceeds its device time is bound by kernel launches);
* ``graphs``: the ``hybrid_navier_stokes`` rollout (16 test samples, 100 coarse steps, network
  with its projection at zero: the timing does not depend on the weights) eager and captured as
  one CUDA graph per step, beside the plain solver on the coarse and the 2x grid likewise.

Everything runs in this process on ``--device``; ``--dry-run`` shrinks the sizes so the script
can be checked on a CPU (no profiles of the device, no graphs).
"""

from __future__ import annotations

import argparse
import time
import traceback

import torch

from sciml_cli import config
from sciml_cli.commands import compose


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sections", nargs="+", default=["data", "steps", "graphs"], choices=["data", "steps", "graphs"])
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes, for a check on a CPU")
    args = ap.parse_args()
    dev = torch.device(args.device)
    dry = args.dry_run
    ct_extra = ["problem.size=32", "model.batch_size=2"] if dry else []

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def timeit(fn, reps: int = 20, warm: int = 3) -> float:
        reps, warm = (1, 1) if dry else (reps, warm)
        for _ in range(warm):
            fn()
        sync()
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        return (time.perf_counter() - start) / reps

    def build(preset: str, extra: list[str]):
        cfg, _ = compose("train", [f"experiment={preset}", f"trainer.device={dev.type}", *extra])
        problem = config.instantiate(cfg.problem).to(dev, torch.float32)
        model = config.instantiate(cfg.model, problem=problem).to(dev, torch.float32)
        return problem, model

    if "data" in args.sections:
        print("== data: 8 training phantoms", flush=True)
        try:
            from sciml_cli.problems.ct import random_ellipses, rasterize

            problem, _ = build("lgd_ct", ct_extra)
            ellipses = random_ellipses(8, torch.Generator().manual_seed(0))
            host = lambda: rasterize(ellipses, problem.size, device="cpu").to(dev)  # noqa: E731
            device = lambda: rasterize(ellipses, problem.size, device=dev)  # noqa: E731
            print(f"rasterize on the host and copy {timeit(host) * 1e3:.2f} ms, on {dev.type} "
                  f"{timeit(device) * 1e3:.2f} ms, largest difference {(host() - device()).abs().max().item():.1e}")
            print(f"training_pairs(8): {timeit(lambda: problem.training_pairs(8, seed=5)) * 1e3:.2f} ms")
        except Exception:
            traceback.print_exc()

    if "steps" in args.sections:
        for preset in ("lgd_ct", "lpd_ct"):
            print(f"== steps: {preset}", flush=True)
            try:
                problem, model = build(preset, ct_extra)
                opt = torch.optim.Adam(model.parameters(), 1e-3)
                counter = iter(range(10**9))

                def step() -> None:
                    batch = model.batch(problem, next(counter), 0)
                    loss = sum(model.loss(problem, batch).values())
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                print(f"whole step {timeit(step, 30) * 1e3:.2f} ms; batch alone "
                      f"{timeit(lambda: model.batch(problem, next(counter), 0), 30) * 1e3:.2f} ms")
                if not dry:
                    from torch.profiler import ProfilerActivity, profile

                    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                        for _ in range(5):
                            step()
                        sync()
                    for key in ("self_cuda_time_total", "self_cpu_time_total"):
                        print(prof.key_averages().table(sort_by=key, row_limit=12, max_name_column_width=40))
            except Exception:
                traceback.print_exc()

    if "graphs" in args.sections:
        print("== graphs: hybrid_navier_stokes rollout, 100 coarse steps of 16 samples", flush=True)
        try:
            small = ["model.n_test=2", "model.test_steps=3", "problem.fine_resolution=64"] if dry else []
            problem, model = build("hybrid_navier_stokes", ["model.unroll=1", *small])
            model.eval()
            for buffer in (model.scale, model.increment_scale, model.correction_scale):
                buffer.fill_(1.0)  # no training data needed for a timing
            initial = model.trajectories(problem, "test")[:, 0].float().contiguous()
            steps = 3 if dry else 100
            fine = problem.restrict(problem.trajectory_starts("test", initial.shape[0]), 2 * model.resolution)
            fine = fine.float().contiguous()
            schemes = {
                "hybrid": (lambda s: model.advance(problem, s), initial),
                "2x solver": (lambda s: problem.coarse_step(problem.coarse_step(s, model.dt / 2), model.dt / 2), fine),
                "coarse solver": (lambda s: problem.coarse_step(s, model.dt), initial),
            }

            def eager(step, x):
                def run():
                    out = [x]
                    for _ in range(steps):
                        out.append(step(out[-1]))
                    return torch.stack(out, 1)
                return run

            def graphed(step, x):
                static_in = x.clone()
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):  # warm-up off the capture stream (cuFFT plans)
                    for _ in range(3):
                        step(static_in)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_out = step(static_in)

                def run():
                    static_in.copy_(x)
                    out = [x]
                    for _ in range(steps):
                        graph.replay()
                        out.append(static_out.clone())
                        static_in.copy_(static_out)
                    return torch.stack(out, 1)
                return run

            with torch.no_grad():
                for name, (step, x) in schemes.items():
                    line = f"{name:14s} eager {timeit(eager(step, x), 5, 2) * 1e3:8.2f} ms"
                    if dev.type == "cuda":
                        run = graphed(step, x)
                        diff = (run() - eager(step, x)()).abs().max().item()
                        line += f"   CUDA graph {timeit(run, 5, 2) * 1e3:8.2f} ms (largest difference {diff:.1e})"
                    print(line)
        except Exception:
            traceback.print_exc()


if __name__ == "__main__":
    main()
