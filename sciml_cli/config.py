"""Checking composed configs before any work, and instantiating them safely.

YAML keys are constructor arguments (``_target_`` names the class), so the constructor's
signature *is* the schema: unknown keys, wrong types, out-of-range values and choices outside a
``Literal`` are reported as one line naming the key, before anything is built or written.

Only registered classes may be instantiated (:func:`import_target`): problems, models, the
trainer, its phases and callbacks under ``sciml_cli.``, and torch's optimisers, learning-rate
schedulers and ``torch.nn`` modules; never a function. This matters for configs read back from a
run directory or a checkpoint, which may come from someone else.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .constraints import Bound, Upper
from .errors import ConfigError

ALLOWED_PREFIXES = ("sciml_cli.", "torch.optim.", "torch.nn.")
#: constructor arguments supplied by the program, not by the config
RUNTIME_ARGS = frozenset({"problem", "params", "optimizer"})
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_convert_", "_recursive_", "_args_"})
_INTERPOLATION = re.compile(r"^\$\{([\w.]+)\}$")

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def config_dir() -> Path:
    if not (CONFIG_DIR / "train.yaml").is_file():
        raise ConfigError("", f"config tree not found at {CONFIG_DIR}; install with `pip install -e .`")
    return CONFIG_DIR


def group_options(group: str) -> list[str]:
    """Option names of a config group, from the files in ``configs/<group>/``."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def option_config(group: str, name: str) -> Any:
    """The file of option ``name`` of ``group`` as written (no defaults applied, nothing resolved)."""
    from omegaconf import OmegaConf

    return OmegaConf.load(config_dir() / group / f"{name}.yaml")


#: what a config may build, by kind (see :func:`registered_bases`)
BUILDABLE = ("sciml_cli problems, models, trainer, phases, callbacks", "torch.optim optimisers and schedulers",
             "torch.nn modules")


def registered_bases() -> tuple[type, ...]:
    """The base classes a config's ``_target_`` must derive from."""
    import torch

    from .models.base import Model
    from .problems.base import Problem
    from .training.callbacks import Callback
    from .training.trainer import Phase, Trainer

    return (Problem, Model, Trainer, Phase, Callback, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler,
            torch.optim.lr_scheduler.ReduceLROnPlateau, torch.nn.Module)


def import_target(path: str, key: str) -> Any:
    """Import ``path`` if it lies in the allowed namespaces and is a registered class."""
    if not isinstance(path, str) or not path.startswith(ALLOWED_PREFIXES):
        raise ConfigError(key, f"{path!r} is outside the classes sciml may build", BUILDABLE)
    module_name, _, attr = path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        raise ConfigError(key, f"cannot import {path!r}") from None
    if not (inspect.isclass(target) and issubclass(target, registered_bases())):
        raise ConfigError(key, f"{path!r} is not a class sciml may build", BUILDABLE)
    return target


def check(cfg: DictConfig, root: str = "") -> None:
    """Validate every ``_target_`` node of ``cfg`` against its constructor's signature."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # omegaconf's interpolation errors name the key themselves
        raise ConfigError(_full_key(err), _first_line(err)) from None
    _walk(raw, resolved, root)


def instantiate(cfg: DictConfig, **runtime: Any) -> Any:
    """``hydra.utils.instantiate`` after :func:`check`; nested containers become plain ones."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    from .errors import SciMLError

    check(cfg)
    try:
        return hydra_instantiate(cfg, **runtime, _convert_="all")
    except InstantiationException as err:
        # a constructor's own refusal (ConfigError, ValueError) reaches the user as one line
        cause = err.__cause__
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, SciMLError):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError)):
            named = re.match(r"^([\w.]+): ", str(cause))
            if named:  # the message names its key: a bare constructor argument gets its group
                where = cfg._key() if hasattr(cfg, "_key") else None
                bare = named.group(1) in cfg and "." not in named.group(1) and where
                raise ConfigError("", f"{where}.{cause}" if bare else str(cause)) from None
            target = str(cfg.get("_target_", "")).rpartition(".")[2]
            raise ConfigError("", f"{target}: {cause}") from None
        raise


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _full_key(err: BaseException) -> str:
    return str(getattr(err, "full_key", "") or "")


def _join(root: str, key: Any) -> str:
    return f"{root}.{key}" if root else str(key)


def _walk(raw: Any, value: Any, path: str) -> None:
    if isinstance(raw, str) and _INTERPOLATION.match(raw):
        return  # checked where it is defined
    if isinstance(value, Mapping):
        if "_target_" in value:
            _check_target(raw, value, path)
        for k, v in value.items():
            _walk(raw.get(k) if isinstance(raw, Mapping) else None, v, _join(path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk(raw[i] if isinstance(raw, list) else None, v, _join(path, i))


def _check_target(raw: Mapping, node: Mapping, path: str) -> None:
    target = import_target(node["_target_"], _join(path, "_target_"))
    sig = inspect.signature(target)
    params = sig.parameters
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = [n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target, include_extras=True)
    except Exception:  # third-party annotations that do not resolve: check names only
        hints = {}
    name = getattr(target, "__name__", str(target))
    for key, value in node.items():
        if key in HYDRA_KEYS:
            continue
        # report the key the user typed: `optim.lr` rather than the phase that interpolates it
        src = raw.get(key) if isinstance(raw, Mapping) else None
        m = _INTERPOLATION.match(src) if isinstance(src, str) else None
        where = m.group(1) if m else _join(path, key)
        if key not in params and not var_kw:
            raise ConfigError(where, f"not a parameter of {name}", [n for n in named if n not in RUNTIME_ARGS],
                              given=str(key))
        if key in hints:
            entry = _mapping_value_hint(hints[key]) if isinstance(value, Mapping) else None
            for k, v in (value.items() if entry is not None else ()):  # name the entry: model.loss_weights.residual
                problem = _type_problem(v, entry)
                if problem:
                    raise ConfigError(f"{where}.{k}", problem, _choices(entry), given=str(v))
            problem = _type_problem(value, hints[key])
            if problem:
                raise ConfigError(where, problem, _choices(hints[key]), given=str(value))
        if key == "lr" and not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf):
            raise ConfigError(where, f"learning rate must be a finite number > 0, got {value!r}")
    if not node.get("_partial_", False):
        missing = [
            n for n, p in params.items()
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and n not in node and n not in RUNTIME_ARGS
        ]
        if missing:
            raise ConfigError(_join(path, missing[0]), f"required by {name} but not set")


def literal_choices(hint: Any) -> list[Any]:
    """The values of a ``Literal`` annotation (also inside ``Annotated`` or ``Optional``)."""
    return _choices(hint) or []


def _choices(hint: Any) -> list[Any] | None:
    hint = _strip_annotated(hint)[0]
    if typing.get_origin(hint) is typing.Literal:
        return list(typing.get_args(hint))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if typing.get_origin(arg) is typing.Literal:
                return list(typing.get_args(arg)) + [None] * (type(None) in typing.get_args(hint))
    return None


def _mapping_value_hint(hint: Any) -> Any:
    """The value type of a ``dict[str, X]`` annotation (``| None`` allowed), else None."""
    hint, _ = _strip_annotated(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        found = [_mapping_value_hint(a) for a in typing.get_args(hint)]
        return next((f for f in found if f is not None), None)
    if typing.get_origin(hint) in (dict, Mapping, typing.Mapping) and len(typing.get_args(hint)) == 2:
        return typing.get_args(hint)[1]
    return None


def _strip_annotated(hint: Any) -> tuple[Any, list[Any]]:
    if typing.get_origin(hint) is typing.Annotated:
        base, *meta = typing.get_args(hint)
        return base, meta
    return hint, []


def _type_problem(value: Any, hint: Any) -> str | None:
    """Why ``value`` does not fit ``hint``, or None. Unknown annotations are accepted."""
    hint, meta = _strip_annotated(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is inspect.Parameter.empty:
        return None
    if origin in (typing.Union, types.UnionType):
        problems = [_type_problem(value, a) for a in args]
        if any(p is None for p in problems):
            return _bounds_problem(value, meta)
        return next(p for p in problems if p)
    if origin is typing.Literal:
        return None if value in args else f"{value!r} is not a valid choice"
    if hint is type(None):
        return None if value is None else f"expected null, got {value!r}"
    if hint is bool:
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected an integer, got {value!r}"
        if not -2**63 <= value < 2**63:  # beyond any tensor size or seed torch takes
            return f"out of range: {value}"
        return _bounds_problem(value, meta)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {value!r}"
        if not math.isfinite(value):
            return f"expected a finite number, got {value!r}"
        return _bounds_problem(value, meta)
    if hint is str:
        return None if isinstance(value, str) else f"expected a string, got {value!r}"
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return f"expected a list, got {value!r}"
        if origin is tuple and args and Ellipsis not in args:  # fixed length: Adam's betas
            if len(value) != len(args):
                return f"expected {len(args)} items, got {len(value)}: {value!r}"
            for item, arg in zip(value, args):
                p = _type_problem(item, arg)
                if p:
                    return f"list item: {p}"
            return None
        if args and args[0] is not Ellipsis:
            for item in value:
                p = _type_problem(item, args[0])
                if p:
                    return f"list item: {p}"
        return None
    if origin in (dict, Mapping, typing.Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            return f"expected a mapping, got {value!r}"
        if len(args) == 2:
            for item in value.values():
                p = _type_problem(item, args[1])
                if p:
                    return f"mapping value: {p}"
        return None
    return None


def _bounds_problem(value: Any, meta: list[Any]) -> str | None:
    for m in meta:
        if isinstance(m, (Bound, Upper)) and isinstance(value, (int, float)):
            p = m.check(value)
            if p:
                return p
    return None
