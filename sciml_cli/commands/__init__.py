"""Wiring shared by the commands: Hydra apps, checks before any work, run-dir resolver.

Nothing here imports torch, so ``sciml --help`` stays fast.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from .. import config, rundir
from ..errors import ConfigError, SciMLError, full_error, report

#: flags that print something and run no job, so nothing needs checking first
INFO_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i",
              "--shell-completion", "-sc"}
GROUPS = ("model", "problem", "optim", "trainer", "experiment")


def _run_dir(base: str, resume: Any) -> str:
    if resume in (None, "", "null"):
        return str(rundir.new_run_dir(base))
    if str(resume) == "auto":
        run = rundir.newest_run(base)
        if run is None:  # preflight reports this properly; keep Hydra from crashing here
            return str(rundir.new_run_dir(base))
        return str(run)
    path = Path(str(resume))
    return str(path if path.is_dir() else path.resolve().parent.parent)


if not OmegaConf.has_resolver("sciml_run_dir"):
    # cached, so every access during one run (and every job of a sweep) sees one directory
    OmegaConf.register_new_resolver("sciml_run_dir", _run_dir, use_cache=True)


# -- parsing and expanding overrides --------------------------------------------------------------
def parse_overrides(overrides: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for line in overrides:
        try:
            parsed.extend(parser.parse_overrides([line]))
        except OverrideParseException:
            raise ConfigError(line, "not an override; expected key=value (e.g. optim.lr=1e-3)") from None
    return parsed


def check_group_choices(parsed: Iterable[Any]) -> None:
    for o in parsed:
        group = o.key_or_group
        if group in GROUPS and not o.is_delete():
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
            options = config.group_options(group)
            for v in values:
                if v is not None and str(v) not in options:
                    raise ConfigError(group, f"unknown option {str(v)!r}", options)


def expand(overrides: list[str]) -> list[list[str]]:
    """Every job of a sweep, as override lists (one list when nothing sweeps)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parsed = parse_overrides(overrides)
    check_group_choices(parsed)
    if not any(o.is_sweep_override() for o in parsed):
        return [overrides]
    try:
        batches = BasicSweeper.split_arguments(parsed, None)
    except Exception as err:  # e.g. interval sweeps, which only a sweeper plugin can sample
        raise ConfigError("", f"cannot expand the sweep: {str(err).splitlines()[0]}") from None
    return [job for batch in batches for job in batch]


def compose(config_name: str, overrides: list[str]) -> tuple[DictConfig, dict[str, str]]:
    """Compose like the Hydra app will, turning Hydra's errors into one-line ConfigErrors.

    Returns the job config (without the ``hydra`` node) and the chosen option of each group.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException

    job = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    try:
        with initialize_config_dir(config_dir=str(config.config_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name, overrides=job, return_hydra_config=True)
    except MissingConfigException as err:
        raise ConfigError("", _first(err), getattr(err, "options", None)) from None
    except ConfigCompositionException as err:
        m = re.search(r"Could not override '([^']+)'", str(err))
        if m:
            key = m.group(1)
            parent_key, _, leaf = key.rpartition(".")
            raise ConfigError(key, "no such key", _keys_of(config_name, job, key, parent_key)) from None
        raise ConfigError("", _first(err)) from None
    except HydraException as err:
        raise ConfigError("", _first(err)) from None
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, {k: v for k, v in choices.items() if not k.startswith("hydra")}


def _keys_of(config_name: str, overrides: list[str], bad: str, parent: str) -> list[str] | None:
    rest = [o for o in overrides if not o.lstrip("+~").startswith(bad + "=")]
    try:
        cfg, _ = compose(config_name, rest)
    except ConfigError:
        return None
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return [str(k) for k in node.keys() if not str(k).startswith("_")] if isinstance(node, DictConfig) else None


def _first(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def check_compatible(cfg: DictConfig) -> None:
    """The model's view must be offered by the problem; else name the problems that fit."""
    model_cls = config.import_target(cfg.model._target_, "model._target_")
    problem_cls = config.import_target(cfg.problem._target_, "problem._target_")
    view = getattr(model_cls, "view", None)
    if view is None or issubclass(problem_cls, view):
        return
    from ..problems.base import view_name

    fits = []
    for name in config.group_options("problem"):
        target = OmegaConf.load(config.config_dir() / "problem" / f"{name}.yaml").get("_target_")
        if target and issubclass(config.import_target(target, f"problem={name}"), view):
            fits.append(name)
    raise ConfigError(
        "problem", f"{problem_cls.__name__} does not offer the {view_name(view)} view that "
        f"{model_cls.__name__} needs; problems that do", fits)


# -- running a Hydra app ----------------------------------------------------------------------
def run_app(app: Callable[[], Any], args: list[str], preflight: Callable[[list[str]], None] | None) -> int:
    """Check ``args`` (unless only asking for help or a config print), then hand them to Hydra."""
    informational = any(a.split("=")[0] in INFO_FLAGS for a in args if a.startswith("-"))
    if preflight is not None and not informational:
        try:
            preflight([a for a in args if not a.startswith("-")])
        except SciMLError as err:
            if full_error():
                raise
            return report(err)
    sys.argv = [sys.argv[0], *args]
    app()
    return 0
