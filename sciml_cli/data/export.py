"""Writing a solver's output in the layouts other tools read: PDEBench HDF5 and the FNO paper's
``.mat`` files, so PDEBench's loaders and neuraloperator's scripts (and ``problem=dataset``) take
data that ``sciml solve`` generated.

PDEBench (Takamoto et al. 2022): one sample-first array ``tensor`` ``[N, T, *S]`` (several
fields: one array each, by name), ``x-``/``y-``/``z-coordinate``, and ``t-coordinate`` with one
entry more than snapshots, as PDEBench stores it. Operator pairs ``a = u(0)``, ``u = u(T)``
become two snapshots ``[N, 2, *S]`` at ``t = 0, T``.

FNO ``.mat`` (Li et al. 2021): arrays by name, samples first in MATLAB's axis order; a field in
time becomes Li et al.'s Navier–Stokes layout, ``a`` its first snapshot, ``u`` the others with
time last (``[N, *S, T]``) and ``t`` their times. Written as MATLAB v5 (what ``scipy.io.loadmat``
reads) unless an array exceeds v5's 2 GiB, then as v7.3 (HDF5 after a 512-byte MATLAB header,
arrays column-major, as MATLAB's ``save -v7.3``).

Writes are atomic: a reader sees no file or the whole one.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import ConfigError
from ..problems.base import Solution
from ..training.checkpoint import atomic_write

#: the layouts :func:`export` writes, and the suffix of each
SUFFIXES = {"sciml": ".h5", "pdebench": ".hdf5", "mat": ".mat"}
#: MATLAB v5 stores an array's size in 32 bits
V5_LIMIT_BYTES = 2**31 - 1
_MATLAB_CLASS = {np.dtype("float64"): "double", np.dtype("float32"): "single", np.dtype("int64"): "int64",
                 np.dtype("int32"): "int32", np.dtype("uint8"): "uint8", np.dtype("bool"): "logical"}


def _arrays(solution: Solution) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    fields = {k: v.detach().cpu().numpy() for k, v in solution.fields.items()}
    grid = {k: v.detach().cpu().numpy() for k, v in solution.grid.items()}
    return fields, grid


def _time_fields(fields: dict[str, np.ndarray], grid: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fields ``[N, T, *S]`` over a grid ``(t, *S)``."""
    if not grid or next(iter(grid)) != "t":
        return {}
    shape = tuple(len(g) for g in grid.values())
    return {k: f for k, f in fields.items() if f.shape[1:] == shape}


def pdebench_arrays(solution: Solution, t_end: float | None = None) -> dict[str, np.ndarray]:
    """The datasets of the PDEBench layout for ``solution``; ``t_end`` dates the output of
    operator pairs (``a = u(0)``, ``u = u(t_end)``)."""
    fields, grid = _arrays(solution)
    space = {k: g for k, g in grid.items() if k != "t"}
    timed = _time_fields(fields, grid)
    if timed:
        t = grid["t"]
        dt = t[-1] - t[-2] if len(t) > 1 else 1.0
        out = {("tensor" if len(timed) == 1 else k): f for k, f in timed.items()}
        out["t-coordinate"] = np.append(t, t[-1] + dt)  # PDEBench stores T + 1 times
    elif {"a", "u"} <= set(fields) and fields["a"].shape == fields["u"].shape and "t" not in grid:
        if t_end is None:
            raise ConfigError("format", "pdebench: the problem does not say at which time its output lies")
        out = {"tensor": np.stack([fields["a"], fields["u"]], axis=1),
               "t-coordinate": np.array([0.0, t_end, 2 * t_end])}
    else:
        raise ConfigError("format", f"pdebench: the solution ({', '.join(fields)}) holds neither snapshots "
                                    "in time nor (a, u) pairs", ["sciml", "mat"])
    for k, g in space.items():
        out[f"{k}-coordinate"] = g
    return out


def mat_arrays(solution: Solution) -> dict[str, np.ndarray]:
    """The variables of the FNO ``.mat`` layout for ``solution`` (MATLAB axis order)."""
    fields, grid = _arrays(solution)
    timed = _time_fields(fields, grid)
    if len(timed) == 1:
        (name, f), = timed.items()
        rest = {k: v for k, v in fields.items() if k != name and k not in ("a", "u", "t")}
        return {"a": f[:, 0], "u": np.moveaxis(f[:, 1:], 1, -1), "t": grid["t"][None, 1:], **rest}
    out = {k: (np.moveaxis(v, 1, -1) if k in timed else v) for k, v in fields.items()}
    if timed:
        out["t"] = grid["t"][None, :]
    return out


def write_mat73(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` (MATLAB axis order) as MATLAB's ``save -v7.3`` does, atomically."""

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w", userblock_size=512) as f:
            for name, a in arrays.items():
                a = np.asarray(a)
                d = f.create_dataset(name, data=a.T)  # column-major: MATLAB's (N, X) is HDF5's (X, N)
                d.attrs["MATLAB_class"] = np.bytes_(_MATLAB_CLASS.get(a.dtype, "double"))
        created = datetime.now().strftime("%a %b %d %H:%M:%S %Y")
        text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {created} HDF5 schema 1.00 .".encode()
        with open(tmp, "r+b") as f:  # the header MATLAB and scipy.io.matlab.matfile_version look for
            f.write(text.ljust(116) + b"\0" * 8 + b"\x00\x02" + b"IM")

    atomic_write(Path(path), write)
    return Path(path)


def write_mat(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """v5 (``scipy.io.savemat``) when every array fits it, else v7.3."""
    import scipy.io

    if any(np.asarray(a).nbytes > V5_LIMIT_BYTES for a in arrays.values()):
        return write_mat73(path, arrays)
    atomic_write(Path(path), lambda tmp: scipy.io.savemat(tmp, arrays, appendmat=False, do_compression=False, oned_as="row"))
    return Path(path)


def write_pdebench(path: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> Path:
    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            for name, a in arrays.items():
                f.create_dataset(name, data=a)
            for key, value in attrs.items():
                f.attrs[key] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value, default=str)

    atomic_write(Path(path), write)
    return Path(path)


def export(path: Path, solution: Solution, format: str, attrs: dict[str, Any], t_end: float | None = None) -> Path:
    """Write ``solution`` at ``path`` (its suffix replaced by the layout's) in ``format``."""
    from .hdf5 import write_solution

    path = Path(path).with_suffix(SUFFIXES[format])
    if format == "sciml":
        return write_solution(path, solution, attrs)
    if format == "pdebench":
        return write_pdebench(path, pdebench_arrays(solution, t_end), attrs)
    return write_mat(path, mat_arrays(solution))
