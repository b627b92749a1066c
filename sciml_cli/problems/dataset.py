"""Your own data as a problem: operator pairs read from a file.

``sciml train model=fno problem=dataset problem.path=burgers_data_R10.mat`` trains on a file in
one of the layouts users arrive with:

- ``pdebench``: a PDEBench single-file HDF5 (Takamoto et al. 2022), arrays ``[N, T, *S]``
  (``tensor``, or ``density``/``Vx``/... of the compressible-flow files), Darcy's ``nu``
  ``[N, *S]``, with ``x-``/``y-``/``t-coordinate``;
- ``pdebench_groups``: the PDEBench files with one group per sample, ``<id>/data``
  ``[T, *S, C]`` and ``<id>/grid/{x,y,t}``;
- ``mat``: the FNO paper's MATLAB files (Li et al. 2021), v5 (read whole) or v7.3 (HDF5, sliced
  lazily), e.g. ``a``/``u`` for Burgers, ``coeff``/``sol`` for Darcy, ``u`` ``[N, X, Y, T]``
  (time last) for Navier–Stokes;
- ``npz``: NumPy archives of arrays ``[N, *S]`` or ``[N, T, *S]`` (1-D ``x``/``y``/``t`` members
  are the grid);
- ``sciml``: the HDF5 that ``sciml solve`` writes.

An array with one axis more than samples and space has a time axis (axis 1, last for ``.mat``):
``input_steps``/``output_steps`` pick snapshots of it as channels, or ``t_in`` (and ``t_out``)
take the first ``t_in`` snapshots in and the next ones out, as Li et al. do for Navier–Stokes,
so the autoregressive FNO can roll out over them. Samples are split by index ranges or fractions
of the file in file order (nothing is shuffled), read in blocks, never the whole file, when the
layout allows slicing. The file's SHA-256 is recorded in the run (its stored config), and a run
refuses a file whose bytes changed since.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from ..constraints import PositiveInt
from ..errors import ConfigError, SciMLError
from ..numerics.metrics import relative_l2
from .base import OperatorData, Problem, Solution

Format = Literal["auto", "pdebench", "pdebench_groups", "mat", "npz", "sciml"]

#: raw bytes read from the file at a time: blocks of whole samples (at least one), below one
#: training batch of a 1D FNO (20 pairs at s = 1024, float32: 160 KiB; measured in scripts/bench_dataset.py)
BLOCK_BYTES = 2**16

#: default split of the file's samples, in file order: the first 80 % train, then 10 % each
DEFAULT_SPLITS = {"train": [0.0, 0.8], "val": [0.8, 0.9], "test": [0.9, 1.0]}

#: input and output arrays tried, in order, when none are named
DEFAULT_NAMES = (("a", "u"), ("coeff", "sol"), ("nu", "tensor"), ("tensor", "tensor"), ("data", "data"),
                 ("x", "y"), ("input", "output"))


@dataclass(frozen=True)
class _Layout:
    """How one array's axes are laid out: ``plain`` ``[N, *S]``, ``time`` ``[N, T, *S]``,
    ``time_last`` ``[N, *S, T]`` (MATLAB) or ``groups`` ``[N, T, *S, C]`` (PDEBench groups)."""

    kind: Literal["plain", "time", "time_last", "groups"]
    shape: tuple[int, ...]

    @property
    def n_times(self) -> int:
        return {"plain": 1, "time": self.shape[1], "time_last": self.shape[-1], "groups": self.shape[1]}[self.kind]

    @property
    def channels(self) -> int:
        return self.shape[-1] if self.kind == "groups" else 1

    @property
    def space(self) -> tuple[int, ...]:
        return {"plain": self.shape[1:], "time": self.shape[2:], "time_last": self.shape[1:-1],
                "groups": self.shape[2:-1]}[self.kind]


def _names(value: str | Sequence[str] | None) -> list[str] | None:
    return None if value is None else [value] if isinstance(value, str) else [str(v) for v in value]


class Dataset(Problem, OperatorData):
    """Operator pairs ``(a, u)`` from a file: the operator-data view on the user's own data.

    Parameters
    ----------
    path
        The file (``.h5``/``.hdf5``, ``.mat``, ``.npz``). Recorded in the run as an absolute path.
    format
        Its layout (see the module docstring); ``auto`` tells it from the content.
    input, output
        The arrays (one name or a list, whose channels are stacked) of ``a`` and ``u``; ``null``
        tries ``a``/``u``, ``coeff``/``sol``, ``nu``/``tensor`` (PDEBench Darcy), ``tensor``
        (PDEBench), ``data`` (PDEBench groups), in that order.
    input_steps, output_steps
        Snapshots of an array's time axis that become the channels of ``a`` and ``u``
        (negative counts from the end); ``null``: the first snapshot in, the last one out.
    t_in, t_out
        Instead: snapshots ``0 .. t_in-1`` in and the ``t_out`` after them out (``null``: all
        the rest), as Li et al. (2021) train FNO-2D on Navier–Stokes (``t_in=10``).
    n_dims
        Spatial dimensions; ``null``: from the file's coordinates, else from the arrays' ranks.
    periodic
        Whether the domain is periodic. The grid, when the file stores none, is ``x_j = j/n``
        (periodic) or ``linspace(0, 1, n)``; the FNO pads a non-periodic domain.
    subsample
        Keep every ``subsample``-th grid point per axis for training (Li et al. train Burgers at
        8192 / 2^k); must divide the file's resolution.
    resolution
        Instead of ``subsample``: the training grid's points per axis (a divisor of the file's),
        so one preset serves files of any finer resolution.
    splits
        ``{train, val, test}: [start, stop]`` in file order: integers are sample indices
        (negative from the end, ``null`` the end), numbers with a decimal point fractions of the
        file; e.g. Li et al.'s Burgers protocol is ``train: [0, 1000]``, ``test: [-200, null]``.
        Overlapping splits are refused. A model takes the first samples of a split.
    sha256
        Expected SHA-256 of the file's bytes; a training run records it, so ``eval`` and
        ``resume`` refuse a file that changed. ``null``: not checked.
    """

    cache_exempt = frozenset({"data_dir"})

    def __init__(
        self,
        path: str | None = None,
        format: Format = "auto",
        input: str | list[str] | None = None,
        output: str | list[str] | None = None,
        input_steps: list[int] | None = None,
        output_steps: list[int] | None = None,
        t_in: PositiveInt | None = None,
        t_out: PositiveInt | None = None,
        n_dims: Literal[1, 2, 3] | None = None,
        periodic: bool = True,
        subsample: PositiveInt = 1,
        resolution: PositiveInt | None = None,
        splits: dict[str, list[float | None]] | None = None,
        sha256: str | None = None,
    ) -> None:
        from ..data import readers

        super().__init__()
        if path is None:
            raise ConfigError("problem.path", "the data file is not set; give problem.path=<file> "
                                              "(.h5/.hdf5 PDEBench or sciml, .mat, .npz)")
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_file():
            raise ConfigError("problem.path", f"{path}: no such file")
        self.format = readers.detect_format(self.path) if format == "auto" else format
        if self.format is None:
            raise ConfigError("problem.format", f"cannot tell the layout of {path}; name it", readers.FORMATS)
        self.periodic, self.subsample = bool(periodic), int(subsample)
        shapes = readers.array_shapes(self.path, self.format)
        self.inputs, self.outputs = self._choose_arrays(shapes, _names(input), _names(output))
        self._variables = {name: name for name in dict.fromkeys(self.inputs + self.outputs)}
        self.n_samples = self._count(shapes)
        coords = {} if self.format == "mat" else self._reader.grid
        self._space_coords = {k: v for k, v in coords.items() if k != "t"}
        self.n_dims = int(n_dims or len(self._space_coords) or self._infer_dims(
            shapes, input_steps is not None or t_in is not None, output_steps is not None or t_in is not None))
        self._layouts = {name: self._layout(name, shapes[name]) for name in self._variables}
        self.space = self._common_space()
        steps = self._choose_steps(input_steps, output_steps, t_in, t_out)
        self._steps = {"input": steps[0], "output": steps[1]}
        self.in_channels = sum(len(steps[0][n]) * self._layouts[n].channels for n in self.inputs)
        self.out_channels = sum(len(steps[1][n]) * self._layouts[n].channels for n in self.outputs)
        self.step_channels = self._consecutive()
        if resolution is not None:
            if subsample != 1:
                raise ConfigError("problem.resolution", "give either resolution or subsample, not both")
            if self.space[0] % resolution:
                raise ConfigError("problem.resolution", f"must divide the file's {self.space[0]} points per axis "
                                                        f"({self.path.name}), got {resolution}")
            self.subsample = self.space[0] // resolution
        if any(n % self.subsample for n in self.space):
            raise ConfigError("problem.subsample", f"must divide the resolution {'x'.join(map(str, self.space))} "
                                                   f"of {self.path.name}, got {self.subsample}")
        self.splits = self._parse_splits(splits if splits is not None else DEFAULT_SPLITS)
        if sha256 is not None and self.sha256 != sha256.lower():
            raise SciMLError(
                f"problem.path: {self.path} changed since the run was made (its sha256 is now "
                f"{self.sha256[:16]}..., the run recorded {sha256[:16]}...); restore it, or resume with "
                f"problem.sha256=null to go on with the new bytes")
        self._last: tuple[Tensor, Tensor] | None = None

    # -- the file ------------------------------------------------------------------------------------
    @property
    def _reader(self):
        reader = self.__dict__.get("_open_reader")
        if reader is None:
            from ..data import readers

            reader = readers.open_arrays(self.path, self.format, self._variables)
            self.__dict__["_open_reader"] = reader
        return reader

    @property
    def sha256(self) -> str:
        """SHA-256 of the file's bytes (computed once per process)."""
        from ..data.readers import file_sha256

        return file_sha256(self.path)

    def pinned_arguments(self) -> dict[str, Any]:
        """The absolute path and the checksum, recorded in the run's stored config."""
        return {"path": str(self.path), "sha256": self.sha256}

    def provenance(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "bytes": self.path.stat().st_size,
                "sha256": self.sha256}

    @property
    def resolution(self) -> int:
        """Training grid points along the first axis: the file's, divided by ``subsample``."""
        return self.space[0] // self.subsample

    # -- reading the config against the file -------------------------------------------------------------
    def _choose_arrays(self, shapes: Mapping[str, tuple[int, ...]], inputs: list[str] | None,
                       outputs: list[str] | None) -> tuple[list[str], list[str]]:
        if inputs is None or outputs is None:
            for a, u in DEFAULT_NAMES:
                if a in shapes and u in shapes:
                    inputs, outputs = inputs or [a], outputs or [u]
                    break
            else:
                if len(shapes) == 1:  # one array: snapshots of it in and out
                    inputs = outputs = inputs or outputs or list(shapes)
                else:
                    key = "problem.input" if inputs is None else "problem.output"
                    raise ConfigError(key, f"cannot tell which arrays of {self.path.name} are input and "
                                           "output; name them, e.g. problem.input=a problem.output=u", sorted(shapes))
        for key, names in (("problem.input", inputs), ("problem.output", outputs)):
            if not names:
                raise ConfigError(key, "needs at least one array", sorted(shapes))
            for name in names:
                if name not in shapes:
                    raise ConfigError(key, f"no array {name!r} in {self.path.name}", sorted(shapes))
        return inputs, outputs

    def _count(self, shapes: Mapping[str, tuple[int, ...]]) -> int:
        counts = {name: shapes[name][0] if shapes[name] else 0 for name in self._variables}
        first = self.inputs[0]
        for name, n in counts.items():
            if n != counts[first]:
                raise ConfigError("problem.output" if name in self.outputs else "problem.input",
                                  f"{name} has {n} samples, {first} has {counts[first]}: they are not pairs")
        if counts[first] < 1:
            raise ConfigError("problem.input", f"{first} in {self.path.name} holds no samples")
        return counts[first]

    def _infer_dims(self, shapes: Mapping[str, tuple[int, ...]], in_steps: bool, out_steps: bool) -> int:
        """From ranks: ``[N, *S]`` unless snapshots were asked of every array."""
        if self.format == "pdebench_groups":
            d = len(shapes["data"]) - 3
        else:
            stepped = [n for n in self._variables if (n in self.inputs and in_steps) or (n in self.outputs and out_steps)]
            plain = [n for n in self._variables if n not in stepped]
            d = min(len(shapes[n]) for n in plain) - 1 if plain else min(len(shapes[n]) for n in stepped) - 2
        if not 1 <= d <= 3:
            raise ConfigError("problem.n_dims", f"cannot tell the spatial dimensions of {self.path.name} "
                                                f"(arrays {dict((n, shapes[n]) for n in self._variables)}); set it", [1, 2, 3])
        return d

    def _layout(self, name: str, shape: tuple[int, ...]) -> _Layout:
        d = self.n_dims
        if self.format == "pdebench_groups":
            if len(shape) != d + 3:
                raise ConfigError("problem.n_dims", f"data of {self.path.name} is {shape}, not [N, T, *S, C] with {d} spatial axes")
            return _Layout("groups", shape)
        if len(shape) == d + 1:
            return _Layout("plain", shape)
        if len(shape) == d + 2:
            return _Layout("time_last" if self.format == "mat" else "time", shape)
        key = "problem.input" if name in self.inputs else "problem.output"
        raise ConfigError(key, f"{name} has shape {shape}, not [N, *S] or [N, T, *S] with {d} spatial axes "
                               "(problem.n_dims)")

    def _common_space(self) -> tuple[int, ...]:
        spaces = {name: layout.space for name, layout in self._layouts.items()}
        first = self.inputs[0]
        for name, space in spaces.items():
            if space != spaces[first]:
                raise ConfigError("problem.output" if name in self.outputs else "problem.input",
                                  f"{name} lies on a {space} grid, {first} on {spaces[first]}")
        for axis, (name, c) in enumerate(self._space_coords.items()):
            if axis < len(spaces[first]) and len(c) != spaces[first][axis]:
                raise SciMLError(f"{self.path}: {name}-coordinate has {len(c)} points, the arrays {spaces[first][axis]}")
        return spaces[first]

    def _choose_steps(self, input_steps, output_steps, t_in, t_out) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        if t_in is not None and (input_steps is not None or output_steps is not None):
            raise ConfigError("problem.t_in", "give either t_in (and t_out) or input_steps/output_steps, not both")
        if t_out is not None and t_in is None:
            raise ConfigError("problem.t_out", "needs problem.t_in")
        chosen: tuple[dict[str, list[int]], dict[str, list[int]]] = ({}, {})
        for i, (role, names, given, default) in enumerate((("input", self.inputs, input_steps, [0]),
                                                           ("output", self.outputs, output_steps, [-1]))):
            key = f"problem.{role}_steps"
            for name in names:
                layout = self._layouts[name]
                n = layout.n_times
                if layout.kind == "plain":
                    if given is not None or t_in is not None:
                        raise ConfigError("problem.t_in" if t_in is not None else key,
                                          f"{name} {tuple(layout.shape)} has no time axis to take snapshots of")
                    chosen[i][name] = [0]
                    continue
                if t_in is not None:
                    key = "problem.t_in" if role == "input" else "problem.t_out"
                    end = t_in + (t_out if t_out is not None else n - t_in)
                    steps = list(range(t_in)) if role == "input" else list(range(t_in, end))
                    if end > n or not steps:
                        raise ConfigError(key, f"t_in={t_in}" + (f", t_out={t_out}" if t_out else "") +
                                          f" needs {max(end, t_in + 1)} snapshots; {name} has {n}")
                else:
                    steps = list(given if given is not None else default)
                    if not steps:
                        raise ConfigError(key, "needs at least one snapshot")
                    bad = [s for s in steps if not -n <= s < n]
                    if bad:
                        raise ConfigError(key, f"snapshot {bad[0]} out of range: {name} has {n} (0 .. {n - 1}, or -{n} .. -1)")
                    steps = [s % n for s in steps]
                chosen[i][name] = steps
        return chosen

    def _consecutive(self) -> int | None:
        """Channels per snapshot when ``u`` continues ``a`` in time (same arrays, consecutive
        snapshots), so a model may roll out; else ``None``."""
        ins, outs = self._steps["input"], self._steps["output"]
        if self.inputs != self.outputs or any(self._layouts[n].kind == "plain" for n in self.inputs):
            return None
        for name in self.inputs:
            seq = ins[name] + outs[name]
            if seq != list(range(seq[0], seq[0] + len(seq))) or ins[name] != ins[self.inputs[0]] \
                    or outs[name] != outs[self.inputs[0]]:
                return None
        return sum(self._layouts[n].channels for n in self.inputs)

    def _parse_splits(self, splits: Mapping[str, Sequence[Any]]) -> dict[str, tuple[int, int]]:
        n = self.n_samples
        out = {}
        unknown = sorted(set(splits) - set(DEFAULT_SPLITS))
        if unknown:
            raise ConfigError(f"problem.splits.{unknown[0]}", "not a split", list(DEFAULT_SPLITS))
        for split in DEFAULT_SPLITS:
            key = f"problem.splits.{split}"
            bounds = list(splits.get(split, DEFAULT_SPLITS[split]))
            if len(bounds) != 2:
                raise ConfigError(key, f"expected [start, stop], got {bounds}")
            ends = []
            for value, end in zip(bounds, (0, n)):
                if value is None:
                    ends.append(end)
                elif isinstance(value, int):
                    ends.append(value + n if value < 0 else value)
                elif isinstance(value, float) and 0.0 <= value <= 1.0:
                    ends.append(round(value * n))
                else:
                    raise ConfigError(key, f"{value!r} is neither a sample index nor a fraction in [0, 1]")
            start, stop = ends
            if not 0 <= start <= stop <= n:
                raise ConfigError(key, f"{bounds} is not a range of the {n} samples of {self.path.name}")
            out[split] = (start, stop)
        if out["train"][0] == out["train"][1]:
            raise ConfigError("problem.splits.train", f"holds no samples of the {n} in {self.path.name}")
        names = list(out)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                (s0, e0), (s1, e1) = out[a], out[b]
                if max(s0, s1) < min(e0, e1):
                    raise ConfigError(f"problem.splits.{b}", f"samples [{s1}, {e1}) overlap {a}'s [{s0}, {e0})")
        return out

    # -- the operator-data view -----------------------------------------------------------------------------
    def check_resolution(self, resolution: int) -> None:
        res = int(resolution)
        if res < 1 or self.space[0] % res or any(n % (self.space[0] // res) for n in self.space):
            raise ValueError(f"resolution: must divide the {self.space[0]} points per axis of {self.path.name}, got {res}")

    def operator_pairs(self, split: str, n_samples: int, resolution: int | None = None
                       ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """The first ``n_samples`` of ``split`` in file order, at ``resolution`` points per axis
        (default :attr:`resolution`; any that divides the file's), ``[N, C, *S]`` on the
        problem's device and dtype. Read in blocks of whole samples into the result, so memory
        beyond it is one block."""
        start, stop = self.splits[split]
        if n_samples > stop - start:
            key = "model.n_train" if split == "train" else "model.n_test"
            raise ConfigError(key, f"asks for {n_samples} {split} samples; problem.splits.{split} holds "
                                   f"{stop - start} of the {self.n_samples} in {self.path.name}")
        res = int(resolution or self.resolution)
        try:
            self.check_resolution(res)
        except ValueError as err:
            raise ConfigError("resolution", str(err).removeprefix("resolution: ")) from None
        stride = self.space[0] // res
        a = self._read("input", start, n_samples, stride)
        u = self._read("output", start, n_samples, stride)
        if split != "train":  # scored by baselines(), beside the model
            self._last = (a, u)
        return a, u, self.grid(stride)

    def grid(self, stride: int = 1) -> dict[str, Tensor]:
        """Coordinates per spatial axis: the file's, else ``j / n`` (periodic) or
        ``linspace(0, 1, n)``; every ``stride``-th point."""
        names = list(self._space_coords) or ["x", "y", "z"][:self.n_dims]
        out = {}
        for axis, name in enumerate(names[:self.n_dims]):
            n = self.space[axis]
            if name in self._space_coords:
                c = self._space_coords[name].to(**self.factory)
            elif self.periodic:
                c = torch.arange(n, **self.factory) / n
            else:
                c = torch.linspace(0, 1, n, **self.factory)
            out[name] = c[::stride].contiguous()
        return out

    def _read(self, role: str, start: int, n: int, stride: int) -> Tensor:
        names = self.inputs if role == "input" else self.outputs
        steps = self._steps[role]
        space = tuple(s // stride for s in self.space)
        channels = self.in_channels if role == "input" else self.out_channels
        out = torch.empty((n, channels, *space), **self.factory)
        counts = {len(steps[name]) for name in names}
        # several arrays with the same snapshots: interleave them per snapshot (the order a rollout needs)
        per_step = len(counts) == 1
        k = counts.pop() if per_step else 1
        view = out.view(n, k, channels // k, *space) if per_step else None
        c = 0
        for name in names:
            layout = self._layouts[name]
            width = len(steps[name]) * layout.channels
            # where this array's [n, steps, C, *S] go in the result
            target = view[:, :, c:c + layout.channels] if per_step else \
                out[:, c:c + width].unflatten(1, (len(steps[name]), layout.channels))
            index = self._index(layout, steps[name], stride)
            for selection, destination in self._blocks(name, layout, index, start, n, width * math.prod(space)):
                try:
                    data = torch.from_numpy(self._reader.read(name, selection))
                except (OSError, RuntimeError) as err:  # h5py's errors for damaged data
                    raise SciMLError(f"{self.path}: cannot read {name}: {err}") from None
                if not torch.isfinite(data).all():
                    raise SciMLError(f"{self.path}: {name} holds NaN or Inf (samples {start}..{start + n - 1})")
                target[destination] = self._to_steps(layout, data)
            c += layout.channels if per_step else width
        return out

    def _blocks(self, name: str, layout: _Layout, index: tuple[Any, ...], start: int, n: int, values: int):
        """``(selection, destination)`` pairs that read ``index`` of samples ``start ..
        start + n - 1`` in blocks of about :data:`BLOCK_BYTES`: blocks of samples, or, where the
        samples are the fastest axis on disk (MATLAB v7.3), blocks along the slowest axis (the
        last in MATLAB's order), so every read is a run of contiguous bytes."""
        itemsize = self._reader.itemsize(name)
        if not getattr(self._reader, "transposed", False):
            block = max(1, BLOCK_BYTES // (itemsize * values))
            for i in range(0, n, block):
                j = min(n, i + block)
                yield (slice(start + i, start + j), *index), (slice(i, j),)
            return
        last = index[-1]
        positions = list(range(layout.shape[-1])[last]) if isinstance(last, slice) else list(last)
        per_position = values // len(positions)
        block = max(1, BLOCK_BYTES // (itemsize * n * per_position))
        for q in range(0, len(positions), block):
            chunk = positions[q:q + block]
            step = last.step if isinstance(last, slice) and last.step else 1
            sub = slice(chunk[0], chunk[-1] + 1, step) if isinstance(last, slice) else chunk
            # the last MATLAB axis is the snapshots (time last) or the last spatial axis
            destination = (slice(None), slice(q, q + len(chunk))) if layout.kind == "time_last" else \
                (Ellipsis, slice(q, q + len(chunk)))
            yield (slice(start, start + n), *index[:-1], sub), destination

    def _index(self, layout: _Layout, steps: list[int], stride: int) -> tuple[Any, ...]:
        space = (slice(None, None, stride),) * self.n_dims
        if layout.kind == "plain":
            return space
        sel = slice(steps[0], steps[-1] + 1) if steps == list(range(steps[0], steps[-1] + 1)) else list(steps)
        if layout.kind == "time":
            return (sel, *space)
        if layout.kind == "time_last":
            return (*space, sel)
        return (sel, *space, slice(None))

    @staticmethod
    def _to_steps(layout: _Layout, data: Tensor) -> Tensor:
        if layout.kind == "plain":
            return data.unsqueeze(1).unsqueeze(1)
        if layout.kind == "time":
            return data.unsqueeze(2)
        if layout.kind == "time_last":
            return data.movedim(-1, 1).unsqueeze(2)
        return data.movedim(-1, 2)

    def baselines(self) -> dict[str, float]:
        """Classical predictions scored on the split last read (not the train split), in blocks
        of samples:

        - ``persistence_rel_l2`` (snapshots in time: the last input snapshot held for every output
          one) or ``input_as_output_rel_l2`` (``a`` itself, when it has ``u``'s channels);
        - ``fourier_multiplier_rel_l2`` (periodic data): the best linear translation-invariant
          operator, a matrix per Fourier mode from ``a``'s to ``u``'s channels fitted by least
          squares on these very samples, so an optimistic baseline (exact for linear problems such
          as the heat equation).
        """
        if self._last is None:
            return {}
        a, u = self._last
        out = {}
        block = max(1, BLOCK_BYTES // (8 * u[0].numel()))  # float64 copies of a block, not of the split
        held = (self.step_channels, "persistence_rel_l2") if self.step_channels else \
            (a.shape[1], "input_as_output_rel_l2") if a.shape[1] == u.shape[1] else None
        if held is not None:
            c, name = held
            errors = [relative_l2(a[i:i + block, -c:].repeat(1, u.shape[1] // c, *([1] * self.n_dims)).flatten(1).double(),
                                  u[i:i + block].flatten(1).double()) for i in range(0, len(a), block)]
            out[name] = torch.cat(errors).mean().item()
        if self.periodic and len(a) > a.shape[1]:
            out["fourier_multiplier_rel_l2"] = self._fourier_multiplier(a, u)
        return out

    def _fourier_multiplier(self, a: Tensor, u: Tensor) -> float:
        dims = tuple(range(2, 2 + self.n_dims))
        fa = torch.fft.rfftn(a.double(), dim=dims)  # [N, C_in, *K]
        fu = torch.fft.rfftn(u.double(), dim=dims)
        lhs, rhs = fa.flatten(2).permute(2, 0, 1), fu.flatten(2).permute(2, 0, 1)  # [K, N, C]
        fit = torch.linalg.lstsq(lhs, rhs, driver="gelsd" if lhs.device.type == "cpu" else None).solution
        prediction = torch.fft.irfftn((lhs @ fit).permute(1, 2, 0).reshape(fu.shape), s=u.shape[2:], dim=dims)
        return relative_l2(prediction.flatten(1), u.double().flatten(1)).mean().item()

    def check_solve(self, resolution: int | None = None, n_samples: int = 1) -> None:
        self.solve(resolution, n_samples)  # refuses at once: there is no solver

    def solve(self, resolution: int | None = None, n_samples: int = 1, seed: int = 0) -> Solution:
        raise ValueError(f"problem=dataset has no solver: it reads {self.path.name}; `sciml solve` runs "
                         "the reference solver of a problem that has one (e.g. problem=burgers)")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_open_reader", "_last")}
