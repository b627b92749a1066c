"""Generated datasets, made once and cached on disk under a hash of what generated them.

A dataset is named by its *generating config*: a plain mapping holding everything that changes
its numbers (the problem's config with ``_target_``, ``resolution``, ``n_samples``, ``seed``,
``dtype``) and nothing that does not (device, paths). Its key is the SHA-256 of the canonical
JSON of that mapping, and the file is ``<data_dir>/<name>-<key[:16]>.h5``::

    from sciml_cli.data.cache import load_dataset
    gen = {"problem": problem_cfg, "resolution": 64, "n_samples": 1000, "seed": 0, "dtype": "float64"}
    solution = load_dataset("burgers", gen, lambda: problem.solve(64, 1000, 0), data_dir)

Properties:

* **One generation for concurrent requests.** Callers serialise on an exclusive ``flock`` of a
  sidecar ``<file>.lock``; the first generates, the others wait, then find a valid file. The
  lock file is never deleted, because deleting it would let a late process lock a fresh inode
  while another still holds the old one. ``flock`` is POSIX only: where ``fcntl`` is missing
  (Windows), or the filesystem refuses the lock (some network filesystems), we warn and carry on
  unlocked, so concurrent jobs may each generate (and atomically replace) the same file.
* **Never trusting a damaged file.** Under the lock, the whole file is checked against the
  SHA-256 stored in it (:func:`~sciml_cli.data.hdf5.verify_file`, in bounded memory), and its
  stored key against the requested one. A truncated, corrupt or foreign file raises a
  :class:`DatasetWarning` and is regenerated; the new file replaces it atomically.
* The key does not cover the solver's code: after changing a reference solver, delete the data
  directory or bump :data:`CACHE_VERSION`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import progress
from ..errors import SciMLError, SciMLWarning
from ..problems.base import Solution
from .hdf5 import read_solution, verify_file, write_solution

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

log = logging.getLogger(__name__)

#: part of every key; bump it when the file layout or a generator changes what it writes
CACHE_VERSION = 1
#: ``outputs/data`` relative to the working directory, beside the run directories
DEFAULT_DATA_DIR = Path("outputs") / "data"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class DatasetWarning(SciMLWarning):
    """A cached dataset was found damaged or foreign and is being regenerated."""


# -- keys -----------------------------------------------------------------------------------------
def _canonical(value: Any, where: str) -> Any:
    if hasattr(value, "_metadata") and hasattr(value, "_get_node"):  # an OmegaConf container
        from omegaconf import OmegaConf

        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be strings, got {k!r}")
            out[k] = _canonical(v, f"{where}.{k}" if where else k)
        return out
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "tolist") and not isinstance(value, (int, float, str)):  # numpy, torch
        return _canonical(value.tolist(), where)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} cannot be part of a dataset key")
        # `t_end: 3` and `t_end: 3.0` generate the same data, so they must share a key
        return int(value) if value.is_integer() else value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{where or 'config'}: {type(value).__name__} cannot be part of a dataset key")


def canonical_json(config: Mapping[str, Any]) -> str:
    """The config as JSON with sorted keys and no spaces; integral floats written as ints."""
    return json.dumps(_canonical(config, ""), sort_keys=True, separators=(",", ":"), allow_nan=False)


def dataset_key(config: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``config`` and :data:`CACHE_VERSION`."""
    payload = f"sciml-dataset-v{CACHE_VERSION}\n{canonical_json(config)}"
    return hashlib.sha256(payload.encode()).hexdigest()


def dataset_path(name: str, config: Mapping[str, Any], data_dir: Path = DEFAULT_DATA_DIR) -> Path:
    """``<data_dir>/<name>-<key[:16]>.h5``; ``name`` is typically the problem's config name."""
    if not _NAME.match(name):
        raise ValueError(f"name: {name!r} must be letters, digits, '_', '-' or '.'")
    return Path(data_dir) / f"{name}-{dataset_key(config)[:16]}.h5"


# -- locking ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask decides, as for the data: a shared directory stays shared
    locked = False
    try:
        if fcntl is None:
            warnings.warn(f"no file locking on this platform: {path} is not protected from "
                          "concurrent generation", DatasetWarning, stacklevel=3)
        else:
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.info("waiting for another process to finish %s", path.with_suffix(""))
                    fcntl.flock(fd, fcntl.LOCK_EX)
                locked = True
            except OSError as err:  # e.g. ENOLCK on a filesystem without flock support
                warnings.warn(f"cannot lock {path} ({err.strerror or err}); going on without "
                              "protection from concurrent generation", DatasetWarning, stacklevel=3)
        yield
    finally:
        if locked:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# -- the cache -----------------------------------------------------------------------------------------
def _check(path: Path, key: str) -> bool:
    """True if ``path`` holds an intact dataset for ``key``; warn about a damaged one."""
    if not path.exists():
        return False
    try:
        attrs = verify_file(path)
    except SciMLError as err:
        warnings.warn(f"{err}; regenerating it", DatasetWarning, stacklevel=3)
        return False
    if attrs.get("dataset_key") != key:
        warnings.warn(f"{path} was not generated from this config (its key is "
                      f"{attrs.get('dataset_key')!r}); regenerating it", DatasetWarning, stacklevel=3)
        return False
    return True


def cached_solution(
    name: str,
    config: Mapping[str, Any],
    make: Callable[[], Solution],
    data_dir: Path = DEFAULT_DATA_DIR,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Path of a verified dataset for ``config``, calling ``make()`` only if there is none.

    Parameters
    ----------
    name
        Prefix of the file name (the problem's config name).
    config
        The generating config (plain values, or an OmegaConf container, resolved here).
    make
        Generates the data; called at most once per call, with the lock held.
    data_dir
        Cache directory, created if missing.
    attrs
        Extra attributes to store (e.g. versions); they do not enter the key.

    Returns
    -------
    Path
        ``<data_dir>/<name>-<key[:16]>.h5``, whose checksum was verified under the lock.
    """
    path = dataset_path(name, config, data_dir)
    key = dataset_key(config)
    with file_lock(path.with_name(path.name + ".lock")):
        if _check(path, key):
            return path
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed writer
            stale.unlink(missing_ok=True)
        n = config.get("n_samples")
        label = f"generating {name}" + (f" ({n} samples)" if n else "")
        # shown at once: generating is slow work, and a solver's own bar joins it as a second line
        with progress.track_steps(None, label, delay=0):
            solution = make()
        write_solution(path, solution, {
            **(attrs or {}), "problem": name, "dataset_key": key,
            "generating_config": canonical_json(config), "cache_version": CACHE_VERSION,
        })
        log.info("generated %s", path)
    return path


def load_dataset(
    name: str,
    config: Mapping[str, Any],
    make: Callable[[], Solution],
    data_dir: Path = DEFAULT_DATA_DIR,
    attrs: Mapping[str, Any] | None = None,
) -> Solution:
    """:func:`cached_solution`, then read the file (checksum verified again) into CPU tensors."""
    return read_solution(cached_solution(name, config, make, data_dir, attrs))
