"""``sciml sweep``: a Hydra multirun of train, then a summary ranking the jobs."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .. import config, output
from ..errors import ConfigError
from . import run_app
from .train import preflight as train_preflight
from .train import task


def _read(path: Path, load: Any) -> Any:
    """``load(path)``, or ``None`` for a file that is missing or does not parse."""
    try:
        return load(path)
    except Exception:  # OSError, a JSON or YAML parser's error: the file cannot be used either way
        return None


def summarise(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory of ``sweep_dir``, best validation metric first (in the
    problem's direction), failures last."""
    rows = []
    for job in sorted((p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit()),
                      key=lambda p: int(p.name)):
        # a job killed while Hydra or the job wrote these (a full disk) leaves them damaged: no result, not a crash
        overrides = _read(job / ".hydra" / "overrides.yaml", OmegaConf.load) or []
        metrics = _read(job / "metrics.json", lambda p: json.loads(p.read_text())) or {"status": "no result"}
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


def _swept(rows: list[dict[str, Any]]) -> dict[str, list[tuple[str, Any]]]:
    """``{key: [(value, metric) per job]}`` for the overrides that differ between jobs."""
    per_job = [dict(o.split("=", 1) for o in r["overrides"].split() if "=" in o) for r in rows]
    keys = sorted({k for job in per_job for k in job if len({j.get(k) for j in per_job}) > 1})
    return {k: [(job.get(k), r["value"]) for job, r in zip(per_job, rows)] for k in keys}


def write_results(sweep_dir: Path, rows: list[dict[str, Any]]) -> list[Path]:
    """``metric_vs_<key>.png`` for each swept key (a log axis where the values span a decade or
    more), and ``best.yaml``: the best finished job's config, ready to run with
    ``sciml train --config-path <sweep dir> --config-name best``."""
    from .. import plotting
    from ..training.checkpoint import atomic_write

    written = []
    finished = [r for r in rows if r["status"] == "finished" and isinstance(r["value"], (int, float))
                and math.isfinite(r["value"])]
    if not finished:
        return written
    metric = finished[0]["metric"]
    for key, points in _swept(finished).items():
        fig = plotting.sweep_figure(key, [v for v, _ in points], [m for _, m in points], f"val {metric}",
                                    maximize=finished[0]["direction"] == "maximize",
                                    title=f"{Path(sweep_dir).name}: {len(points)} finished jobs")
        written.append(plotting.save(fig, Path(sweep_dir) / f"metric_vs_{key.replace('/', '_')}.png"))
    best = Path(finished[0]["dir"])
    job = best / ".hydra" / "config.yaml"
    hydra_cfg = best / ".hydra" / "hydra.yaml"
    cfg, hydra_job = _read(job, OmegaConf.load), _read(hydra_cfg, OmegaConf.load)
    choices = OmegaConf.select(hydra_job, "hydra.runtime.choices") if hydra_job is not None else None
    if isinstance(cfg, DictConfig) and choices is not None:
        runnable = OmegaConf.merge(OmegaConf.load(config.config_dir() / "train.yaml"), {"defaults": ["_self_"]}, cfg)
        # run like `sciml train`: its logging, and a run directory named after the job's problem and model
        runnable.hydra.run.dir = f"${{sciml_run_dir:${{paths.outputs}}/train/{choices.problem}-{choices.model},${{resume}}}}"
        runnable.hydra.pop("sweep", None)
        header = (f"# best of sweep {sweep_dir}: job {finished[0]['job']}, val {metric} {finished[0]['value']:.6g}\n"
                  f"# overrides: {finished[0]['overrides']}\n"
                  f"# run: sciml train --config-path {Path(sweep_dir).resolve()} --config-name best\n")
        atomic_write(Path(sweep_dir) / "best.yaml",
                     lambda tmp: Path(tmp).write_text(header + OmegaConf.to_yaml(runnable)))
        written.append(Path(sweep_dir) / "best.yaml")
    return written


class SweepSummary(Callback):
    """Hydra callback: when every job has ended, write ``summary.csv``, the plots of the metric
    against each swept key and ``best.yaml``, and print the ranking."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if sweep_dir.is_dir():
            rows = write_summary(sweep_dir)
            write_results(sweep_dir, rows)
            print_summary(rows, sweep_dir)


def _check_sweeps(overrides: list[str]) -> list[str]:
    """The overrides to check the jobs with. A sweep that gives no value (``range(0)``,
    ``range(8,4)``, a ``glob`` matching no option) or cannot be expanded (``range(1,2,0)``) is a
    one-line error naming its key: else Hydra would launch no job, or crash, after making the
    sweep directory. A ``glob`` over a group's options becomes the ``choice`` of the options it
    matches, which Hydra's own expansion gives too (expanding it needs Hydra's config loader)."""
    from hydra.core.override_parser.types import Glob

    from . import parse_overrides

    out = []
    for line, o in zip(overrides, parse_overrides(overrides)):
        if not o.is_sweep_override() or o.is_interval_sweep():
            out.append(line)
            continue
        key, typed = o.key_or_group, line.split("=", 1)[1]
        if isinstance(o.value(), Glob):
            if not (config.config_dir() / key).is_dir():
                raise ConfigError(key, f"{typed}: glob() chooses among a config group's options, and {key} is no "
                                       "group; list the values instead (a,b or choice(a,b))")
            options = config.group_options(key)
            names = o.value().filter(options)
            if not names:
                raise ConfigError(key, f"{typed} matches no option", options)
            out.append(f"{line.split('=', 1)[0]}=choice({','.join(names)})")
            continue
        try:
            values = list(o.sweep_string_iterator())
        except Exception as err:
            raise ConfigError(key, f"{typed}: {str(err).splitlines()[0]}") from None
        if not values:
            raise ConfigError(key, f"{typed} is empty: no values to try (range(start, stop[, step]) gives start, "
                                   "start + step, ... short of stop)" if o.is_range_sweep() else
                              f"{typed} is empty: no values to try")
        out.append(line)
    return out


def _check_hydra_settings(cfg: DictConfig) -> None:
    """The sweeper's and launcher's numbers that would otherwise fail after the sweep directory
    is made: Optuna's ``n_trials`` and ``n_jobs`` (trials asked at once), the basic sweeper's
    ``max_batch_size``, joblib's ``n_jobs`` (as joblib reads it: n > 0 workers, or -1 for all
    cores, -2 all but one, ...; 0 has no meaning)."""
    from . import check_positive_ints

    sweeper, launcher = cfg.hydra.sweeper, cfg.hydra.launcher
    target = str(sweeper.get("_target_", "")).lower()
    if "optuna" in target:
        check_positive_ints({f"hydra.sweeper.{k}": sweeper.get(k) for k in ("n_trials", "n_jobs")})
        rate = sweeper.get("max_failure_rate")
        if rate is not None and not 0 <= rate <= 1:
            raise ConfigError("hydra.sweeper.max_failure_rate", f"must be between 0 and 1 (the share of a batch's "
                                                                f"trials that may fail), got {rate!r}")
    elif "basic_sweeper" in target:
        check_positive_ints({"hydra.sweeper.max_batch_size": sweeper.get("max_batch_size")})
    if "joblib" in str(launcher.get("_target_", "")).lower():
        n_jobs = launcher.get("n_jobs")
        if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
            raise ConfigError("hydra.launcher.n_jobs", f"must be a positive integer (jobs at once) or negative "
                                                       f"(-1: all cores, -2: all but one, ...), got {n_jobs!r}")


def preflight(overrides: list[str]) -> list[str]:
    """Check every job (or, for a search, representative ones) and the sweeper's and launcher's
    settings, then settle the study of an Optuna sweep: ``n_trials`` is the study's total, so a
    study that already holds trials (an earlier, interrupted sweep; another machine's) runs only
    the ones still missing."""
    from . import _direction, compose, parse_overrides

    checked = _check_sweeps(overrides)
    train_preflight(checked, config_name="sweep")
    plain = [line for line, o in zip(checked, parse_overrides(checked)) if not o.is_sweep_override()]
    cfg, _ = compose("sweep", plain, keep_hydra=True)
    _check_hydra_settings(cfg)
    sweeper = cfg.hydra.sweeper
    if "optuna" not in str(sweeper.get("_target_", "")).lower():
        return []
    # the study optimises the problem's validation metric in its direction, unless told otherwise
    given = any(o.split("=", 1)[0] == "hydra.sweeper.direction" for o in overrides)
    extra = [] if given else [f"hydra.sweeper.direction={_direction(cfg.problem._target_)}"]
    storage = str(sweeper.get("storage") or "")
    if not storage.startswith("sqlite:///"):
        return extra
    db = Path(storage.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)  # sqlite makes the file, not its directory
    done = _finished_trials(storage, str(sweeper.study_name)) if db.is_file() else 0
    left = int(sweeper.n_trials) - done
    if left <= 0:
        raise ConfigError("hydra.sweeper.n_trials", f"the study {sweeper.study_name} in {db} already has {done} "
                                                    f"finished trials of {sweeper.n_trials}; raise n_trials to run more")
    if not done:
        return extra
    print(f"sciml: study {sweeper.study_name} in {db} has {done} finished trials; running the {left} left",
          file=sys.stderr)
    extra.append(f"hydra.sweeper.n_trials={left}")
    seed = OmegaConf.select(sweeper, "sampler.seed")
    if isinstance(seed, int):  # the same seed again would draw the same first trials again
        extra.append(f"hydra.sweeper.sampler.seed={seed + done}")
    return extra


def _finished_trials(storage: str, study_name: str) -> int:
    """Trials of the study that completed, failed or were pruned (one interrupted mid-way, still
    marked running, runs again)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study in this file yet
        return 0
    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    return sum(t.state in ended for t in study.get_trials(deepcopy=False))


@hydra.main(version_base="1.3", config_path=str(config.CONFIG_DIR), config_name="sweep")
def _app(cfg: DictConfig) -> float | None:
    return task(cfg)


def main(args: list[str]) -> int:
    import os

    # optuna 2 on SQLAlchemy 1.4 (pinned) warns about SQLAlchemy 2 on every import
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
    return run_app("sweep", _app, args, preflight)
