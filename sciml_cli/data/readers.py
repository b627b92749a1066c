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

import hashlib
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


def _plain_index(rest: tuple[Any, ...]) -> tuple[tuple[Any, ...], list[tuple[int, np.ndarray]]]:
    """``rest`` with its one list (if any) made increasing and unique, as h5py wants, and
    ``(axis in rest, inverse)`` to put the read values back in the order asked for."""
    out, lists = [], []
    for axis, r in enumerate(rest):
        if isinstance(r, (list, tuple, np.ndarray)):
            idx = np.asarray(r, dtype=np.int64)
            if idx.ndim != 1 or idx.size == 0 or (idx < 0).any():
                raise IndexError(f"a list index must be a non-empty 1-D list of ints >= 0, got {r!r}")
            unique, inverse = np.unique(idx, return_inverse=True)
            out.append(unique.tolist())
            if not np.array_equal(unique, idx):
                lists.append((axis, inverse))
        elif r is Ellipsis or r is None or not isinstance(r, (int, np.integer, slice)):
            raise IndexError("after the sample index only ints, slices and one list are supported")
        else:
            out.append(r)
    if sum(isinstance(r, list) for r in out) > 1:
        raise IndexError("at most one list index after the sample index")
    return tuple(out), lists


def _reorder(data: np.ndarray, rest: tuple[Any, ...], lists: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """Put values read for an increasing list back in the order asked for (``lists`` from
    :func:`_plain_index`; the sample axis comes first in ``data``)."""
    for axis, inverse in lists:
        kept = sum(not isinstance(r, (int, np.integer)) for r in rest[:axis])
        data = np.take(data, inverse, axis=1 + kept)
    return data


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
        if not self.variables:
            return 0
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
        rest, lists = _plain_index(rest)
        if lists and not isinstance(sel, slice):
            raise IndexError("a list after the sample index needs a slice of samples")
        if isinstance(sel, np.ndarray) and sel.size == 0:
            shape = self._logical_shape(array)
            return np.empty((0, *shape[1:]), dtype=array.dtype)[(slice(None), *rest)]
        if not self.transposed:
            data = np.asarray(array[(sel, *rest)])
        else:
            # MATLAB (N, X, Y) is stored as (Y, X, N): index the reversed axes, then reverse back
            ndim = len(array.shape)
            if len(rest) > ndim - 1:
                raise IndexError(f"too many indices for an array of {ndim} dimensions")
            rest = rest + (slice(None),) * (ndim - 1 - len(rest))
            data = np.asarray(array[(*rest[::-1], sel)]).transpose()
        return _reorder(data, rest, lists)

    def read(self, name: str, index: Any) -> np.ndarray:
        """Output ``name`` at ``index`` (as for ``ds[index]``; after the samples, ints, slices and
        one list), as stored (no cast), C-contiguous."""
        first, rest = (index[0], tuple(index[1:])) if isinstance(index, tuple) else (index, ())
        sel, inverse = self._samples(first)
        data = self._read(self._array(self.variables[name]), sel, rest)
        return np.ascontiguousarray(data if inverse is None else data[inverse])

    def itemsize(self, name: str) -> int:
        return int(self._array(self.variables[name]).dtype.itemsize)

    def __getitem__(self, index: Any) -> dict[str, torch.Tensor]:
        out = {}
        for name in self.variables:
            t = torch.from_numpy(self.read(name, index))
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


class NPZDataset(_LazyArrays):
    """Arrays of a NumPy ``.npz`` archive, samples first, by name.

    An archive member cannot be sliced without being read, so each array asked for is read
    whole into memory on first use (only that array, not the archive). One-dimensional members
    named ``x``, ``y``, ``z`` or ``t`` are the grid (:attr:`grid`), not data.
    """

    def __init__(
        self,
        source: str | Path,
        variables: str | Sequence[str] | Mapping[str, str],
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(source, _variables(variables), dtype)
        import zipfile

        try:
            self._archive = np.load(source, allow_pickle=False)
            members = list(self._archive.files)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise SciMLError(f"{source}: not a readable .npz file: {err}") from None
        self.grid = {}
        for axis in ("t", "x", "y", "z"):
            if axis in members:
                c = self._load(axis)
                if c.ndim == 1:
                    self.grid[axis] = torch.from_numpy(c)
        self.names = [m for m in members if m not in self.grid]
        self._memory: dict[str, np.ndarray] = {}
        self._n = self._count()

    def _load(self, var: str) -> np.ndarray:
        import zipfile

        try:
            return self._archive[var]
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:  # a damaged member
            raise SciMLError(f"{self.source}: array {var!r} is not readable: {err}") from None

    def _array(self, var: str) -> Any:
        if var not in self._memory:
            if var not in self.names:
                raise SciMLError(f"{self.source}: no array {var!r} (arrays: {', '.join(sorted(self.names))})")
            self._memory[var] = self._load(var)
        return self._memory[var]

    def close(self) -> None:
        self._memory.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_memory": {}}


class SciMLFileDataset(_LazyArrays):
    """The HDF5 file that ``sciml solve`` writes (:mod:`sciml_cli.data.hdf5`): ``/fields/<name>``
    sample-first, ``/grid/<name>`` the coordinates of the trailing axes in axis order."""

    def __init__(self, source: str | Path, variables: str | Sequence[str] | Mapping[str, str],
                 dtype: torch.dtype | None = None) -> None:
        import json

        super().__init__(source, _variables(variables), dtype)
        f = self._h5()
        try:
            fields, grid = f["fields"], f["grid"]
            self.names = sorted(k for k in fields if isinstance(fields[k], h5py.Dataset))
            axes = json.loads(grid.attrs["axes"])
            self.grid = {k: torch.from_numpy(np.asarray(grid[k][()])) for k in axes}
        except (KeyError, ValueError, OSError) as err:
            raise SciMLError(f"{source}: not a readable sciml dataset: {err}") from None
        self._n = self._count()

    def _array(self, var: str) -> Any:
        if var not in self.names:
            raise SciMLError(f"{self.source}: no array {var!r} (arrays: {', '.join(self.names)})")
        return self._h5()["fields"][var]


class PDEBenchGroupsDataset(_LazyArrays):
    """A PDEBench file with one group per sample (the 2D reaction-diffusion and shallow-water
    files): ``/<sample>/data`` ``[T, *S, C]`` and ``/<sample>/grid/{t,x,y}``. Seen as one array
    ``data`` ``[N, T, *S, C]``; reading ``k`` samples opens ``k`` groups."""

    def __init__(self, source: str | Path, variables: str | Sequence[str] | Mapping[str, str] = "data",
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(source, _variables(variables), dtype)
        f = self._h5()
        self._groups = sorted(k for k in f if isinstance(f[k], h5py.Group) and "data" in f[k])
        if not self._groups:
            raise SciMLError(f"{source}: no sample groups with a 'data' array")
        self.names = ["data"]
        first = f[self._groups[0]]
        self.grid = {}
        for axis in ("t", "x", "y", "z"):
            if "grid" in first and axis in first["grid"]:
                self.grid[axis] = torch.from_numpy(np.asarray(first["grid"][axis][()]))
        self._n = len(self._groups)

    def _array(self, var: str) -> Any:
        if var != "data":
            raise SciMLError(f"{self.source}: no array {var!r} (arrays: data)")
        return self._h5()[self._groups[0]]["data"]

    def shape(self, name: str) -> tuple[int, ...]:
        return (len(self._groups), *self._array(self.variables[name]).shape)

    def _count(self) -> int:
        return len(self._groups)

    def _read(self, array: Any, sel: Any, rest: tuple[Any, ...]) -> np.ndarray:
        f = self._h5()
        index = range(len(self._groups))[sel] if isinstance(sel, slice) else np.atleast_1d(sel)
        rest, lists = _plain_index(rest)
        blocks = []
        for i in index:
            data = f[self._groups[int(i)]]["data"]
            if data.shape != array.shape:
                raise SciMLError(f"{self.source}: sample {self._groups[int(i)]} has data of shape "
                                 f"{data.shape}, the first has {array.shape}")
            blocks.append(np.asarray(data[rest]))
        shape = np.empty(array.shape, dtype=np.bool_)[rest].shape if not blocks else None
        out = np.stack(blocks) if blocks else np.empty((0, *shape), dtype=array.dtype)
        out = _reorder(out, rest, lists)
        if isinstance(sel, (int, np.integer)):
            out = out[0]
        return out


# -- formats ------------------------------------------------------------------------------------------
#: the layouts :func:`open_arrays` reads
FORMATS = ("pdebench", "pdebench_groups", "mat", "npz", "sciml")
_COORDINATES = ("t-coordinate", "x-coordinate", "y-coordinate", "z-coordinate")


def _is_matlab73(f: h5py.File) -> bool:
    if f.userblock_size >= 128:
        with open(f.filename, "rb") as raw:
            if raw.read(10) == b"MATLAB 7.3":
                return True
    return any("MATLAB_class" in f[k].attrs for k in f)


def detect_format(path: str | Path) -> str | None:
    """The layout of ``path`` (one of :data:`FORMATS`) from its content, or ``None``."""
    import zipfile

    path = Path(path)
    if zipfile.is_zipfile(path):
        return "npz"
    if h5py.is_hdf5(path):
        try:
            with h5py.File(path, "r") as f:
                if "fields" in f and "grid" in f and "sha256" in f.attrs:
                    return "sciml"
                if _is_matlab73(f):
                    return "mat"
                if any(isinstance(f[k], h5py.Group) and "data" in f[k] for k in f):
                    return "pdebench_groups"
                if any(isinstance(f[k], h5py.Dataset) for k in f):
                    return "pdebench"
        except OSError as err:
            raise SciMLError(f"{path}: not a readable HDF5 file: {err}") from None
        return None
    with open(path, "rb") as raw:
        if raw.read(10) == b"MATLAB 5.0":
            return "mat"
    kind = {".npz": "NumPy .npz", ".mat": "MATLAB .mat", ".h5": "HDF5", ".hdf5": "HDF5"}.get(path.suffix.lower())
    if kind is not None:  # named like a layout we read, but it is not one: damaged
        raise SciMLError(f"{path}: not a readable {kind} file (truncated or corrupt?)")
    return None


def array_shapes(path: str | Path, format: str) -> dict[str, tuple[int, ...]]:
    """Data arrays of the file and their shapes, samples first (MATLAB's axis order for
    ``.mat``); coordinates are left out."""
    if format == "npz":
        ds = NPZDataset(path, [])
        import zipfile

        with zipfile.ZipFile(path) as z:  # shapes from the members' headers, without reading data
            shapes = {}
            for name in ds.names:
                with z.open(f"{name}.npy") as member:
                    header = {(1, 0): np.lib.format.read_array_header_1_0,
                              (2, 0): np.lib.format.read_array_header_2_0}.get(np.lib.format.read_magic(member))
                    shapes[name] = tuple(header(member)[0]) if header else ds._load(name).shape
        return shapes
    if format == "mat":
        if not h5py.is_hdf5(path):
            import scipy.io

            try:
                return {name: tuple(shape) for name, shape, _ in scipy.io.whosmat(path)}
            except (ValueError, OSError, NotImplementedError, TypeError) as err:
                raise SciMLError(f"{path}: not a readable .mat file: {err}") from None
    if format == "pdebench_groups":
        ds = PDEBenchGroupsDataset(path)
        return {"data": ds.shape("data")}
    if format == "sciml":
        ds = SciMLFileDataset(path, [])
        return {name: tuple(ds._array(name).shape) for name in ds.names}
    try:
        with h5py.File(path, "r") as f:
            shapes = {k: tuple(f[k].shape) for k in f
                      if isinstance(f[k], h5py.Dataset) and k not in _COORDINATES and f[k].ndim > 0}
            if format == "mat":
                shapes = {k: s[::-1] for k, s in shapes.items()}
            return shapes
    except OSError as err:
        raise SciMLError(f"{path}: not a readable HDF5 file: {err}") from None


def open_arrays(path: str | Path, format: str, variables: Mapping[str, str],
                dtype: torch.dtype | None = None) -> _LazyArrays:
    """A reader of ``variables`` (``{output name: array name}``) in a file of ``format``; its
    ``grid`` attribute holds the coordinates the file stores (none for ``.mat``)."""
    if format == "pdebench":
        return PDEBenchDataset(path, variables, dtype)
    if format == "pdebench_groups":
        return PDEBenchGroupsDataset(path, variables, dtype)
    if format == "npz":
        return NPZDataset(path, variables, dtype)
    if format == "sciml":
        return SciMLFileDataset(path, variables, dtype)
    if format == "mat":
        ds = FNOMatDataset(path, variables, dtype)
        ds.grid = {}
        return ds
    raise ValueError(f"format: {format!r} is not one of {', '.join(FORMATS)}")


# -- checksums ----------------------------------------------------------------------------------------
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: str | Path, block_bytes: int = 8 * 2**20) -> str:
    """SHA-256 of a file's bytes, read in blocks (bounded memory), with a progress bar for large
    files; remembered per process while the file's size and modification time stay the same."""
    from .. import progress

    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        blocks = -(-st.st_size // block_bytes)
        with open(path, "rb") as f, progress.track_steps(blocks, f"sha256 of {path.name}") as bar:
            while chunk := f.read(block_bytes):
                h.update(chunk)
                bar.advance()
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]
