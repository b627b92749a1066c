"""HDF5 files of reference solutions: arrays, grid, attributes and a checksum.

Layout::

    /fields/<name>   solution arrays, batch first
    /grid/<name>     coordinates of the trailing axes, in axis order (attribute ``axes``)
    attributes       config (YAML), solver, wall_time_s, versions, created, sha256, ...

:func:`verify_file` checks the checksum while reading one block at a time, so a file larger than
memory can be checked before it is trusted.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from ..errors import SciMLError
from ..problems.base import Solution
from ..training.checkpoint import atomic_write


def _digest(groups: dict[str, dict[str, np.ndarray]]) -> str:
    h = hashlib.sha256()
    for group in sorted(groups):
        for name in sorted(groups[group]):
            arr = np.ascontiguousarray(groups[group][name])
            h.update(_header(group, name, arr.dtype, arr.shape))
            h.update(arr.tobytes())
    return h.hexdigest()


def _header(group: str, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    return f"{group}/{name}:{dtype.str}:{shape}".encode()


def _attr(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool, np.number)):
        return value
    return json.dumps(value, default=str)


def write_solution(path: Path, solution: Solution, attrs: dict[str, Any]) -> Path:
    """Write atomically: a reader never sees a half-written file."""
    arrays = {
        "fields": {k: v.detach().cpu().numpy() for k, v in solution.fields.items()},
        "grid": {k: v.detach().cpu().numpy() for k, v in solution.grid.items()},
    }

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            for group, items in arrays.items():
                g = f.create_group(group)
                for name, arr in items.items():
                    g.create_dataset(name, data=arr)
            f["grid"].attrs["axes"] = json.dumps(list(solution.grid))
            for key, value in {**solution.attrs, **attrs}.items():
                f.attrs[key] = _attr(value)
            f.attrs["created"] = datetime.now().isoformat(timespec="seconds")
            f.attrs["sha256"] = _digest(arrays)

    atomic_write(Path(path), write)
    return Path(path)


def read_solution(path: Path, verify: bool = True) -> Solution:
    """Read a file written by :func:`write_solution`; a checksum mismatch raises."""
    try:
        with h5py.File(path, "r") as f:
            arrays = {g: {k: f[g][k][()] for k in f[g]} for g in ("fields", "grid")}
            axes = json.loads(f["grid"].attrs["axes"])
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    except (OSError, KeyError) as err:
        raise SciMLError(f"{path} is not a readable sciml dataset: {err}") from None
    if verify and attrs.get("sha256") != _digest(arrays):
        raise SciMLError(f"{path}: checksum mismatch; the file is corrupt")
    return Solution(
        fields={k: torch.from_numpy(v) for k, v in arrays["fields"].items()},
        grid={k: torch.from_numpy(arrays["grid"][k]) for k in axes},
        attrs=attrs,
    )


def verify_file(path: Path, block_bytes: int = 64 * 2**20) -> dict[str, Any]:
    """Check the checksum of a file written by :func:`write_solution`; return its attributes.

    Arrays are hashed in blocks of leading-axis slices of about ``block_bytes``, giving the same
    digest as :func:`write_solution` (C order bytes are the concatenation of those slices) in
    bounded memory. Raises :class:`SciMLError` if the file cannot be read or does not match.
    """
    h = hashlib.sha256()
    try:
        with h5py.File(path, "r") as f:
            for group in sorted(("fields", "grid")):
                for name in sorted(f[group]):
                    ds = f[group][name]
                    # np.ascontiguousarray in _digest turns a 0-d array into shape (1,)
                    shape = ds.shape or (1,)
                    h.update(_header(group, name, ds.dtype, shape))
                    if ds.shape == ():
                        h.update(np.ascontiguousarray(ds[()]).tobytes())
                        continue
                    row = max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64)))
                    step = max(1, block_bytes // row)
                    for start in range(0, ds.shape[0], step):
                        h.update(np.ascontiguousarray(ds[start:start + step]).tobytes())
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as err:  # damaged file
        raise SciMLError(f"{path} is not a readable sciml dataset: {err}") from None
    if attrs.get("sha256") != h.hexdigest():
        raise SciMLError(f"{path}: checksum mismatch; the file is corrupt")
    return attrs
