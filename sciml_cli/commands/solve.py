"""``sciml solve``: run a problem's reference solver; write HDF5 and a PNG."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from .. import config, rundir
from ..errors import reporting
from . import compose, expand, run_app


def preflight(overrides: list[str]) -> None:
    for job in expand(overrides):
        cfg, _ = compose("solve", job)
        config.check(cfg)
        for key in ("resolution", "n_samples"):
            v = cfg.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                from ..errors import ConfigError

                raise ConfigError(key, f"must be a positive integer, got {v!r}")


@reporting
def task(cfg: DictConfig) -> None:
    import torch
    from hydra.core.hydra_config import HydraConfig
    from rich.console import Console
    from rich.table import Table

    from .. import plotting
    from ..data.hdf5 import write_solution
    from ..training.trainer import DTYPES, resolve_device

    out = Path(HydraConfig.get().runtime.output_dir)
    name = HydraConfig.get().runtime.choices["problem"]
    device = resolve_device(cfg.device)
    problem = config.instantiate(cfg.problem).to(device, DTYPES[cfg.dtype])
    try:
        solution = problem.solve(resolution=cfg.resolution, n_samples=cfg.n_samples, seed=cfg.seed)
    except ValueError as err:  # solvers state which argument they refuse
        from ..errors import ConfigError

        raise ConfigError("", str(err)) from None
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = float(solution.attrs.get("wall_time_s", float("nan")))
    h5 = write_solution(out / f"{name}.h5", solution, {
        "config": OmegaConf.to_yaml(cfg, resolve=True), "problem": name, "device": str(device),
        "versions": rundir.versions(),
    })
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
    Console().print(table)


@hydra.main(version_base="1.3", config_path=str(config.CONFIG_DIR), config_name="solve")
def _app(cfg: DictConfig) -> None:
    task(cfg)


def main(args: list[str]) -> int:
    return run_app(_app, args, preflight)
