"""``problem=dataset``: operator pairs from files in every layout users bring, the export of
``sciml solve`` in those layouts, and each bad input as one line."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from conftest import only_run_dir, write_v73

from sciml_cli.data import export as exporting
from sciml_cli.data.hdf5 import write_solution
from sciml_cli.errors import ConfigError, SciMLError
from sciml_cli.models.fno import FNO, NONPERIODIC_PADDING
from sciml_cli.problems import dataset as dataset_module
from sciml_cli.problems.base import Solution
from sciml_cli.problems.dataset import Dataset

N, T, X = 40, 6, 32
rng = np.random.default_rng(0)
A = rng.standard_normal((N, X))
U = 0.5 * np.roll(A, 3, axis=1)
TENSOR = rng.standard_normal((N, T, X)).astype(np.float32)
GRID = np.arange(X) / X


def _pdebench(path, tensor=TENSOR, **extra):
    with h5py.File(path, "w") as f:
        f["tensor"] = tensor
        f["x-coordinate"] = np.linspace(0, 2, tensor.shape[-1], endpoint=False)
        f["t-coordinate"] = np.arange(tensor.shape[1] + 1) * 0.1  # one more than snapshots, as PDEBench
        for k, v in extra.items():
            f[k] = v
    return path


def _write(tmp_path, layout: str):
    """A file of each layout holding :data:`A` -> :data:`U` (or :data:`TENSOR` for PDEBench)."""
    path = tmp_path / {"mat5": "b.mat", "mat73": "b73.mat", "npz": "b.npz", "pdebench": "p.hdf5",
                       "pdebench_groups": "g.h5", "sciml": "s.h5"}[layout]
    if layout == "mat5":
        scipy.io.savemat(path, {"a": A, "u": U})
    elif layout == "mat73":
        write_v73(path, {"a": A, "u": U})
    elif layout == "npz":
        np.savez(path, a=A, u=U, x=GRID)
    elif layout == "pdebench":
        _pdebench(path)
    elif layout == "sciml":
        write_solution(path, Solution({"a": torch.from_numpy(A), "u": torch.from_numpy(U)},
                                      {"x": torch.from_numpy(GRID)}), {})
    return path


@pytest.mark.parametrize("layout, format", [("mat5", "mat"), ("mat73", "mat"), ("npz", "npz"),
                                            ("pdebench", "pdebench"), ("sciml", "sciml")])
def test_each_layout_is_told_from_its_content_and_read_in_file_order(tmp_path, layout, format):
    problem = Dataset(path=str(_write(tmp_path, layout)))
    assert problem.format == format and problem.n_dims == 1 and problem.n_samples == N
    a, u, grid = problem.operator_pairs("train", 20)
    first, last = (TENSOR[:, 0], TENSOR[:, -1]) if layout == "pdebench" else (A, U)
    # the default splits: the first 80 % train, in file order
    np.testing.assert_allclose(a[:, 0].numpy(), first[:20], rtol=1e-6)
    np.testing.assert_allclose(u[:, 0].numpy(), last[:20], rtol=1e-6)
    a, u, _ = problem.operator_pairs("test", 4)
    np.testing.assert_allclose(u[:, 0].numpy(), last[36:40], rtol=1e-6)
    expected_x = np.linspace(0, 2, X, endpoint=False) if layout == "pdebench" else GRID
    np.testing.assert_allclose(grid["x"].numpy(), expected_x, rtol=1e-6)
    assert a.dtype == torch.get_default_dtype()


def test_snapshots_subsampling_and_resolution_of_a_pdebench_file(tmp_path):
    path = str(_pdebench(tmp_path / "adv.hdf5"))
    p = Dataset(path=path, input_steps=[2, 0], output_steps=[-1], subsample=2)
    a, u, grid = p.operator_pairs("train", 8)
    np.testing.assert_allclose(a.numpy(), TENSOR[:8][:, [2, 0], ::2], rtol=1e-6)
    np.testing.assert_allclose(u.numpy(), TENSOR[:8][:, [-1], ::2], rtol=1e-6)
    assert grid["x"].shape == (X // 2,) and p.resolution == X // 2 and p.step_channels is None
    a, _, _ = p.operator_pairs("train", 8, resolution=8)  # eval's resolution sweep: any divisor
    np.testing.assert_allclose(a.numpy(), TENSOR[:8][:, [2, 0], ::4], rtol=1e-6)
    # the first t_in snapshots in, the next t_out out: consecutive, so a model may roll out
    p = Dataset(path=path, t_in=2, t_out=3)
    a, u, _ = p.operator_pairs("train", 8)
    np.testing.assert_allclose(a.numpy(), TENSOR[:8, 0:2], rtol=1e-6)
    np.testing.assert_allclose(u.numpy(), TENSOR[:8, 2:5], rtol=1e-6)
    assert p.step_channels == 1 and (p.in_channels, p.out_channels) == (2, 3)
    # persistence, the stored baseline: the last input snapshot held
    held = np.repeat(TENSOR[36:40, 1:2], 3, axis=1)
    error = np.linalg.norm((held - TENSOR[36:40, 2:5]).reshape(4, -1), axis=1) / np.linalg.norm(
        TENSOR[36:40, 2:5].reshape(4, -1), axis=1)
    p.operator_pairs("test", 4)
    assert p.baselines()["persistence_rel_l2"] == pytest.approx(error.mean(), rel=1e-5)


def test_navier_stokes_mat_has_time_last_and_groups_interleave_channels_per_snapshot(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_module, "BLOCK_BYTES", 1)  # the smallest blocks: they assemble alike
    w = rng.standard_normal((6, 8, 8, 5))  # Li et al.'s ns_*.mat: u [N, X, Y, T]
    write_v73(tmp_path / "ns.mat", {"a": w[..., 0], "u": w})
    p = Dataset(path=str(tmp_path / "ns.mat"), input="u", output="u", t_in=3,
                splits={"train": [0, 4], "val": [4, 5], "test": [5, None]})
    assert p.n_dims == 2 and p.step_channels == 1
    a, u, grid = p.operator_pairs("train", 4)
    np.testing.assert_allclose(a.numpy(), np.moveaxis(w[:4, ..., :3], -1, 1), rtol=1e-6)
    np.testing.assert_allclose(u.numpy(), np.moveaxis(w[:4, ..., 3:], -1, 1), rtol=1e-6)
    assert list(grid) == ["x", "y"]

    data = rng.standard_normal((3, 4, 8, 8, 2))  # PDEBench groups: [T, X, Y, C] per sample
    with h5py.File(tmp_path / "g.h5", "w") as f:
        for i in range(3):
            f[f"{i:04d}/data"] = data[i]
            f[f"{i:04d}/grid/x"] = f[f"{i:04d}/grid/y"] = np.arange(8) / 8
            f[f"{i:04d}/grid/t"] = np.arange(4) * 0.5
    p = Dataset(path=str(tmp_path / "g.h5"), t_in=2, splits={"train": [0, 3], "val": [3, 3], "test": [3, 3]})
    assert p.format == "pdebench_groups" and p.step_channels == 2 and p.in_channels == 4
    a, u, _ = p.operator_pairs("train", 3)
    expected = np.moveaxis(data[:, :2], -1, 2).reshape(3, 4, 8, 8)  # [t0 c0, t0 c1, t1 c0, t1 c1]
    np.testing.assert_allclose(a.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(u.numpy(), np.moveaxis(data[:, 2:], -1, 2).reshape(3, 4, 8, 8), rtol=1e-6)


def test_splits_by_index_or_fraction_never_overlap(tmp_path, monkeypatch):
    path = str(_write(tmp_path, "mat73"))
    monkeypatch.setattr(dataset_module, "BLOCK_BYTES", 1)
    # v7.3 stores samples fastest: read in blocks of grid points, here one at a time
    np.testing.assert_allclose(Dataset(path=path, subsample=4).operator_pairs("val", 4)[0][:, 0].numpy(),
                               A[32:36, ::4], rtol=1e-6)
    p = Dataset(path=path, splits={"train": [0, 30], "val": [0.75, 0.9], "test": [-4, None]})
    assert p.splits == {"train": (0, 30), "val": (30, 36), "test": (36, 40)}
    np.testing.assert_allclose(p.operator_pairs("test", 4)[1][:, 0].numpy(), U[-4:], rtol=1e-6)
    # U is a shift and a scaling of A, a Fourier multiplier: that baseline is exact
    assert p.baselines()["fourier_multiplier_rel_l2"] < 1e-6
    with pytest.raises(ConfigError, match=r"problem.splits.test: samples \[20, 40\) overlap train's \[0, 30\)"):
        Dataset(path=path, splits={"train": [0, 30], "val": [30, 30], "test": [20, None]})
    with pytest.raises(ConfigError, match="model.n_train: asks for 40 train samples; problem.splits.train holds 32"):
        Dataset(path=path).operator_pairs("train", 40)


def _bad(tmp_path, case):
    mat = str(_write(tmp_path, "mat73"))
    pde = str(_pdebench(tmp_path / "p.hdf5"))
    (tmp_path / "data.csv").write_text("a,u\n1,2\n")
    np.savez(tmp_path / "cut.npz", a=A, u=U)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "cut.npz").read_bytes()[:2000])
    truncated = tmp_path / "cut.mat"
    truncated.write_bytes((tmp_path / "b73.mat").read_bytes()[:3000])
    write_v73(tmp_path / "short.mat", {"a": A, "u": U[:10]})
    return {
        "unset": {},
        "missing": {"path": str(tmp_path / "nope.mat")},
        "undetectable": {"path": str(tmp_path / "data.csv")},
        "truncated npz": {"path": str(tmp_path / "cut.npz")},
        "unknown array": {"path": mat, "output": "sol"},
        "sample counts": {"path": str(tmp_path / "short.mat")},
        "time index": {"path": pde, "output_steps": [T]},
        "t_in too long": {"path": pde, "t_in": T},
        "no time axis": {"path": mat, "input_steps": [0]},
        "both": {"path": pde, "t_in": 2, "input_steps": [0]},
        "subsample": {"path": mat, "subsample": 5},
        "split": {"path": mat, "splits": {"train": [0, 1.5]}},
        "truncated": {"path": str(truncated)},
    }[case]


@pytest.mark.parametrize("case, code, message", [
    ("unset", 2, "problem.path: the data file is not set"),
    ("missing", 2, "problem.path: .*nope.mat: no such file"),
    ("undetectable", 2, r"problem.format: cannot tell the layout of .*data.csv; name it \(valid: pdebench, "),
    ("truncated npz", 1, r"cut.npz: not a readable NumPy .npz file \(truncated or corrupt\?\)"),
    ("unknown array", 2, r"problem.output: no array 'sol' in b73.mat \(valid: a, u\)"),
    ("sample counts", 2, "problem.output: u has 10 samples, a has 40: they are not pairs"),
    ("time index", 2, "problem.output_steps: snapshot 6 out of range: tensor has 6"),
    ("t_in too long", 2, "problem.t_out: t_in=6 needs 7 snapshots; tensor has 6"),
    ("no time axis", 2, r"problem.input_steps: a \(40, 32\) has no time axis"),
    ("both", 2, "problem.t_in: give either t_in"),
    ("subsample", 2, "problem.subsample: must divide the resolution 32 of b73.mat, got 5"),
    ("split", 2, r"problem.splits.train: 1.5 is neither a sample index nor a fraction"),
    ("truncated", 1, "cut.mat: not a readable HDF5 file"),
])
def test_bad_input_is_one_line_naming_the_key(tmp_path, case, code, message):
    with pytest.raises(SciMLError, match=message) as info:
        Dataset(**_bad(tmp_path, case))
    assert info.value.exit_code == code and "\n" not in str(info.value)


def test_the_fno_pads_a_non_periodic_file_and_not_a_periodic_one(tmp_path):
    path = str(_write(tmp_path, "npz"))
    assert FNO(Dataset(path=path), width=4, modes=2, n_train=8, batch_size=4).padding == 0
    assert FNO(Dataset(path=path, periodic=False), width=4, modes=2, n_train=8, batch_size=4).padding == NONPERIODIC_PADDING


# -- export -------------------------------------------------------------------------------------------
def test_export_layouts_read_back_by_their_own_tools_and_by_the_dataset_problem(tmp_path, monkeypatch):
    w = torch.from_numpy(rng.standard_normal((3, 5, 8, 8)))  # a field in time, [N, T, X, Y]
    t, x = torch.arange(5) * 0.5, torch.arange(8) / 8
    timed = Solution({"w": w}, {"t": t, "x": x, "y": x})
    m = scipy.io.loadmat(exporting.export(tmp_path / "ns", timed, "mat", {}))
    assert set(k for k in m if not k.startswith("__")) == {"a", "u", "t"}
    np.testing.assert_array_equal(m["a"], w[:, 0].numpy())
    np.testing.assert_array_equal(m["u"], np.moveaxis(w[:, 1:].numpy(), 1, -1))  # Li et al.: time last
    np.testing.assert_array_equal(m["t"], t[None, 1:].numpy())
    with h5py.File(exporting.export(tmp_path / "ns", timed, "pdebench", {"problem": "ns"}), "r") as f:
        np.testing.assert_array_equal(f["tensor"][()], w.numpy())
        np.testing.assert_array_equal(f["t-coordinate"][()], [0, 0.5, 1, 1.5, 2, 2.5])
        assert f.attrs["problem"] == "ns" and "y-coordinate" in f
    # above v5's 2 GiB per array: v7.3, which MATLAB, h5py and problem=dataset read
    monkeypatch.setattr(exporting, "V5_LIMIT_BYTES", 0)
    path = exporting.export(tmp_path / "big", timed, "mat", {})
    assert scipy.io.matlab.matfile_version(path) == (2, 0)
    p = Dataset(path=str(path), input="u", output="u", t_in=2, splits={"train": [0, 2], "val": [2, 3], "test": [3, 3]})
    a, u, _ = p.operator_pairs("train", 2)
    np.testing.assert_allclose(a.numpy(), w[:2, 1:3].numpy(), rtol=1e-6)
    np.testing.assert_allclose(u.numpy(), w[:2, 3:].numpy(), rtol=1e-6)
    with pytest.raises(ConfigError, match="pdebench: the solution .image. holds neither"):
        exporting.export(tmp_path / "ct", Solution({"image": w[:, 0]}, {"x": x, "y": x}), "pdebench", {})


def test_solve_writes_burgers_in_the_fno_and_pdebench_layouts(sciml):
    args = ["solve", "problem=burgers", "n_samples=6", "problem.fine_resolution=128", "seed=3", "progress=null"]
    for fmt in ("sciml", "mat", "pdebench"):
        proc = sciml(*args, f"format={fmt}", f"paths.outputs=out_{fmt}")
        assert proc.returncode == 0, proc.stderr
    sol = only_run_dir(sciml.cwd / "out_sciml" / "solve" / "burgers") / "burgers.h5"
    with h5py.File(sol, "r") as f:
        a, u = f["fields/a"][()], f["fields/u"][()]
    m = scipy.io.loadmat(only_run_dir(sciml.cwd / "out_mat" / "solve" / "burgers") / "burgers.mat")
    np.testing.assert_array_equal(m["a"], a)
    np.testing.assert_array_equal(m["u"], u)
    with h5py.File(only_run_dir(sciml.cwd / "out_pdebench" / "solve" / "burgers") / "burgers.hdf5", "r") as f:
        np.testing.assert_array_equal(f["tensor"][()], np.stack([a, u], axis=1))
        np.testing.assert_array_equal(f["t-coordinate"][:2], [0.0, 1.0])  # a = u(0), u = u(t_end)
    proc = sciml(*args, "format=netcdf")
    assert proc.returncode == 2 and "format: 'netcdf' is not a layout sciml writes (valid: sciml, pdebench, mat)" in proc.stderr


# -- through the command line -------------------------------------------------------------------------
def test_train_eval_and_resume_on_a_file_record_and_check_its_bytes(sciml):
    from sciml_cli.problems.burgers import Burgers

    solution = Burgers(fine_resolution=256, resolution=64).to("cpu", torch.float64).solve(64, 60, seed=5)
    write_v73(sciml.cwd / "burgers.mat", {k: v.numpy() for k, v in solution.fields.items()})
    # the preset for the FNO layout, shrunk: s = 64, 40 pairs, 150 steps
    args = ["experiment=fno_burgers_file_quick", "problem.path=burgers.mat", "problem.resolution=64",
            "problem.splits.train=[0,40]", "problem.splits.val=[40,50]", "problem.splits.test=[50,null]",
            "model.width=16", "model.modes=8", "model.n_train=40", "model.n_test=10", "model.batch_size=10",
            "optim.steps=150", "optim.lr=5e-3", "trainer.val_every=75", "trainer.device=cpu",
            "trainer.callbacks.progress=null"]
    proc = sciml("train", *args)
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "dataset-fno")
    data = json.loads((run / "run.json").read_text())["data"]
    assert data["path"] == str(sciml.cwd / "burgers.mat") and data["format"] == "mat" and len(data["sha256"]) == 64

    proc = sciml("eval", f"run={run}", "resolutions=[16,32,64]")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "eval.json").read_text())
    assert set(result["resolution_sweep"]) == {"16", "32", "64"}
    # beats the stored classical baseline: the best linear Fourier multiplier, fitted on the test samples
    assert result["metrics"]["rel_l2"] < 0.5 * result["baselines"]["fourier_multiplier_rel_l2"], result

    with h5py.File(sciml.cwd / "burgers.mat", "r+") as f:  # one value changes, size and name stay
        f["u"][0, 0] += 1.0
    written = (run / "eval.json").stat().st_mtime_ns
    for command in (["eval", f"run={run}"], ["train", f"resume={run}", "model=fno", "problem=dataset"]):
        proc = sciml(*command)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert "burgers.mat changed since the run was made" in proc.stderr
    assert (run / "eval.json").stat().st_mtime_ns == written


def test_a_bad_dataset_config_writes_nothing(sciml):
    proc = sciml("train", "model=fno", "problem=dataset", "problem.path=missing.mat")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "problem.path: missing.mat: no such file" in proc.stderr
    assert not (sciml.cwd / "outputs").exists()
