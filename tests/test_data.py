"""The dataset layer: the cache (keys, locking across real processes, damaged files) and the
lazy readers of PDEBench HDF5 and FNO ``.mat`` files."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from conftest import write_v73
from omegaconf import OmegaConf

from sciml_cli.data.cache import (
    DatasetWarning,
    cached_solution,
    dataset_key,
    dataset_path,
    file_lock,
    load_dataset,
)
from sciml_cli.data.hdf5 import verify_file, write_solution
from sciml_cli.data.readers import FNOMatDataset, PDEBenchDataset
from sciml_cli.errors import SciMLError
from sciml_cli.problems.base import Solution

CONFIG = {"problem": {"_target_": "x.Y", "kappa": 0.1, "amplitudes": [1.0, 0.5]},
          "resolution": 16, "n_samples": 4, "seed": 0, "dtype": "float64"}


def _make(marker: Path, seed: int = 0, pause: float = 0.0) -> Solution:
    """A small dataset; appends a line to ``marker`` so tests can count generations."""
    with open(marker, "a") as f:
        f.write("generated\n")
    time.sleep(pause)  # keeps a concurrent caller waiting on the lock
    g = torch.Generator().manual_seed(seed)
    return Solution(fields={"u": torch.randn(4, 8, 16, generator=g, dtype=torch.float64)},
                    grid={"t": torch.linspace(0, 1, 8, dtype=torch.float64),
                          "x": torch.linspace(0, 1, 16, dtype=torch.float64)},
                    attrs={"solver": "test"})


def _generations(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


# -- keys ---------------------------------------------------------------------------------------------
def test_key_ignores_order_and_integral_floats_but_not_values():
    reordered = {"seed": 0, "dtype": "float64", "n_samples": 4, "resolution": 16.0,
                 "problem": {"amplitudes": (1, 0.5), "kappa": 0.1, "_target_": "x.Y"}}
    assert dataset_key(reordered) == dataset_key(CONFIG)
    assert dataset_key(OmegaConf.create(CONFIG)) == dataset_key(CONFIG)
    assert dataset_key({**CONFIG, "seed": 1}) != dataset_key(CONFIG)
    assert dataset_key({**CONFIG, "problem": {**CONFIG["problem"], "kappa": 0.1000001}}) != dataset_key(CONFIG)
    path = dataset_path("heat", CONFIG, Path("d"))
    assert path == Path("d") / f"heat-{dataset_key(CONFIG)[:16]}.h5"
    with pytest.raises(ValueError, match="^problem.kappa: "):
        dataset_key({"problem": {"kappa": float("nan")}})
    with pytest.raises(TypeError, match="^problem.f: "):
        dataset_key({"problem": {"f": object()}})
    with pytest.raises(ValueError, match="^name: "):
        dataset_path("../up", CONFIG)


# -- the cache in one process ---------------------------------------------------------------------------
def test_generated_once_then_read_back(tmp_path):
    marker = tmp_path / "marker"
    path = cached_solution("heat", CONFIG, lambda: _make(marker), tmp_path / "data")
    assert _generations(marker) == 1 and path.parent == tmp_path / "data"
    again = load_dataset("heat", CONFIG, lambda: _make(marker), tmp_path / "data")
    assert _generations(marker) == 1
    torch.testing.assert_close(again.fields["u"], _make(tmp_path / "other").fields["u"], rtol=0, atol=0)
    assert list(again.grid) == ["t", "x"]
    attrs = verify_file(path)
    assert attrs["dataset_key"] == dataset_key(CONFIG) and attrs["problem"] == "heat"
    assert json.loads(attrs["generating_config"]) == CONFIG  # the whole config, readable back
    cached_solution("heat", {**CONFIG, "seed": 1}, lambda: _make(marker, seed=1), tmp_path / "data")
    assert _generations(marker) == 2
    assert len(list((tmp_path / "data").glob("*.h5"))) == 2


def test_the_commands_show_a_dataset_warning_as_one_line():
    """In a command, a damaged cache file's warning reads ``sciml: warning: ...`` without
    Python's file and source line; other libraries' warnings keep their form."""
    import subprocess
    import sys

    code = ("import warnings; from sciml_cli.errors import one_line_warnings; "
            "from sciml_cli.data.cache import DatasetWarning; one_line_warnings(); "
            "warnings.warn('a.h5: checksum mismatch; regenerating it', DatasetWarning); "
            "warnings.warn('from elsewhere', UserWarning)")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    lines = err.splitlines()
    assert lines[0] == "sciml: warning: a.h5: checksum mismatch; regenerating it"
    assert "UserWarning: from elsewhere" in lines[1]


def test_truncated_file_is_regenerated_with_a_warning(tmp_path):
    marker = tmp_path / "marker"
    path = cached_solution("heat", CONFIG, lambda: _make(marker), tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(DatasetWarning, match="not a readable sciml dataset.*regenerating"):
        again = cached_solution("heat", CONFIG, lambda: _make(marker), tmp_path)
    assert again == path and _generations(marker) == 2
    verify_file(path)
    assert path.stat().st_size == len(data)


def test_flipped_bits_in_the_data_fail_the_checksum(tmp_path):
    """A silent corruption that HDF5 itself cannot see is caught by the SHA-256."""
    marker = tmp_path / "marker"
    path = cached_solution("heat", CONFIG, lambda: _make(marker), tmp_path)
    with h5py.File(path, "r") as f:
        offset = f["fields/u"].id.get_offset()  # contiguous storage: raw bytes at this offset
    raw = bytearray(path.read_bytes())
    raw[offset + 100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(SciMLError, match="checksum mismatch"):
        verify_file(path)
    with pytest.warns(DatasetWarning, match="checksum mismatch"):
        fixed = load_dataset("heat", CONFIG, lambda: _make(marker), tmp_path)
    assert _generations(marker) == 2
    torch.testing.assert_close(fixed.fields["u"], _make(tmp_path / "other").fields["u"], rtol=0, atol=0)


def test_a_file_from_another_config_is_not_trusted(tmp_path):
    marker = tmp_path / "marker"
    path = dataset_path("heat", CONFIG, tmp_path)
    write_solution(path, _make(marker, seed=9), {"dataset_key": "0" * 64})  # intact, but foreign
    with pytest.warns(DatasetWarning, match="not generated from this config"):
        cached_solution("heat", CONFIG, lambda: _make(marker), tmp_path)
    assert _generations(marker) == 2
    assert verify_file(path)["dataset_key"] == dataset_key(CONFIG)


def test_streaming_verify_agrees_with_the_writer_for_any_block_size(tmp_path):
    sol = _make(tmp_path / "m")
    sol.fields["scalar_per_sample"] = torch.arange(4, dtype=torch.int64)
    path = write_solution(tmp_path / "s.h5", sol, {"note": "kept"})
    for block in (1, 100, 1000, 2**30):  # one row per block ... everything in one
        assert verify_file(path, block_bytes=block)["note"] == "kept"
    # and each block size sees one flipped byte in the last array: the check is not vacuous
    with h5py.File(path, "r") as f:
        offset = f["fields/scalar_per_sample"].id.get_offset()
    raw = bytearray(path.read_bytes())
    raw[offset + 3] ^= 0x01
    path.write_bytes(bytes(raw))
    for block in (1, 100, 1000, 2**30):
        with pytest.raises(SciMLError, match="checksum mismatch"):
            verify_file(path, block_bytes=block)


# -- the cache across real processes ----------------------------------------------------------------------
def _request(data_dir: str, marker: str, barrier, results) -> None:
    barrier.wait()  # both processes ask at the same moment
    path = cached_solution("heat", CONFIG, lambda: _make(Path(marker), pause=0.5), Path(data_dir))
    results.put((str(path), hashlib.sha256(path.read_bytes()).hexdigest()))


def test_two_processes_asking_at_once_generate_one_file(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    marker, data_dir = tmp_path / "marker", tmp_path / "data"
    procs = [ctx.Process(target=_request, args=(str(data_dir), str(marker), barrier, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert _generations(marker) == 1
    assert got[0] == got[1]  # same path, same bytes
    files = sorted(p.name for p in data_dir.iterdir())
    assert files == [Path(got[0][0]).name, Path(got[0][0]).name + ".lock"]
    verify_file(Path(got[0][0]))


# -- PDEBench reader ---------------------------------------------------------------------------------------
class CountingFile(io.FileIO):
    """A real file that counts the bytes h5py reads through it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "rb")
        self.nbytes = 0

    def readinto(self, buffer) -> int:
        n = super().readinto(buffer) or 0
        self.nbytes += n
        return n


N, T, X = 256, 16, 256


def _pdebench(path: Path, chunks=None) -> np.ndarray:
    u = np.random.default_rng(0).standard_normal((N, T, X)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("tensor", data=u, chunks=chunks)
        f["x-coordinate"] = np.linspace(0, 1, X, endpoint=False, dtype=np.float32)
        f["t-coordinate"] = np.linspace(0, 2 * T / (T - 1), T + 1, dtype=np.float32)  # T + 1, as PDEBench
    return u


def test_pdebench_values_grid_and_slices(tmp_path):
    u = _pdebench(tmp_path / "adv.hdf5")
    with PDEBenchDataset(tmp_path / "adv.hdf5") as ds:
        assert len(ds) == N and ds.shape("u") == (N, T, X)
        assert ds.grid["t"].shape == (T,) and ds.grid["x"].shape == (X,)
        assert list(ds.grid) == ["t", "x"]
        np.testing.assert_array_equal(ds[5]["u"].numpy(), u[5])
        np.testing.assert_array_equal(ds[-1]["u"].numpy(), u[-1])
        np.testing.assert_array_equal(ds[3:11:2]["u"].numpy(), u[3:11:2])
        np.testing.assert_array_equal(ds[9:2:-3]["u"].numpy(), u[9:2:-3])
        np.testing.assert_array_equal(ds[[7, 2, 7]]["u"].numpy(), u[[7, 2, 7]])
        np.testing.assert_array_equal(ds[torch.tensor([4, 1])]["u"].numpy(), u[[4, 1]])
        np.testing.assert_array_equal(ds[5, ::2, 10:20]["u"].numpy(), u[5, ::2, 10:20])
        np.testing.assert_array_equal(ds[[0, 3], -1]["u"].numpy(), u[[0, 3], -1])
        assert ds[[]]["u"].shape == (0, T, X)
        assert ds[0]["u"].dtype == torch.float32
        with pytest.raises(IndexError, match=f"sample {N} out of range for {N} samples"):
            ds[N]
    assert PDEBenchDataset(tmp_path / "adv.hdf5", dtype=torch.float64)[0]["u"].dtype == torch.float64


@pytest.mark.parametrize("chunks", [None, (1, T, X), (4, T, X // 2)], ids=["contiguous", "per-sample", "blocks"])
def test_pdebench_reads_only_the_requested_samples(tmp_path, chunks):
    """Bytes read from disk for one sample: its own (or its chunks'), plus < 8 KB of metadata."""
    _pdebench(tmp_path / "adv.hdf5", chunks)
    f = CountingFile(tmp_path / "adv.hdf5")
    ds = PDEBenchDataset(f)
    sample = T * X * 4
    needed = {None: sample, (1, T, X): sample, (4, T, X // 2): 4 * sample}[chunks]
    before = f.nbytes
    ds[100]
    read = f.nbytes - before
    assert needed <= read < needed + 8192
    assert read < 0.02 * (tmp_path / "adv.hdf5").stat().st_size
    ds.close()
    f.close()


def test_pdebench_in_dataloader_workers(tmp_path):
    """Forked workers open their own handle (an inherited h5py handle is unsafe)."""
    u = _pdebench(tmp_path / "adv.hdf5")
    ds = PDEBenchDataset(tmp_path / "adv.hdf5")
    ds[0]  # the parent has a handle open before forking
    loader = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=2, multiprocessing_context="fork")
    np.testing.assert_array_equal(torch.cat([b["u"] for b in loader]).numpy(), u)


def test_pdebench_errors_name_the_problem(tmp_path):
    _pdebench(tmp_path / "adv.hdf5")
    with pytest.raises(SciMLError, match="no array 'density'.*tensor"):
        PDEBenchDataset(tmp_path / "adv.hdf5", variables="density")
    with pytest.raises(SciMLError, match="no such file"):
        PDEBenchDataset(tmp_path / "missing.hdf5")


# -- FNO .mat reader -------------------------------------------------------------------------------------
def _fno_arrays(n=24, x=32, y=8):
    rng = np.random.default_rng(1)
    return rng.standard_normal((n, x)), rng.standard_normal((n, x, y))


def test_fno_v73_is_lazy_and_in_matlab_axis_order(tmp_path):
    a, u = _fno_arrays()
    write_v73(tmp_path / "burgers.mat", {"coeff": a, "sol": u})
    assert scipy.io.matlab.matfile_version(tmp_path / "burgers.mat") == (2, 0)  # scipy agrees: v7.3
    with FNOMatDataset(tmp_path / "burgers.mat", variables={"a": "coeff", "u": "sol"}) as ds:
        assert ds.lazy and len(ds) == 24
        assert ds.shape("a") == (24, 32) and ds.shape("u") == (24, 32, 8)
        item = ds[3]
        np.testing.assert_array_equal(item["a"].numpy(), a[3])
        np.testing.assert_array_equal(item["u"].numpy(), u[3])
        np.testing.assert_array_equal(ds[2:7]["u"].numpy(), u[2:7])
        np.testing.assert_array_equal(ds[[5, 1, 5]]["a"].numpy(), a[[5, 1, 5]])
        np.testing.assert_array_equal(ds[1, 2:5]["u"].numpy(), u[1, 2:5])
        both = ds[[4, 0], 3]  # the index after the samples applies to every array
        np.testing.assert_array_equal(both["a"].numpy(), a[[4, 0], 3])
        np.testing.assert_array_equal(both["u"].numpy(), u[[4, 0], 3])
        assert item["u"].dtype == torch.float64 and item["u"].is_contiguous()


def test_fno_v73_reads_only_the_chunks_of_the_requested_samples(tmp_path):
    a, u = _fno_arrays(n=64, x=64, y=16)
    write_v73(tmp_path / "ns.mat", {"a": a, "u": u}, chunk_samples=8)
    f = CountingFile(tmp_path / "ns.mat")
    ds = FNOMatDataset(f)
    before = f.nbytes
    batch = ds[16:24]  # exactly one chunk of each array
    read = f.nbytes - before
    needed = batch["a"].numel() * 8 + batch["u"].numel() * 8
    assert needed <= read < needed + 8192
    np.testing.assert_array_equal(batch["u"].numpy(), u[16:24])
    ds.close()
    f.close()


def test_fno_v5_is_read_whole_with_the_same_interface(tmp_path):
    a, u = _fno_arrays()
    scipy.io.savemat(tmp_path / "burgers_v5.mat", {"a": a, "u": u, "unused": np.zeros(3)})
    ds = FNOMatDataset(tmp_path / "burgers_v5.mat", dtype=torch.float32)
    assert not ds.lazy and len(ds) == 24 and ds.shape("u") == (24, 32, 8)
    np.testing.assert_allclose(ds[3]["u"].numpy(), u[3].astype(np.float32))
    np.testing.assert_allclose(ds[[5, 1]]["a"].numpy(), a[[5, 1]].astype(np.float32))
    assert ds[0]["a"].dtype == torch.float32
    with pytest.raises(SciMLError, match="no array 'sol'.*unused"):
        FNOMatDataset(tmp_path / "burgers_v5.mat", variables=("a", "sol"))


def test_fno_arrays_must_agree_on_samples(tmp_path):
    a, u = _fno_arrays()
    write_v73(tmp_path / "bad.mat", {"a": a, "u": u[:10]})
    with warnings.catch_warnings(), pytest.raises(SciMLError, match="disagree"):
        FNOMatDataset(tmp_path / "bad.mat")


def test_a_data_directory_lock_file_takes_the_umask_like_the_data(tmp_path):
    """A group-shared data directory (umask 002) stays usable by the group: the lock file is
    group-writable, as the datasets are."""
    old = os.umask(0o002)
    try:
        with file_lock(tmp_path / "data" / ".lock"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "data" / ".lock").stat().st_mode & 0o777 == 0o664

