"""``sciml solve``: run a problem's reference solver; write HDF5 and a PNG."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from .. import config, output, rundir
from ..errors import ConfigError, reporting
from . import check_positive_ints, check_writable, compose, expand, run_app


def preflight(overrides: list[str]) -> None:
    """Everything the solve will need, checked before its directory is made: the command's own
    keys, the device and dtype, the run of ``ckpt=``, and the problem built at the resolution
    asked for (its constructor refuses a grid its solver cannot make)."""
    import inspect

    from ..training.trainer import DTYPES, resolve_device

    for job in expand(overrides):
        cfg, _ = compose("solve", job)
        config.check(cfg)
        check_positive_ints({k: cfg.get(k) for k in ("resolution", "n_samples", "batch_size", "repeats")})
        if cfg.get("format") not in FORMATS:
            raise ConfigError("format", f"{cfg.get('format')!r} is not a layout sciml writes", FORMATS)
        if cfg.get("dtype") not in DTYPES:
            raise ConfigError("dtype", f"{cfg.get('dtype')!r} is not a solver precision", DTYPES, given=str(cfg.get("dtype")))
        resolve_device(str(cfg.device), key="device")
        check_writable("paths.outputs", Path(str(cfg.paths.outputs)))
        if cfg.ckpt is not None and not (Path(str(cfg.ckpt)) / "checkpoints" / "best.pt").is_file():
            raise ConfigError("ckpt", f"no checkpoints/best.pt in {cfg.ckpt}")
        problem = cfg.problem.copy()
        target = config.import_target(problem._target_, "problem._target_")
        if cfg.resolution is not None and "resolution" in inspect.signature(target).parameters:
            problem.resolution = cfg.resolution
        try:
            config.instantiate(problem)
        except ConfigError as err:  # the solve's own `resolution=` is what the user typed
            if cfg.resolution is not None and str(err).startswith("problem.resolution:"):
                raise ConfigError("resolution", str(err).split(": ", 1)[1]) from None
            raise


FRESH_SEED_OFFSET = 1000  # far from the train/val/test split seeds
#: layouts of the written file (see sciml_cli.data.export)
FORMATS = ("sciml", "pdebench", "mat")


def _timed(fn, device, repeats: int):
    """Best wall time of ``repeats`` calls after one warm-up, and the last result."""
    import time

    import torch

    out = fn()  # warm-up: allocator, caches, lazy initialisation
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def compare_surrogate(cfg: DictConfig) -> dict:
    """Run a trained model and the reference solver on the same fresh instances; the model
    says how it predicts the solver's output (:meth:`Model.surrogate`).

    ``speedup`` compares the surrogate with the share of the solver's time that maps ``a`` to
    ``u`` (the model's ``reference_output_share`` fact if it gives one, else an operator
    problem's ``output_work_fraction``; all of it unless the solver also computes the inputs,
    as the first records of a Navier–Stokes trajectory)."""
    import torch
    from rich.table import Table

    from ..numerics.metrics import relative_l2
    from .eval import restore

    run = Path(str(cfg.ckpt))
    path = run / "checkpoints" / "best.pt"
    if not path.is_file():
        raise ConfigError("ckpt", f"no checkpoints/best.pt in {run}")
    state, problem, model, device = restore(path, cfg.device)
    seed = FRESH_SEED_OFFSET + int(cfg.seed)
    from ..training.trainer import DTYPES

    problem.to(device, DTYPES[cfg.dtype])  # the reference runs in solve's dtype (float64 by default)
    resolution = cfg.resolution or model.surrogate_resolution(problem)
    try:
        t_ref, solution = _timed(lambda: problem.solve(resolution=resolution, n_samples=cfg.n_samples, seed=seed),
                                 device, cfg.repeats)
        surrogate, u, facts = model.surrogate(problem, solution, cfg.batch_size)
    except (ValueError, NotImplementedError) as err:
        raise ConfigError("ckpt", str(err)) from None
    t_model, pred = _timed(surrogate, device, cfg.repeats)
    outside = torch.isnan(u)  # grid points outside a non-box domain
    pred, u = torch.where(outside, 0.0, pred), torch.where(outside, 0.0, u)
    errors = relative_l2(pred.flatten(1).double(), u.flatten(1).double())
    # the part of the solver's time that maps a to u (steps cost alike, so a share of steps): the
    # model's own account if it gives one, else the problem's operator-data share
    fraction = facts.pop("reference_output_share", None)
    fraction = float(getattr(problem, "output_work_fraction", 1.0) if fraction is None else fraction)
    result = {
        "run": str(run), "device": str(device), "n_samples": int(cfg.n_samples), "seed": seed,
        "resolution": int(resolution), **facts,
        "reference_s": t_ref,
        **({"reference_output_share": fraction} if fraction < 1 else {}),
        "surrogate_s": t_model, "speedup": fraction * t_ref / t_model, "rel_l2_mean": errors.mean().item(),
        "rel_l2_max": errors.max().item(),
        **{k: v for k, v in solution.attrs.items() if k.startswith("baseline_")},
    }
    table = Table(title=f"surrogate {run.name} vs reference solver ({cfg.n_samples} fresh instances, {device})")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for k, v in result.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    output.console().print(table)
    return result


@reporting
def task(cfg: DictConfig) -> None:
    from .. import progress

    progress.enable(cfg.get("progress") not in (None, False))  # `progress=null`: no bars
    import torch
    from hydra.core.hydra_config import HydraConfig
    from rich.table import Table

    from .. import plotting
    from ..data.export import export
    from ..training.trainer import DTYPES, resolve_device

    out = Path(HydraConfig.get().runtime.output_dir)
    name = HydraConfig.get().runtime.choices["problem"]
    output.context(run_dir=str(out))
    if cfg.ckpt is not None:
        result = compare_surrogate(cfg)
        rundir.write_json(out / "surrogate.json", result)
        output.emit(f"sciml solve: surrogate of {cfg.ckpt} vs the {name} solver, rel_l2_mean {result['rel_l2_mean']:.2e}, "
                    f"speedup {result['speedup']:.3g}, wrote {out / 'surrogate.json'}",
                    surrogate_json=str(out / "surrogate.json"), **result)
        return
    device = resolve_device(cfg.device, key="device")
    problem = config.instantiate(cfg.problem).to(device, DTYPES[cfg.dtype])
    try:
        solution = problem.solve(resolution=cfg.resolution, n_samples=cfg.n_samples, seed=cfg.seed)
    except ValueError as err:  # solvers state which argument they refuse
        raise ConfigError("", str(err)) from None
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = float(solution.attrs.get("wall_time_s", float("nan")))
    h5 = export(out / name, solution, str(cfg.format), {
        "config": OmegaConf.to_yaml(cfg, resolve=True), "problem": name, "device": str(device),
        "versions": rundir.versions(),
    }, t_end=solution.attrs.get("t_end", getattr(problem, "t_end", None)))
    first = next(iter(solution.fields))
    png = plotting.save(plotting.field_figure(solution.grid, solution.fields[first][0],
                                              title=f"{name}: {first}"), out / f"{name}.png")

    table = Table(title=f"sciml solve problem={name}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for k, v in solution.fields.items():
        table.add_row(f"field {k}", f"{tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}")
    for k, v in solution.grid.items():
        table.add_row(f"grid {k}", f"{v.numel()} points in [{v.min().item():.4g}, {v.max().item():.4g}]")
    n = next(iter(solution.fields.values())).shape[0]
    table.add_row("device", str(device))
    table.add_row("wall time", f"{wall:.3f} s")
    table.add_row("samples/s", f"{n / wall:.3g}" if wall > 0 else "-")
    for k, v in solution.attrs.items():
        if k != "wall_time_s":
            table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    table.add_row("written", f"{h5}\n{png}")
    output.console().print(table)
    output.emit(f"sciml solve: {name} in {wall:.3g} s, wrote {h5}, {png}", problem=name, device=str(device),
                solve_time_s=wall, files=[str(h5), str(png)],
                fields={k: list(v.shape) for k, v in solution.fields.items()},
                attrs={k: v for k, v in solution.attrs.items() if isinstance(v, (int, float, str, bool))})


@hydra.main(version_base="1.3", config_path=str(config.CONFIG_DIR), config_name="solve")
def _app(cfg: DictConfig) -> None:
    task(cfg)


def main(args: list[str]) -> int:
    return run_app("solve", _app, args, preflight)
