"""Readers for datasets users already have: PDEBench HDF5 and the FNO paper's ``.mat`` files.

Both give a small map-style dataset (``len``, ``ds[i]``) whose items are dicts of torch tensors,
read from disk on demand: ``ds[i]``, ``ds[i:j]``, ``ds[[i, k]]`` and ``ds[i, 10:20]`` (sample
index first, then ints or slices along the other axes) read only that hyperslab through h5py,
never the whole array. The HDF5 file is opened on first use in each process, so the object can
be handed to ``DataLoader`` workers (forked or spawned).

How much is read from disk follows the file's storage layout: from a contiguous or
sample-chunked array, one sample costs its own bytes; a MATLAB v7.3 file stores arrays
transposed (samples along the fastest axis), so one sample is a strided read, and reading
blocks of consecutive samples (``ds[i:j]``) is much cheaper than one at a time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import h5py
import numpy as np
import torch

from ..errors import SciMLError

log = logging.getLogger(__name__)

Source = str | Path | BinaryIO


def _variables(variables: str | Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    if isinstance(variables, str):
        return {variables: variables}
    if isinstance(variables, Mapping):
        return {str(k): str(v) for k, v in variables.items()}
    return {str(v): str(v) for v in variables}


class _LazyArrays:
    """Sample-first arrays in one file, sliced on demand (shared by the readers below).

    Subclasses set ``self._arrays`` lazily through :meth:`_open` and say whether the arrays are
    stored transposed (MATLAB's column-major order seen from HDF5).
    """

    transposed = False

    def __init__(self, source: Source, variables: Mapping[str, str], dtype: torch.dtype | None):
        self.source = source
        self.variables = dict(variables)
        self.dtype = dtype
        self._file: h5py.File | None = None
        self._pid: int | None = None
        if isinstance(source, (str, Path)) and not Path(source).is_file():
            raise SciMLError(f"{source}: no such file")

    # -- file handle, one per process ------------------------------------------------------------
    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            # an h5py handle inherited through fork is not safe to use: open our own
            try:
                self._file = h5py.File(self.source, "r")
            except OSError as err:
                raise SciMLError(f"{self.source}: not a readable HDF5 file: {err}") from None
            self._pid = os.getpid()
        return self._file

    def _array(self, var: str) -> Any:
        f = self._h5()
        if var not in f or not isinstance(f[var], h5py.Dataset):
            names = sorted(k for k in f if isinstance(f[k], h5py.Dataset))
            raise SciMLError(f"{self.source}: no array {var!r} (arrays: {', '.join(names)})")
        return f[var]

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": None}

    # -- shapes -------------------------------------------------------------------------------------------
    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of output ``name``, samples first (MATLAB's order for ``.mat`` files)."""
        return self._logical_shape(self._array(self.variables[name]))

    def _logical_shape(self, array: Any) -> tuple[int, ...]:
        shape = tuple(array.shape)
        return shape[::-1] if self.transposed else shape

    def __len__(self) -> int:
        return self._n

    def _count(self) -> int:
        counts = {name: self.shape(name)[0] for name in self.variables}
        if len(set(counts.values())) != 1:
            raise SciMLError(f"{self.source}: arrays disagree on the number of samples: {counts}")
        return next(iter(counts.values()))

    # -- slicing ------------------------------------------------------------------------------------------
    def _samples(self, index: Any) -> tuple[Any, np.ndarray | None]:
        """An h5py-friendly selection along the sample axis, and the order to restore after."""
        n = len(self)
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -n <= i < n:
                raise IndexError(f"sample {i} out of range for {n} samples")
            return i % n, None
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step > 0:
                return slice(start, stop, step), None
            index = np.arange(start, stop, step)
        idx = np.asarray(index)
        if idx.size == 0:
            idx = idx.astype(np.int64)  # np.asarray([]) is float
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean mask of shape {idx.shape} for {n} samples")
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"sample index must be an int, a slice or a 1-D list of ints, got {index!r}")
        if ((idx < -n) | (idx >= n)).any():
            raise IndexError(f"sample index out of range for {n} samples")
        # h5py wants increasing, unique indices: read those, then put them back in order
        unique, inverse = np.unique(idx % n, return_inverse=True)
        return unique, inverse

    def _read(self, array: Any, sel: Any, rest: tuple[Any, ...]) -> np.ndarray:
        if any(r is Ellipsis or r is None or not isinstance(r, (int, np.integer, slice)) for r in rest):
            raise IndexError("after the sample index only ints and slices are supported")
        if isinstance(sel, np.ndarray) and sel.size == 0:
            shape = self._logical_shape(array)
            return np.empty((0, *shape[1:]), dtype=array.dtype)[(slice(None), *rest)]
        if not self.transposed:
            return np.asarray(array[(sel, *rest)])
        # MATLAB (N, X, Y) is stored as (Y, X, N): index the reversed axes, then reverse back
        ndim = len(array.shape)
        if len(rest) > ndim - 1:
            raise IndexError(f"too many indices for an array of {ndim} dimensions")
        rest = rest + (slice(None),) * (ndim - 1 - len(rest))
        return np.asarray(array[(*rest[::-1], sel)]).transpose()

    def __getitem__(self, index: Any) -> dict[str, torch.Tensor]:
        first, rest = (index[0], tuple(index[1:])) if isinstance(index, tuple) else (index, ())
        sel, inverse = self._samples(first)
        out = {}
        for name, var in self.variables.items():
            data = self._read(self._array(var), sel, rest)
            if inverse is not None:
                data = data[inverse]
            t = torch.from_numpy(np.ascontiguousarray(data))
            out[name] = t if self.dtype is None else t.to(self.dtype)
        return out


class PDEBenchDataset(_LazyArrays):
    """A PDEBench HDF5 file with one sample-first array per variable (Takamoto et al. 2022).

    The layout of e.g. ``1D_Advection_Sols_beta0.1.hdf5``: ``tensor`` ``[N, T, X]`` (or
    ``[N, T, X, Y]``), ``t-coordinate``, ``x-coordinate`` (and ``y-``, ``z-coordinate``). Those
    files store one more time coordinate than snapshots; the first ``T`` are the snapshot times.
    Other single-file layouts (1D compressible flow: ``density``, ``pressure``, ``Vx``) are read
    by naming their arrays in ``variables``.

    Parameters
    ----------
    source
        Path of the file, or an open binary file object.
    variables
        Arrays to read: a name, a list of names, or ``{output name: array name}``.
        Default ``{"u": "tensor"}``.
    dtype
        Cast the tensors to this dtype; ``None`` keeps the stored one (float32 in PDEBench).

    Attributes
    ----------
    grid
        ``{"t": [T], "x": [X], ...}``, the coordinates present in the file in axis order.
    """

    def __init__(
        self,
        source: Source,
        variables: str | Sequence[str] | Mapping[str, str] | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(source, _variables(variables or {"u": "tensor"}), dtype)
        self._n = self._count()
        f = self._h5()
        n_times = self.shape(next(iter(self.variables)))[1] if self._n else 0
        self.grid: dict[str, torch.Tensor] = {}
        for axis in ("t", "x", "y", "z"):
            key = f"{axis}-coordinate"
            if key in f:
                c = torch.from_numpy(np.asarray(f[key][()]))
                self.grid[axis] = c[:n_times] if axis == "t" else c


class FNOMatDataset(_LazyArrays):
    """A ``.mat`` file of the Fourier neural operator paper (Li et al. 2021), e.g. Burgers'
    ``burgers_data_R10.mat`` (``a``, ``u``: ``[N, X]``) or Darcy's ``coeff`` / ``sol``.

    MATLAB v7.3 files are HDF5 and are sliced lazily; MATLAB writes arrays in column-major order,
    so HDF5 sees ``[N, X, Y]`` as ``[Y, X, N]``, and this class turns it back: items and shapes
    follow MATLAB's axis order, samples first. Older v5/v7 files are not HDF5, and their
    (possibly compressed) arrays cannot be sliced without being read: ``scipy.io.loadmat`` reads
    the requested variables whole into memory, once, when the dataset is created.

    Parameters
    ----------
    source
        Path of the ``.mat`` file (or an open binary file object of a v7.3 file).
    variables
        Arrays to read: a name, a list of names, or ``{output name: array name}``, e.g.
        ``{"a": "coeff", "u": "sol"}`` for Darcy flow. Default ``("a", "u")``.
    dtype
        Cast the tensors to this dtype; ``None`` keeps the stored one (float64 from MATLAB).

    Attributes
    ----------
    lazy
        ``True`` for v7.3 (HDF5) files, ``False`` for v5 files held in memory.
    """

    def __init__(
        self,
        source: Source,
        variables: str | Sequence[str] | Mapping[str, str] = ("a", "u"),
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(source, _variables(variables), dtype)
        self.lazy = not isinstance(source, (str, Path)) or h5py.is_hdf5(source)
        self.transposed = self.lazy
        self._memory: dict[str, np.ndarray] = {}
        if not self.lazy:
            self._load_v5()
        self._n = self._count()

    def _load_v5(self) -> None:
        import scipy.io

        wanted = sorted(set(self.variables.values()))
        try:
            data = scipy.io.loadmat(self.source, variable_names=wanted)
        except (ValueError, OSError, NotImplementedError) as err:
            raise SciMLError(f"{self.source}: not a readable .mat file: {err}") from None
        missing = [v for v in wanted if v not in data]
        if missing:
            names = sorted(w[0] for w in scipy.io.whosmat(self.source))
            raise SciMLError(f"{self.source}: no array {missing[0]!r} (arrays: {', '.join(names)})")
        self._memory = {v: data[v] for v in wanted}
        size = sum(a.nbytes for a in self._memory.values())
        log.info("%s is a v5 .mat file: read %.1f MB into memory (only v7.3 slices lazily)",
                 self.source, size / 2**20)

    def _array(self, var: str) -> Any:
        return self._memory[var] if not self.lazy else super()._array(var)
