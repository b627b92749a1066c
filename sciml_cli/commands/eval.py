"""``sciml eval run=<dir>``: rebuild the model from a checkpoint alone and score it."""

from __future__ import annotations

import math
import re
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from .. import config, output, rundir
from ..errors import ConfigError, reporting
from . import check_positive_ints, compose, run_app


def _checkpoint_path(cfg: DictConfig) -> Path:
    run = Path(str(cfg.run))
    if not run.is_dir():
        raise ConfigError("run", f"no such run directory: {run}")
    if cfg.checkpoint not in ("best", "last"):
        raise ConfigError("checkpoint", f"unknown checkpoint {cfg.checkpoint!r}", ["best", "last"])
    path = run / "checkpoints" / f"{cfg.checkpoint}.pt"
    if not path.is_file():
        raise ConfigError("run", f"{run} has no checkpoints/{cfg.checkpoint}.pt")
    return path


def preflight(overrides: list[str]) -> None:
    cfg, _ = compose("eval", overrides)
    if OmegaConf.is_missing(cfg, "run"):
        raise ConfigError("run", "required: the run directory to evaluate, e.g. run=outputs/train/heat-pinn/<time>")
    check_positive_ints({"resolution": cfg.resolution})
    if cfg.resolutions is not None:
        if not OmegaConf.is_list(cfg.resolutions):
            raise ConfigError("resolutions", f"must be a list of positive integers, e.g. [256,512], got {cfg.resolutions!r}")
        check_positive_ints({f"resolutions.{i}": r for i, r in enumerate(cfg.resolutions)})
    path = _checkpoint_path(cfg)
    from ..errors import CheckpointError
    from ..problems.base import OperatorData
    from ..training.trainer import resolve_device

    resolve_device(str(cfg.device), key="device")
    # the checkpoint loads and its weights fit its model (rebuilt on the CPU), and each grid asked
    # for is one the problem's data can be made at: checked before any data is generated
    try:
        _, problem, model, _ = restore(path, "cpu", str(cfg.paths.data) if _data_given(overrides) else None)
    except CheckpointError as err:
        raise ConfigError("run", checkpoint_problem(err)) from None
    grids = [("resolution", cfg.resolution), *((f"resolutions.{i}", r) for i, r in enumerate(cfg.resolutions or []))]
    own = model.evaluation_grid(problem)
    for key, resolution in grids:
        if own is not None and resolution is not None and int(resolution) != own:
            raise ConfigError(key, f"{type(model).__name__} evaluates on the grid it was built for", [str(own)],
                              given=str(resolution))
    if isinstance(problem, OperatorData) and OperatorData in getattr(type(model), "requires", ()):
        for key, resolution in grids:
            try:
                if resolution is not None:
                    problem.check_resolution(int(resolution))
            except ValueError as err:
                raise ConfigError(key, str(err).removeprefix("resolution: ")) from None


def _data_given(overrides: list[str]) -> bool:
    """Whether the command names a data directory (``paths.data``, or ``paths.outputs`` that
    holds it): it then wins over the one the run was trained with."""
    return any(o.split("=")[0].lstrip("+~") in ("paths.data", "paths.outputs") for o in overrides)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def checkpoint_problem(err: Exception) -> str:
    """Why a checkpoint cannot be used, for a config error on the key that names it: one line,
    and of the underlying library's message its first sentence only (torch's explanation of
    ``weights_only`` goes on for lines, which the checkpoint's error cut mid-word)."""
    lines = _ANSI.sub("", str(err)).strip().splitlines()
    text = lines[0].strip() if lines else type(err).__name__
    head, sep, detail = text.rpartition(": ")
    sentence = re.match(r"(.*?[.!?])\s+\S", detail)
    return f"{head}{sep}{sentence.group(1)}" if sentence else text


def restore(path: Path, device_name: str, data_dir: str | None = None):
    """``(state, problem, model, device)`` rebuilt from a checkpoint alone, model in eval mode;
    ``data_dir`` replaces the data directory the run was trained with (for problems with one)."""
    from ..errors import CheckpointError
    from ..training import checkpoint
    from ..training.trainer import DTYPES, resolve_device

    state = checkpoint.load(path)
    try:
        saved = OmegaConf.create(state["config"])
    except Exception as err:  # a damaged or hand-edited config: one line, not a parser traceback
        raise CheckpointError(f"{path}: its stored config is not valid YAML: {str(err).splitlines()[0][:160]}") from None
    if data_dir is not None and "data_dir" in saved.problem:
        saved.problem.data_dir = str(data_dir)
    config.check(saved)  # refuses anything but registered classes before building one
    device = resolve_device(device_name, key="device")
    dtype = DTYPES[saved.trainer.get("dtype", "float32")]
    problem = config.instantiate(saved.problem).to(device, dtype)
    model = config.instantiate(saved.model, problem=problem).to(device, dtype)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the model in its config: {str(err).splitlines()[0]}") from None
    model.eval()
    return state, problem, model, device


@reporting
def task(cfg: DictConfig) -> dict:
    import torch
    from hydra.core.hydra_config import HydraConfig
    from rich.table import Table

    from .. import plotting, progress
    from ..errors import CheckpointError

    progress.enable(cfg.get("progress") not in (None, False))  # `progress=null`: no bars
    path = _checkpoint_path(cfg)
    run = path.parent.parent
    output.context(run_dir=str(run))
    # a data directory given to eval wins over the one the run was trained with
    given = _data_given(list(HydraConfig.get().overrides.task))
    try:
        state, problem, model, device = restore(path, cfg.device, str(cfg.paths.data) if given else None)
    except CheckpointError as err:  # as the preflight says it (the file changed since)
        raise ConfigError("run", checkpoint_problem(err)) from None
    with torch.no_grad():
        evaluation = model.evaluate(problem, resolution=cfg.resolution)
        baselines = problem.baselines()  # of the data just evaluated, before the sweep loads more
        sweep = {int(r): model.evaluate(problem, resolution=int(r)).metrics for r in (cfg.resolutions or [])}
    result = {
        "run": str(run), "checkpoint": str(path), "step": state["step"],
        "resolution": cfg.resolution, "device": str(device), "metrics": evaluation.metrics,
    }
    if getattr(problem, "data_dir", None) is not None:
        result["data_dir"] = str(problem.data_dir)  # which data it scored on
    if sweep:
        result["resolution_sweep"] = sweep
    if baselines:
        result["baselines"] = baselines
    name = f"eval_{cfg.checkpoint}"
    title = f"{cfg.checkpoint}.pt, step {state['step']}"
    if evaluation.per_sample is not None and evaluation.per_sample.numel() > 1:
        result["per_sample_rel_l2"] = evaluation.per_sample.detach().cpu().tolist()
    if evaluation.per_step is not None:
        result["per_step_rel_l2"] = evaluation.per_step.detach().cpu().tolist()
    if evaluation.details:
        result["details"] = evaluation.details
    # the model says what to draw: what its evaluation means is its own business
    pngs = [plotting.save(fig, run / "plots" / (f"{name}_{key}.png" if key else f"{name}.png"))
            for key, fig in model.figures(problem, evaluation, title).items()]
    rundir.write_json(run / "eval.json", result)

    console = output.console()
    table = Table(title=f"sciml eval {run} ({cfg.checkpoint}.pt, step {state['step']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in evaluation.metrics.items():
        table.add_row(k, _number(v))
    for k, v in baselines.items():
        table.add_row(f"baseline: {k}", _number(v))
    console.print(table)
    if sweep:
        keys = list(next(iter(sweep.values())))
        res_table = Table(title="resolution sweep (same checkpoint, evaluated at each resolution)")
        res_table.add_column("resolution", justify="right")
        for k in keys:
            res_table.add_column(k, justify="right")
        for r, m in sweep.items():
            res_table.add_row(str(r), *(_number(m[k]) for k in keys))
        console.print(res_table)
    for line in evaluation.details.get("equation", []):
        console.print(line, markup=False, highlight=False)
    metric = problem.val_metric
    score = (f", {metric} {output.number(evaluation.metrics[metric], problem.val_direction)}"
             if metric in evaluation.metrics else "")
    output.emit(f"sciml eval: {cfg.checkpoint}.pt of {run} (step {state['step']}){score}, wrote {run / 'eval.json'}",
                eval_json=str(run / "eval.json"), plots=[str(p) for p in pngs],
                **{k: v for k, v in result.items() if k != "run"})
    return result


@hydra.main(version_base="1.3", config_path=str(config.CONFIG_DIR), config_name="eval")
def _app(cfg: DictConfig) -> None:
    task(cfg)


def main(args: list[str]) -> int:
    return run_app("eval", _app, args, preflight)


def _number(value: float) -> str:
    """A metric for the table: whole numbers (steps, counts, grid factors) as integers."""
    if math.isfinite(value) and float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.4e}"
