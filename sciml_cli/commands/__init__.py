"""Wiring shared by the commands: Hydra apps, checks before any work, run-dir resolver.

Nothing here imports torch, so ``sciml --help`` stays fast.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from .. import config, output, rundir
from ..errors import (
    ConfigError,
    DiskFullError,
    SciMLError,
    Stopped,
    free_bytes,
    full_error,
    report,
    size_text,
)

#: flags that print something and run no job, so nothing needs checking first
INFO_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i",
              "--shell-completion", "-sc"}
#: Hydra flags that take a value: a primary config other than ours (``--config-name best``)
VALUE_FLAGS = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}
GROUPS = ("model", "problem", "optim", "trainer", "experiment", "hparams_search")


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


def _direction(target: str) -> str:
    """``minimize`` or ``maximize``: the validation metric's direction of the problem class
    ``target`` (a sweeper optimises what ``best.pt`` ranks by)."""
    return str(config.import_target(str(target), "problem._target_").val_direction)


if not OmegaConf.has_resolver("sciml_run_dir"):
    # cached, so every access during one run (and every job of a sweep) sees one directory
    OmegaConf.register_new_resolver("sciml_run_dir", _run_dir, use_cache=True)
if not OmegaConf.has_resolver("sciml_direction"):
    OmegaConf.register_new_resolver("sciml_direction", _direction)


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
                    raise ConfigError(group, f"unknown option {str(v)!r}", options, given=str(v))


#: groups a command cannot run without (``experiment`` and ``hparams_search`` may be null)
REQUIRED_GROUPS = {"train": ("model", "problem", "optim", "trainer"), "sweep": ("model", "problem", "optim", "trainer"),
                   "solve": ("problem",), "eval": ()}
#: no config key is this long; longer ones would reach the file system as a group's path
MAX_KEY_LENGTH = 255


def check_overrides(command: str, overrides: list[str]) -> list[str]:
    """Each override as Hydra's grammar and our config tree need it, checked before anything is
    composed: an empty or overlong key, a required group removed or set to null, and a sweep
    given to a command that runs one job are one-line errors. A value the grammar cannot read
    (``model.activation=tänh``: non-ASCII) comes back quoted, so that the key's own check names
    it and its valid choices."""
    out = []
    for line in overrides:
        key, eq, value = line.partition("=")
        bare = key.lstrip("+~")
        if len(bare) > MAX_KEY_LENGTH:
            raise ConfigError(bare, f"no such key (a key of {len(bare)} characters)")
        try:
            o = parse_overrides([line])[0]
        except ConfigError as err:
            quoted = f"{key}='{value}'"
            if not (eq and bare and value) or "'" in value:
                raise
            try:
                o = parse_overrides([quoted])[0]
            except ConfigError:
                raise err from None  # unreadable either way: the line as typed
            line = quoted
        group = o.key_or_group
        if not group:
            raise ConfigError(line, "not an override: nothing before '='; expected key=value (e.g. optim.lr=1e-3)")
        if group in REQUIRED_GROUPS.get(command, ()):
            if o.is_delete():
                raise ConfigError(group, f"cannot be removed: `sciml {command}` needs one", config.group_options(group))
            if not o.is_sweep_override() and o.value() is None:
                raise ConfigError(group, "must name an option, got null", config.group_options(group))
        if group in ("hydra.run.dir", "hydra.sweep.dir") and not o.is_sweep_override() \
                and "${" not in str(o.value()):
            check_writable(group, "" if o.value() is None else str(o.value()))
        if group == "paths.data" and not o.is_sweep_override() and o.value() is not None \
                and "${" not in str(o.value()):
            data = Path(str(o.value()))  # read-only is fine: the data may all be cached there
            if not str(o.value()).strip() or (data.exists() and not data.is_dir()):
                raise ConfigError(group, f"{str(o.value())!r} is not a directory (the data cache: default outputs/data)")
        if command != "sweep" and o.is_sweep_override():
            raise ConfigError(group, f"{value!r} is a sweep, and `sciml {command}` runs one job: give one value, "
                                     "or run every value with `sciml sweep`")
        out.append(line)
    return out


#: free space below which a run is not started
MIN_FREE_BYTES = 1 << 20


def check_writable(key: str, path: str | Path) -> None:
    """``path`` is a directory we can write in, or can be made in one."""
    if not str(path).strip():  # an unset shell variable: `${paths.outputs}/train` would be /train
        raise ConfigError(key, "must not be empty; a directory for the runs (e.g. outputs)")
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(key, f"cannot make {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(key, f"cannot write under {existing} (permission denied)")
    try:
        pseudo = os.statvfs(existing).f_blocks == 0
    except OSError:
        pseudo = False
    if pseudo:  # /proc, /sys: no blocks at all, so not a full disk but no place for files
        raise ConfigError(key, f"cannot make {path}: {existing} is not on a disk (a kernel file system)")
    free = free_bytes(existing)
    if free is not None and free < MIN_FREE_BYTES:  # not even a run directory's configs and log fit
        raise DiskFullError(f"no space left under {existing} ({size_text(free)} free; a run needs at least "
                            f"{size_text(MIN_FREE_BYTES)}); {key} can point elsewhere")


_REFERENCE = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")


def _references(node: Any, found: set[str]) -> set[str]:
    """Every key an interpolation ``${a.b}`` in ``node`` (a plain container) points to."""
    if isinstance(node, str):
        found.update(_REFERENCE.findall(node))
    elif isinstance(node, dict):
        for v in node.values():
            _references(v, found)
    elif isinstance(node, list):
        for v in node:
            _references(v, found)
    return found


def check_added_keys(cfg: DictConfig, overrides: list[str]) -> None:
    """A key added with ``+`` must be read by something. Under a class (``model.``,
    ``trainer.``, a phase) the constructor's signature judges it (:func:`config.check`); a
    mapping a class takes (``model.loss_weights``) is the class's to check; anywhere else
    (``optim.``, ``paths.``, the top level) an interpolation must use it, else it would be
    silently ignored (``+optim.step=5`` for ``optim.steps``)."""
    raw = None
    for o in parse_overrides(overrides):
        key = o.key_or_group
        if not o.is_add() or key.startswith("hydra.") or (config.config_dir() / key.replace(".", "/")).is_dir():
            continue  # a group option (+experiment=...) is a file Hydra found
        if raw is None:
            raw = OmegaConf.to_container(cfg, resolve=False)
            refs = _references(raw, set())
        parts = key.split(".")
        node, owned = raw, False
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
            owned = owned or (isinstance(node, dict) and "_target_" in node)
        if owned or any(key == r or key.startswith(r + ".") for r in refs):
            continue
        siblings = [str(k) for k in node if not str(k).startswith("_") and str(k) not in (parts[-1], "hydra")] \
            if isinstance(node, dict) else []
        raise ConfigError(key, "no such key: nothing reads it", siblings, given=parts[-1])


def check_positive_ints(values: dict[str, Any]) -> None:
    """Each value is null or a positive integer (a command's own keys, which no constructor
    signature checks), reported by its key."""
    for key, v in values.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(key, f"must be a positive integer, got {v!r}")


def expand(overrides: list[str], config_name: str | None = None) -> list[list[str]]:
    """The jobs to check before a sweep starts, as override lists (one list when nothing sweeps).

    A grid (comma lists, ``choice``, ``range``) gives every job. A search a sweeper samples
    (``interval``, or the ``hydra.sweeper.params`` of a search-space config such as
    ``+hparams_search=fno_burgers_quick``) gives representative jobs instead: each choice and
    each interval's ends appear in at least one, so every value a trial can get is checked,
    and an empty range is an error naming its key.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parsed = parse_overrides(overrides)
    check_group_choices(parsed)
    searched = _sweeper_params(config_name, overrides) if config_name else []
    if not searched and not any(o.is_sweep_override() for o in parsed):
        return [overrides]
    if not searched and not any(o.is_interval_sweep() for o in parsed):
        try:
            batches = BasicSweeper.split_arguments(parsed, None)
        except Exception as err:
            raise ConfigError("", f"cannot expand the sweep: {str(err).splitlines()[0]}") from None
        return [job for batch in batches for job in batch]
    given = {o.key_or_group for o in parsed}
    swept = [o for o in parsed if o.is_sweep_override()] + [o for o in searched if o.key_or_group not in given]
    fixed = [line for line, o in zip(overrides, parsed) if not o.is_sweep_override()]
    values = {o.key_or_group: _representatives(o) for o in swept}
    n = max(len(v) for v in values.values())
    return [fixed + [f"{key}={vals[i % len(vals)]}" for key, vals in values.items()] for i in range(n)]


def _representatives(o: Any) -> list[str]:
    """Values of one sweep override that cover what it can take: all of a choice or range, the
    two ends of an interval."""
    key = o.key_or_group
    if o.is_interval_sweep():
        interval = o.value()
        if not interval.start < interval.end:
            raise ConfigError(key, f"empty interval({interval.start}, {interval.end}): the low end must be below the high one")
        ends = [interval.start, interval.end]
        if "int" in interval.tags or all(isinstance(e, int) and not isinstance(e, bool) for e in ends):
            ends = [int(e) for e in ends]
        return [str(e) for e in ends]
    try:
        values = list(o.sweep_string_iterator())
    except Exception as err:
        raise ConfigError(key, f"cannot sample this search: {str(err).splitlines()[0]}") from None
    if not values:
        raise ConfigError(key, "empty range: no values to try")
    return values


def _sweeper_params(config_name: str, overrides: list[str]) -> list[Any]:
    """``hydra.sweeper.params`` of the composed config (a search-space file's), parsed."""
    plain = [line for line, o in zip(overrides, parse_overrides(overrides)) if not o.is_sweep_override()]
    cfg, _ = compose(config_name, plain, keep_hydra=True)
    params = OmegaConf.select(cfg, "hydra.sweeper.params")
    if not params:
        return []
    lines = [f"{k}={v}" for k, v in OmegaConf.to_container(params, resolve=False).items()]
    for line in lines:
        if line.split("=", 1)[1] in ("", "None"):
            raise ConfigError(f"hydra.sweeper.params.{line.split('=')[0]}", "no values to search")
    return parse_overrides(lines)


def compose(config_name: str, overrides: list[str], keep_hydra: bool = False) -> tuple[DictConfig, dict[str, str]]:
    """Compose like the Hydra app will, turning Hydra's errors into one-line ConfigErrors.

    Returns the job config (without the ``hydra`` node unless ``keep_hydra``) and the chosen
    option of each group.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException

    job = overrides if keep_hydra else [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    directory, name = PRIMARY.get(config_name, (config.config_dir(), config_name))
    try:
        with initialize_config_dir(config_dir=str(directory), version_base="1.3"):
            cfg = hydra_compose(name, overrides=job, return_hydra_config=True)
    except MissingConfigException as err:
        raise ConfigError("", _first(err), getattr(err, "options", None)) from None
    except ConfigCompositionException as err:
        added = re.search(r"An item is already at '([^']+)'", str(err))
        if added:
            raise ConfigError(added.group(1), "already set: '+' adds a new key; drop it to change this one") from None
        chosen = re.search(r"Multiple values for ([\w/]+)", str(err))
        if chosen:
            raise ConfigError(chosen.group(1), "already in the defaults: choose it without '+'",
                              config.group_options(chosen.group(1))) from None
        m = re.search(r"Could not override '([^']+)'", str(err))
        if m:
            key = m.group(1)
            parent_key, _, leaf = key.rpartition(".")
            raise ConfigError(key, "no such key", _keys_of(config_name, job, key, parent_key), given=leaf) from None
        raise ConfigError("", _first(err)) from None
    except HydraException as err:
        raise ConfigError("", _first(err)) from None
    except (ValueError, OSError) as err:  # the defaults list's own checks, a name the file system refuses
        raise ConfigError("", _first(err)) from None
    check_added_keys(cfg, job)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    if keep_hydra:
        return cfg, {k: v for k, v in choices.items() if not k.startswith("hydra")}
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
    if not isinstance(node, DictConfig):
        return None
    keys = [str(k) for k in node.keys() if not str(k).startswith("_")]
    if "_target_" in node:  # a constructor argument the YAML leaves at its default is added with +
        import inspect

        try:
            params = inspect.signature(config.import_target(node._target_, parent)).parameters
        except (ConfigError, TypeError, ValueError):
            return keys
        keys += [f"+{parent}.{p}" for p, v in params.items() if p not in keys and p not in config.RUNTIME_ARGS
                 and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]
    return keys


def _first(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def check_compatible(cfg: DictConfig) -> None:
    """The built problem must offer every view the model requires and meet its
    ``Model.unmet`` check (e.g. the UDE needs known terms); else name the problem configs that would (found by building each problem config, and each alternative value of
    its ``Literal`` arguments such as ``burgers problem.setup=raissi``, never from a table).
    Problems are cheap to build: no data is made until a model asks for it."""
    from ..problems.base import view_name

    model_cls = config.import_target(cfg.model._target_, "model._target_")
    requires = tuple(getattr(model_cls, "requires", ()))
    problem = config.instantiate(cfg.problem)
    missing = [v for v in requires if v not in problem.views()]
    if not missing:
        reason = model_cls.unmet(problem)
        if reason is None:
            model = config.instantiate(cfg.model, problem=problem)  # the model's own checks, before any work
            _check_least_squares(cfg, model)
            _check_named_phases(cfg, model)
            return
        raise ConfigError("problem", f"{model_cls.__name__} {reason}. Problems that fit",
                          _fitting_problems(cfg, requires, model_cls))
    names = " and ".join(f"the {view_name(v)} view" for v in requires)
    offered = ", ".join(view_name(v) for v in problem.views()) or "no view"
    raise ConfigError(
        "problem", f"{model_cls.__name__} needs {names}; this {type(problem).__name__} offers "
        f"{offered}. Problems that fit", _fitting_problems(cfg, requires, model_cls))


def _check_named_phases(cfg: DictConfig, model: Any) -> None:
    """A model setting that names an optimiser phase (e.g. ``model.onestep_phase``) names one of
    ``optim``'s, else it would never take effect."""
    names = [str(phase.name) for phase in cfg.optim.phases]
    for key, name in model.named_phases().items():
        if name not in names:
            having = [f"optim={o}" for o in config.group_options("optim") if name in _phase_names(o)]
            hint = f"; {' and '.join(having)} {'has' if len(having) == 1 else 'have'} it" if having else ""
            raise ConfigError(key, f"{name!r} is not one of the optim's phases{hint}", [*names, "null"], given=name)


def _phase_names(option: str) -> list[str]:
    """The phase names of the ``optim`` option ``option``, read from its file."""
    try:
        phases = config.option_config("optim", option).get("phases") or []
        return [str(p.get("name")) for p in phases]
    except Exception:  # a user's option this reading does not understand: no hint from it
        return []


def _check_least_squares(cfg: DictConfig, model: Any) -> None:
    """An optimiser phase that steps on residuals (``optim=lm``) needs a model that offers them,
    on one process."""
    for i, phase in enumerate(cfg.optim.phases):
        target = phase.optimizer.get("_target_")
        if target is None or not getattr(config.import_target(target, f"optim.phases.{i}.optimizer._target_"),
                                         "least_squares", False):
            continue
        key = f"optim.phases.{i}.optimizer"
        if model.least_squares_unmet is not None:
            raise ConfigError(key, f"{phase.name} needs the loss as a sum of squared residuals, which "
                                   f"{type(model).__name__} does not offer here: {model.least_squares_unmet}")
        if int(cfg.trainer.get("devices", 1)) > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("trainer.devices", f"{phase.name} runs on one process; set trainer.devices=1")
        if cfg.trainer.get("grad_clip") is not None:
            raise ConfigError("trainer.grad_clip", f"{phase.name} takes no gradient steps to clip; set it to null")
        if cfg.trainer.get("amp"):
            raise ConfigError("trainer.amp", f"{phase.name} solves its normal equations in full precision; "
                                             "set it to false")


def _fitting_problems(cfg: DictConfig, requires: tuple[type, ...], model_cls: type | None = None) -> list[str]:
    import inspect
    import typing

    fits = []
    for name in config.group_options("problem"):
        base = OmegaConf.merge({"paths": cfg.get("paths", {})},
                               {"problem": config.option_config("problem", name)})
        node = base.problem
        try:
            cls = config.import_target(node._target_, f"problem={name}")
        except ConfigError:
            continue
        variants: list[tuple[str, Any]] = [("", None)]
        hints = typing.get_type_hints(cls.__init__, include_extras=True)
        for arg in inspect.signature(cls).parameters:
            for value in config.literal_choices(hints.get(arg)):
                if value is not None and value != node.get(arg):
                    variants.append((arg, value))
        for arg, value in variants:
            candidate = node.copy()
            if arg:
                candidate[arg] = value
            try:
                problem = config.instantiate(candidate)
            except (SciMLError, ValueError, TypeError):
                continue
            if all(v in problem.views() for v in requires) and (model_cls is None or model_cls.unmet(problem) is None):
                fits.append(name if not arg else f"{name} problem.{arg}={value}")
                if not arg:
                    break  # the default fits: its variants need no mention
    return fits


# -- running a Hydra app ----------------------------------------------------------------------
def _quiet_full_disk_in_threads() -> None:
    """A writer thread (TensorBoard's) that runs out of space dies quietly: the main thread's
    next write fails the same way and reports it in one line."""
    import threading

    from ..errors import no_space

    default = threading.excepthook
    if getattr(default, "_sciml", False):
        return

    def hook(args: Any) -> None:
        if not no_space(args.exc_value):
            default(args)

    hook._sciml = True  # type: ignore[attr-defined]
    threading.excepthook = hook


#: the primary config of this command when not ours, ``{command: (directory, name)}``: a sweep's
#: ``best.yaml`` (``--config-path <sweep dir> --config-name best``), composed by :func:`compose`
PRIMARY: dict[str, tuple[Path, str]] = {}


def _primary_config(command: str, args: list[str]) -> tuple[list[str], tuple[Path, str] | None]:
    """``args`` with a relative ``--config-path`` made absolute (Hydra would read it relative
    to its own module, not to where the command runs), and the primary config's directory and
    name: ours and the command's unless ``--config-path`` / ``--config-name`` say otherwise;
    ``None`` for ``--config-dir`` and ``--experimental-rerun``, which only Hydra follows."""
    values: dict[str, str] = {}
    out, i = list(args), 0
    while i < len(out):
        flag, eq, value = out[i].partition("=")
        if flag in VALUE_FLAGS:
            if not eq:
                if i + 1 >= len(out):
                    raise ConfigError(flag, "needs a value")
                value = out[i + 1]
            name = {"-cp": "--config-path", "-cn": "--config-name", "-cd": "--config-dir"}.get(flag, flag)
            if name == "--config-path":
                value = str(Path(value).expanduser().resolve())
                if eq:
                    out[i] = f"{flag}={value}"
                else:
                    out[i + 1] = value
            values[name] = value
            i += 1 if eq else 2
            continue
        i += 1
    if "--config-dir" in values or "--experimental-rerun" in values:
        return out, None
    directory = Path(values["--config-path"]) if "--config-path" in values else config.config_dir()
    name = values.get("--config-name", command).removesuffix(".yaml")
    if not directory.is_dir():
        raise ConfigError("--config-path", f"no such directory: {directory}")
    if not (directory / f"{name}.yaml").is_file():
        raise ConfigError("--config-name", f"no {name}.yaml in {directory}",
                          sorted(p.stem for p in directory.glob("*.yaml")))
    return out, (directory, name)


#: stop signals that arrived before the training task could act on them (see :func:`run_app`)
PENDING_SIGNALS: list[int] = []


def check_flags(command: str, args: list[str]) -> None:
    """Hydra's flags, parsed as Hydra will parse them, so that a wrong one is one line (argparse
    would print its whole usage): an unknown flag, a ``--cfg`` other than job, hydra or all, an
    override given before a flag."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def error(message: str) -> None:
        if message.startswith("unrecognized arguments"):
            extra = message.partition(": ")[2].split()
            message = (f"unknown flag {' '.join(extra)}" if all(a.startswith("-") for a in extra) else
                       f"{message}; give the flags before the key=value overrides")
        raise ConfigError("", f"{message} (`sciml {command} --help` lists the flags)")

    parser.error = error  # type: ignore[method-assign]
    parser.parse_args([a for a in args if a not in ("--help", "-h", "--hydra-help", "--version")])


def run_app(command: str, app: Callable[[], Any], args: list[str],
            preflight: Callable[[list[str]], list[str] | None] | None) -> int:
    """Check ``args`` (unless only asking for help or a config print), hand them to Hydra, and
    return the exit code; the result goes to stdout in the form ``output=`` asks for."""
    from ..errors import one_line_warnings

    one_line_warnings()
    try:
        check_flags(command, args)
    except ConfigError as err:
        output.start(command, [a for a in args if not a.startswith("-")])
        return output.finish(report(err))
    informational = any(a.split("=")[0] in INFO_FLAGS for a in args if a.startswith("-"))
    if informational:
        sys.argv = [sys.argv[0], *args]
        app()
        return 0
    overrides, skip = [], False
    for a in args:
        if not skip and not a.startswith("-"):
            overrides.append(a)
        skip = a in VALUE_FLAGS  # the value of `--config-path X` is no override
    PRIMARY.clear()
    import logging

    logging.raiseExceptions = False  # a log file on a full disk must not print tracebacks
    _quiet_full_disk_in_threads()
    try:
        output.start(command, overrides)
        args, own = _primary_config(command, args)
        if own is None:  # a config Hydra reads in ways composing here cannot follow
            preflight = None
        elif own != (config.config_dir(), command):
            PRIMARY[command] = own
        checked = check_overrides(command, overrides)
        if checked != overrides:  # a value quoted for Hydra's grammar
            swap = dict(zip(overrides, checked))
            args, overrides = [swap.get(a, a) for a in args], checked
        extra = preflight(overrides) if preflight is not None else None
    except (SciMLError, Stopped) as err:
        if full_error() and not isinstance(err, Stopped):
            raise
        return output.finish(report(err))
    if command == "train" and int(os.environ.get("RANK", "0")) > 0:
        # a data-parallel rank other than 0 writes nothing: no .hydra/, no log file
        extra = [*(extra or []), "hydra.job_logging.root.handlers=[console]",
                 *([] if any(a.startswith("hydra.output_subdir=") for a in args) else ["hydra.output_subdir=null"])]
    sys.argv = [sys.argv[0], *args, *(extra or [])]  # a preflight may settle overrides (a study's remaining trials)
    import signal

    from ..errors import stop_as_before

    stop_as_before()  # the checks are done: from here each command handles its signals

    # until the training task takes over (`train`: its set-up raises them, its loop checkpoints),
    # SIGTERM and SIGUSR1 are kept, not fatal: Hydra is making the run directory
    held = [s for s in (signal.SIGTERM, getattr(signal, "SIGUSR1", None)) if s is not None] if command == "train" else []
    previous = {s: signal.signal(s, lambda signum, frame: PENDING_SIGNALS.append(signum)) for s in held}
    try:
        app()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    except KeyboardInterrupt:  # a second Ctrl-C, which stops at once
        sys.stderr.write("sciml: interrupted\n")
        code = 130
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return output.finish(code)
