"""``sciml solve``: run a problem's reference solver; write HDF5 and a PNG."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from .. import config, output, rundir
from ..errors import ConfigError, reporting
from . import check_positive_ints, check_writable, compose, expand, parse_overrides, run_app


def preflight(overrides: list[str]) -> list[str]:
    """Everything the solve will need, checked before its directory is made: the command's own
    keys, the device and dtype, the run of ``ckpt=`` (its checkpoint loads and its weights fit
    its model; a ``problem=`` given names the problem it was trained on), and the problem built
    at the resolution asked for (its constructor and :meth:`Problem.check_solve` refuse a grid
    or a sample count its solver cannot take).

    Returns ``problem=<the run's problem>`` for a ``ckpt=`` without ``problem=``, so that the
    solve is labelled and filed under the problem the run was trained on."""
    import inspect

    from ..training.trainer import DTYPES, resolve_device

    global _EXISTING
    extra: list[str] = []
    for job in expand(overrides):
        parsed = parse_overrides(job)
        problem_given = any(o.key_or_group == "problem" and not o.is_delete() for o in parsed)
        ckpt = next((o.value() for o in parsed if o.key_or_group == "ckpt" and not o.is_delete()), None)
        run = _surrogate_run(str(ckpt)) if ckpt is not None and "${" not in str(ckpt) else None
        if run is not None and not problem_given:
            extra = [f"problem={_run_problem(run[1], run[0])}"]
        cfg, choices = compose("solve", [*job, *extra])
        config.check(cfg)
        check_positive_ints({k: cfg.get(k) for k in ("resolution", "n_samples", "batch_size", "repeats")})
        if cfg.get("format") not in FORMATS:
            raise ConfigError("format", f"{cfg.get('format')!r} is not a layout sciml writes", FORMATS)
        if cfg.get("dtype") not in DTYPES:
            raise ConfigError("dtype", f"{cfg.get('dtype')!r} is not a solver precision", DTYPES, given=str(cfg.get("dtype")))
        resolve_device(str(cfg.device), key="device")
        check_writable("paths.outputs", str(cfg.paths.outputs))
        _EXISTING = _existing(Path(str(cfg.paths.outputs)) / "solve" / str(choices.get("problem")))
        if cfg.ckpt is not None:
            path, problem, model = run if run is not None else _surrogate_run(str(cfg.ckpt))
            cls = config.import_target(cfg.problem._target_, "problem._target_")
            if problem_given and cls is not type(problem):
                name = _run_problem(problem, path)
                raise ConfigError("ckpt", f"the run was trained on {name} ({_qualified(type(problem))}), not "
                                          f"{choices.get('problem')}; drop problem= or give problem={name}")
            _check_solve(problem, cfg.resolution or model.surrogate_resolution(problem), cfg.n_samples, "ckpt")
            continue
        problem = cfg.problem.copy()
        target = config.import_target(problem._target_, "problem._target_")
        if cfg.resolution is not None and "resolution" in inspect.signature(target).parameters:
            problem.resolution = cfg.resolution
        try:
            built = config.instantiate(problem)
        except ConfigError as err:  # the solve's own `resolution=` is what the user typed
            if cfg.resolution is not None and str(err).startswith("problem.resolution:"):
                raise ConfigError("resolution", str(err).split(": ", 1)[1]) from None
            raise
        _check_solve(built, cfg.resolution, cfg.n_samples)
    return extra


#: the nearest folder above the run directory that existed before this solve (see :func:`_discard`)
_EXISTING: Path | None = None


def _existing(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_solve(problem, resolution: int | None, n_samples: int, key: str = "") -> None:
    """What the problem's solver would refuse of these arguments (its message names the key;
    one of the problem's own, for the problem of a ``ckpt=`` run, under ``key``)."""
    try:
        problem.check_solve(resolution, int(n_samples))
    except ValueError as err:
        own = str(err).split(":", 1)[0] in ("resolution", "n_samples")
        raise ConfigError("" if own else key, str(err)) from None


def _surrogate_run(ckpt: str):
    """``(best.pt, problem, model)`` of the run ``ckpt=`` names, rebuilt on the CPU; a checkpoint
    that is missing or cannot be used is a config error on ``ckpt``."""
    from ..errors import CheckpointError
    from .eval import checkpoint_problem, restore

    path = Path(ckpt) / "checkpoints" / "best.pt"
    if not path.is_file():
        raise ConfigError("ckpt", f"no checkpoints/best.pt in {ckpt}")
    try:
        _, problem, model, _ = restore(path, "cpu")
    except CheckpointError as err:
        raise ConfigError("ckpt", checkpoint_problem(err)) from None
    return path, problem, model


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _run_problem(problem, path: Path) -> str:
    """The ``problem`` config that builds the class a run was trained on."""
    for name in config.group_options("problem"):
        try:
            target = config.option_config("problem", name).get("_target_")
        except Exception:  # a config this reading does not understand: not the one
            continue
        if str(target) == _qualified(type(problem)):
            return name
    raise ConfigError("ckpt", f"the run of {path} was trained on {_qualified(type(problem))}, which no problem "
                              "config builds", config.group_options("problem"))


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

    from ..errors import CheckpointError
    from ..numerics.metrics import relative_l2
    from .eval import checkpoint_problem, restore

    run = Path(str(cfg.ckpt))
    path = run / "checkpoints" / "best.pt"
    if not path.is_file():
        raise ConfigError("ckpt", f"no checkpoints/best.pt in {run}")
    try:
        state, problem, model, device = restore(path, cfg.device)
    except CheckpointError as err:
        raise ConfigError("ckpt", checkpoint_problem(err)) from None
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
    from hydra.core.hydra_config import HydraConfig

    out = Path(HydraConfig.get().runtime.output_dir)
    name = HydraConfig.get().runtime.choices["problem"]
    output.context(run_dir=str(out))
    try:
        _solve(cfg, out, name)
    except ConfigError:
        # found only by solving (a solver that diverges, a surrogate that refuses the grid):
        # the run directory holds nothing but its config and log, so it goes, as if the
        # preflight had found it
        _discard(out)
        raise


def _discard(out: Path) -> None:
    """Remove the run directory ``out`` that Hydra just made for this solve, if it holds only
    what Hydra wrote (never one given with ``hydra.run.dir``, which may be the user's)."""
    import shutil

    from hydra.core.hydra_config import HydraConfig

    if any(o.split("=")[0].lstrip("+~") == "hydra.run.dir" for o in HydraConfig.get().overrides.hydra):
        return
    if out.is_dir() and {p.name for p in out.iterdir()} <= {".hydra", "solve.log"}:
        shutil.rmtree(out, ignore_errors=True)
        # and the folders above it that Hydra made for it (the preflight saw which existed)
        parent = out.resolve().parent
        while _EXISTING is not None and parent != _EXISTING and _EXISTING in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent


def _solve(cfg: DictConfig, out: Path, name: str) -> None:
    import torch
    from rich.table import Table

    from .. import plotting
    from ..data.export import export
    from ..training.trainer import DTYPES, resolve_device

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
    except ValueError as err:  # solvers state which argument they refuse: a problem's own is problem.<key>
        key, _, message = str(err).partition(": ")
        if message and key in cfg.problem:
            raise ConfigError(f"problem.{key}", message) from None
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
