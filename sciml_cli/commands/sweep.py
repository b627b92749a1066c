"""``sciml sweep``: a Hydra multirun of train, then a summary ranking the jobs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .. import config, output
from . import run_app
from .train import preflight as train_preflight
from .train import task


def summarise(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory of ``sweep_dir``, best validation metric first (in the
    problem's direction), failures last."""
    rows = []
    for job in sorted((p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit()),
                      key=lambda p: int(p.name)):
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.load(overrides_file) if overrides_file.exists() else []
        metrics_file = job / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {"status": "no result"}
        name = metrics.get("val_metric", "rel_l2")
        value = metrics.get(f"val/{name}")
        rows.append({
            "job": int(job.name),
            "direction": metrics.get("val_direction", "minimize"),
            "overrides": " ".join(str(o) for o in overrides),
            "status": metrics.get("status"),
            "metric": name,
            "value": value,
            "best": metrics.get(f"best/{name}"),
            "loss": metrics.get("loss/total"),
            "steps": metrics.get("step"),
            "wall_time_s": metrics.get("wall_time_s"),
            "dir": str(job),
            "error": metrics.get("error", ""),
        })
    ok = lambda r: isinstance(r["value"], (int, float)) and math.isfinite(r["value"])  # noqa: E731
    # the problem's metric direction: errors rank lowest first, PSNR highest first
    sign = lambda r: -1.0 if r["direction"] == "maximize" else 1.0  # noqa: E731
    rows.sort(key=lambda r: (not ok(r), sign(r) * r["value"] if ok(r) else 0.0, r["job"]))
    return rows


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    from ..training.checkpoint import atomic_write

    rows = summarise(sweep_dir)
    fields = ["rank", "job", "overrides", "status", "metric", "direction", "value", "best", "loss", "steps",
              "wall_time_s", "dir", "error"]

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            for rank, row in enumerate(rows, start=1):
                w.writerow({"rank": rank, **row})

    atomic_write(Path(sweep_dir) / "summary.csv", write)
    return rows


def print_summary(rows: list[dict[str, Any]], sweep_dir: Path) -> None:
    """The ranking table, then the sweep's result: every job with its status."""
    from rich.table import Table

    metric = rows[0]["metric"] if rows else "rel_l2"
    table = Table(title=f"sweep {sweep_dir} (ranked by validation {metric})")
    for col in ("rank", "job", "overrides", "status", f"val {metric}", "loss", "wall s"):
        table.add_column(col, justify="right" if col not in ("overrides", "status") else "left")
    fmt = lambda v: f"{v:.3e}" if isinstance(v, float) else ("-" if v is None else str(v))  # noqa: E731
    # the table shows what differs between jobs; summary.csv keeps every override
    common = set.intersection(*(set(r["overrides"].split()) for r in rows)) if rows else set()
    for rank, r in enumerate(rows, start=1):
        varying = " ".join(o for o in r["overrides"].split() if o not in common)
        table.add_row(str(rank), str(r["job"]), varying, str(r["status"]), fmt(r["value"]),
                      fmt(r["loss"]), fmt(r["wall_time_s"]))
    output.console().print(table)

    summary = Path(sweep_dir) / "summary.csv"
    done = [r for r in rows if r["status"] == "finished"]
    best = done[0] if done and isinstance(done[0]["value"], (int, float)) else None
    score = f", best val/{metric} {output.number(best['value'], best['direction'])} (job {best['job']})" if best else ""
    # a sweep with a failed job exits 1, after every job ran and the summary is written
    code = 0 if rows and len(done) == len(rows) else 1
    output.emit(f"sciml sweep: {len(done)} of {len(rows)} jobs finished{score}, summary {summary}", exit_code=code,
                sweep_dir=str(sweep_dir), summary=str(summary), metric=metric,
                **({"error": f"{len(rows) - len(done)} of {len(rows)} jobs did not finish"} if code else {}),
                best_job=best and best["job"], best_value=best and best["value"],
                jobs=[{"rank": rank, **{("run_dir" if k == "dir" else k): v for k, v in r.items()}}
                      for rank, r in enumerate(rows, start=1)])


class SweepSummary(Callback):
    """Hydra callback: when every job has ended, write ``summary.csv`` and print the ranking."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if sweep_dir.is_dir():
            print_summary(write_summary(sweep_dir), sweep_dir)


def preflight(overrides: list[str]) -> None:
    train_preflight(overrides, config_name="sweep")


@hydra.main(version_base="1.3", config_path=str(config.CONFIG_DIR), config_name="sweep")
def _app(cfg: DictConfig) -> float | None:
    return task(cfg)


def main(args: list[str]) -> int:
    return run_app("sweep", _app, args, preflight)
