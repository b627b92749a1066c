"""Benchmark the CT problem: reconstruction quality and the speed of the Radon transform.

Quality: the 128 x 128 modified Shepp–Logan phantom, 30 angles, 5 % Gaussian noise (std = 5 % of
the mean absolute sinogram, Adler & Öktem 2017), seed 0; PSNR (dB, range of the phantom = 1) and
SSIM (Wang et al. 2004) of

* FBP, ramp filter and Hann-windowed ramp;
* gradient descent from zero with the step 1 / L on ||A a - b||^2 + lambda R(a) for
  R = ||a||^2 (Tikhonov), ||D a||^2 (gradient Tikhonov) and smoothed TV.

The lambdas were picked by a sweep on this same phantom and noise draw (``--sweep`` reruns it),
i.e. they are the best case for each regulariser, as in the reference tables of Adler & Öktem
(2018). Iteration counts are where PSNR has settled to 0.05 dB.

Speed: forward + adjoint on a batch of 32 random images, per image (median of ``--repeats``).

Layout (``--layout``): the learned schemes' CNNs on channels-first against channels-last images
(``ConvNet.channels_last_on_cpu``), taking turns in one process: a reconstruction of 16 images and
a training step (forward and backward) of the preset's batch, for ``lgd_ct_small`` and
``lpd_ct_small`` with every layer drawn at random (the speed is that of a trained model); and the
training step on channels-last images under bfloat16 autocast, as ``trainer.amp=true`` takes it.

Learned reconstructions (``--runs``): trained runs of ``lgd``, ``tv_learned`` and ``lpd`` (the
same problem size), each evaluated on the problem's test images (held-out random ellipses and
Shepp–Logan) beside FBP, Tikhonov and TV gradient descent with ``lambda`` chosen on the
validation images: PSNR, SSIM, learned ``lambda``, seconds per image, the time ratio against TV,
and one figure of every reconstruction side by side (``--figure``).

    python scripts/bench_ct.py [--device cpu|cuda] [--threads N] [--sweep] [--json out.json]
    python scripts/bench_ct.py --layout [--repeats N]
    python scripts/bench_ct.py --runs outputs/train/ct-lgd/<time> outputs/train/ct-lpd/<time> \
        [--figure ct_learned.png] [--json learned.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from sciml_cli.numerics.image_metrics import psnr, ssim
from sciml_cli.problems.ct import Ct

#: (name, regulariser, lambda, tv epsilon, iterations)
METHODS = [
    ("Tikhonov-GD  ||a||^2", "tikhonov", 2e-3, None, 1000),
    ("gradTik-GD   ||Da||^2", "gradient", 3e-3, None, 500),
    ("TV-GD        smoothed TV", "tv", 1e-3, 3e-3, 3000),
]
SWEEP = {
    "tikhonov": ([0.0, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2], None, 1000),
    "gradient": ([1e-3, 3e-3, 1e-2, 3e-2, 1e-1], None, 500),
    "tv": ([3e-4, 5e-4, 1e-3, 1.5e-3, 2e-3, 3e-3], 3e-3, 3000),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score(method: str, recon: torch.Tensor, image: torch.Tensor, lam=None, eps=None, n_iter=None,
          seconds=None) -> dict:
    return {"method": method, "reg_weight": lam, "tv_epsilon": eps, "n_iter": n_iter,
            "psnr": psnr(recon, image).item(), "ssim": ssim(recon, image).item(),
            "seconds": seconds}


def quality(device: torch.device, sweep: bool) -> list[dict]:
    f64 = torch.float64
    base = Ct(size=128, n_angles=30, noise_percent=5.0, phantom="shepp_logan").to(device, f64)
    sol = base.solve(n_samples=1, seed=0)
    image, b = sol.fields["image"], sol.fields["sinogram"]
    rows = []
    for window in ("ramp", "hann"):
        sync(device)
        t = time.perf_counter()
        recon = base.fbp(b, filter=window)
        sync(device)
        rows.append(score(f"FBP ({window})", recon, image, seconds=time.perf_counter() - t))
    for name, reg, lam, eps, n_iter in METHODS:
        p = Ct(regulariser=reg, reg_weight=lam, tv_epsilon=eps or 0.003).to(device, f64)
        p.step_size()  # the power iteration, outside the timing
        sync(device)
        t = time.perf_counter()
        recon = p.reconstruct(b, n_iter=n_iter)
        sync(device)
        rows.append(score(name, recon, image, lam, eps, n_iter, time.perf_counter() - t))
    if sweep:
        for reg, (lams, eps, n_iter) in SWEEP.items():
            for lam in lams:
                p = Ct(regulariser=reg, reg_weight=lam, tv_epsilon=eps or 0.003).to(device, f64)
                recon = p.reconstruct(b, n_iter=n_iter)
                rows.append(score(f"sweep {reg}", recon, image, lam, eps, n_iter))
    return rows


def speed(device: torch.device, batch: int, repeats: int) -> list[dict]:
    rows = []
    t = time.perf_counter()
    op = Ct(size=128, n_angles=30).operator()
    build = time.perf_counter() - t
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        x = torch.rand(batch, 128, 128, generator=g, dtype=torch.float64).to(device, dtype)
        t = time.perf_counter()
        op.adjoint(op.forward(x))  # first call: copies the matrices to the device and dtype
        sync(device)
        first = time.perf_counter() - t
        times = []
        for _ in range(repeats):
            sync(device)
            t = time.perf_counter()
            op.adjoint(op.forward(x))
            sync(device)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        rows.append({"dtype": str(dtype).removeprefix("torch."), "batch": batch,
                         "ms_per_batch": 1e3 * med, "ms_per_image": 1e3 * med / batch,
                         "images_per_s": batch / med, "first_call_s": first, "build_s": build,
                         "nnz": op.nnz})
    return rows


def layout(device: torch.device, repeats: int) -> list[dict]:
    from sciml_cli import config
    from sciml_cli.commands import compose
    from sciml_cli.nn import ConvNet

    rows = []
    for preset in ("lgd_ct_small", "lpd_ct_small"):
        cfg, _ = compose("train", [f"experiment={preset}"])
        torch.manual_seed(0)
        problem = config.instantiate(cfg.problem).to(device, torch.float32)
        model = config.instantiate(cfg.model, problem=problem).to(device, torch.float32)
        for m in model.modules():  # zero last layers would make the schemes' outputs trivial, not faster
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.normal_(m.weight, std=0.02)
        images, data = problem.training_pairs(16, 1)
        batch = int(cfg.model.batch_size)

        def reconstruct(amp: bool):
            with torch.no_grad():
                return model.reconstruct(problem, data)

        def train_step(amp: bool):  # as the trainer takes it: the loss under autocast, then backward
            model.zero_grad()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = (model.reconstruct(problem, data[:batch]) - images[:batch]).square().mean()
            loss.backward()

        # (channels last, bfloat16 autocast): the layouts, then trainer.amp=true on channels-last
        setups = {"reconstruct": [(False, False), (True, False)],
                  "train_step": [(False, False), (True, False), (True, True)]}
        times: dict[tuple[str, bool, bool], list[float]] = {}
        outputs = {}
        for _ in range(repeats + 1):  # the first round warms up
            for name, fn in (("reconstruct", reconstruct), ("train_step", train_step)):
                for channels_last, amp in setups[name]:
                    ConvNet.channels_last_on_cpu = channels_last
                    sync(device)
                    t = time.perf_counter()
                    out = fn(amp)
                    sync(device)
                    times.setdefault((name, channels_last, amp), []).append(time.perf_counter() - t)
                    if name == "reconstruct":
                        outputs[channels_last] = out
        ConvNet.channels_last_on_cpu = True
        diff = float((outputs[True] - outputs[False]).abs().max() / outputs[False].abs().max())
        for name, configs in setups.items():
            ms = [1e3 * statistics.median(times[(name, *c)][1:]) for c in configs]
            rows.append({"preset": preset, "what": name, "images": 16 if name == "reconstruct" else batch,
                         "channels_first_ms": ms[0], "channels_last_ms": ms[1], "speedup": ms[0] / ms[1],
                         "channels_last_amp_ms": ms[2] if len(ms) > 2 else None,
                         "amp_speedup": ms[1] / ms[2] if len(ms) > 2 else None, "max_rel_difference": diff})
    return rows


def learned(runs: list[str], device_name: str, figure: str | None) -> list[dict]:
    """Every run and the classical baselines on the test images of the first run's problem."""
    from sciml_cli import plotting
    from sciml_cli.commands.eval import restore

    rows, recons = [], {}
    problem = None
    for run in runs:
        _, prob, model, device = restore(Path(run) / "checkpoints" / "best.pt", device_name)
        label = type(model).__name__
        if any(k[0] == label for k in recons):  # a second run of the same method
            label = f"{label} ({Path(run).name})"
        if problem is None:
            problem = prob
            for name, image_set in problem.image_sets("test").items():
                for method, rec in problem.classical(image_set).items():
                    recons[(method, name)] = rec.images
                    rows.append({"method": method, "images": name, "run": None, **rec.params,
                                 "psnr": psnr(rec.images, image_set.images).mean().item(),
                                 "ssim": ssim(rec.images, image_set.images).mean().item(),
                                 "seconds_per_image": rec.seconds})
        elif prob.size != problem.size:
            raise SystemExit(f"{run}: size {prob.size} differs from the first run's {problem.size}")
        with torch.no_grad():
            evaluation = model.evaluate(problem, split="test")
            for name, image_set in problem.image_sets("test").items():
                recons[(label, name)] = model.reconstruct(problem, image_set.data)
        m = evaluation.metrics
        for name in problem.image_sets("test"):
            sfx = "" if name == "ellipses" else f"_{name}"
            rows.append({"method": label, "images": name, "run": run,
                         "reg_weight": evaluation.details["learned"].get("reg_weight"),
                         "psnr": m[f"psnr{sfx}"], "ssim": m[f"ssim{sfx}"],
                         "seconds_per_image": m[f"seconds_per_image{sfx}"]})
    tv = {r["images"]: r["seconds_per_image"] for r in rows if r["method"] == "tv"}
    for r in rows:
        r["time_vs_tv"] = r["seconds_per_image"] / tv[r["images"]]
    if figure:
        import matplotlib.pyplot as plt

        sets = problem.image_sets("test")
        methods = list(dict.fromkeys(k[0] for k in recons))
        fig, axes = plt.subplots(len(sets), len(methods) + 1, figsize=(2.4 * (len(methods) + 1), 2.6 * len(sets)),
                                 constrained_layout=True, squeeze=False)
        for i, (name, image_set) in enumerate(sets.items()):
            truth = image_set.images[0].cpu()
            lo, hi = truth.min().item(), truth.max().item()
            axes[i, 0].imshow(truth.T, origin="lower", cmap="gray", vmin=lo, vmax=hi)
            axes[i, 0].set_title(f"ground truth ({name})", fontsize=9)
            for j, method in enumerate(methods, start=1):
                img = recons[(method, name)][0].detach().cpu()
                axes[i, j].imshow(img.T, origin="lower", cmap="gray", vmin=lo, vmax=hi)
                axes[i, j].set_title(f"{method}\n{psnr(img, truth).item():.2f} dB", fontsize=9)
            for ax in axes[i]:
                ax.set_xticks([])
                ax.set_yticks([])
        plotting.save(fig, Path(figure))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--sweep", action="store_true", help="also rerun the lambda sweep")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    ap.add_argument("--runs", nargs="+", default=None, help="trained lgd / tv_learned / lpd run directories")
    ap.add_argument("--figure", default=None, help="--runs: write the side-by-side figure here")
    ap.add_argument("--layout", action="store_true",
                    help="only the CNNs' speed on channels-first and -last images, and under amp")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    env = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
               "cpu": platform.processor() or platform.machine(),
               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    print(f"# {env}")
    out: dict = {"env": env}
    if args.layout:
        out["layout"] = layout(device, args.repeats)
        print(f"{'preset':<14}{'':<13}{'images':>7}{'ch-first ms':>13}{'ch-last ms':>12}{'speed-up':>10}"
              f"{'+ amp ms':>10}{'speed-up':>10}")
        for r in out["layout"]:
            amp = (f"{r['channels_last_amp_ms']:>10.1f}{r['amp_speedup']:>10.2f}" if r["amp_speedup"] else "")
            print(f"{r['preset']:<14}{r['what']:<13}{r['images']:>7}{r['channels_first_ms']:>13.1f}"
                  f"{r['channels_last_ms']:>12.1f}{r['speedup']:>10.2f}{amp}")
        print(f"largest difference between the layouts' reconstructions: "
              f"{max(r['max_rel_difference'] for r in out['layout']):.1e} of the largest value")
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
        return
    if args.runs:
        out["learned"] = learned(args.runs, args.device, args.figure)
        print(f"{'method':<12}{'images':<13}{'lambda':>10}{'PSNR dB':>9}{'SSIM':>8}{'s/image':>10}{'vs TV':>8}")
        for r in out["learned"]:
            lam = "-" if r.get("reg_weight") is None else f"{r['reg_weight']:.3g}"
            print(f"{r['method']:<12}{r['images']:<13}{lam:>10}{r['psnr']:>9.2f}{r['ssim']:>8.3f}"
                  f"{r['seconds_per_image']:>10.4f}{r['time_vs_tv']:>8.3f}")
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
        return
    if not args.skip_quality:
        out["quality"] = quality(device, args.sweep)
        print(f"{'method':<26}{'lambda':>9}{'eps':>8}{'iters':>7}{'PSNR dB':>9}{'SSIM':>8}"
              f"{'time s':>9}")
        for r in out["quality"]:
            lam, eps, n, sec = (("-" if r[k] is None else r[k])
                                for k in ("reg_weight", "tv_epsilon", "n_iter", "seconds"))
            sec = sec if isinstance(sec, str) else f"{sec:.2f}"
            print(f"{r['method']:<26}{lam:>9}{eps:>8}{n:>7}{r['psnr']:>9.2f}{r['ssim']:>8.3f}"
                  f"{sec:>9}")
    out["speed"] = speed(device, args.batch, args.repeats)
    print(f"\nforward + adjoint, 128 x 128 -> 30 x 182, batch {args.batch} "
          f"(nnz {out['speed'][0]['nnz']}, build {out['speed'][0]['build_s']:.2f} s):")
    for r in out["speed"]:
        print(f"  {r['dtype']:<8} {r['ms_per_batch']:8.2f} ms/batch  "
              f"{r['ms_per_image']:7.3f} ms/image  {r['images_per_s']:9.0f} images/s  "
              f"(first call {r['first_call_s']:.2f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
