"""Bad input to ``sciml solve`` and ``sciml eval``: one line on stderr naming the key, exit code 2,
no traceback, and nothing written (no run directory, no data file), as real subprocesses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_sciml

#: a Burgers FNO of a second or two on a CPU core, on a 256-point solver grid
TINY_BURGERS_FNO = [
    "model=fno", "problem=burgers", "problem.fine_resolution=256", "problem.resolution=64",
    "model.n_train=8", "model.n_test=4", "model.batch_size=4", "model.width=8", "model.modes=4",
    "optim.steps=2", "trainer.device=cpu", "trainer.callbacks.progress=null",
]


@pytest.fixture(scope="module")
def _fno_outputs(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("fno")
    run_sciml("train", *TINY_BURGERS_FNO, cwd=cwd, check=True)
    return cwd / "outputs"


@pytest.fixture
def fno_run(sciml, _fno_outputs) -> Path:
    """A finished Burgers FNO run (its data included), copied into this test's directory."""
    shutil.copytree(_fno_outputs, sciml.cwd / "outputs", dirs_exist_ok=True)
    (run,) = (sciml.cwd / "outputs" / "train" / "burgers-fno").iterdir()
    return run


def _listing(root: Path) -> dict[str, int]:
    """Every file and directory under ``root`` with its size (directories 0)."""
    return {str(p.relative_to(root)): 0 if p.is_dir() else p.stat().st_size for p in sorted(root.rglob("*"))}


def _refused(sciml, *args: str) -> str:
    """Run ``sciml *args``, assert it is refused as a config error that writes nothing, and
    return its one line on stderr."""
    before = _listing(sciml.cwd)
    proc = sciml(*args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("sciml: config error: "), proc.stderr
    assert proc.stdout == "", proc.stdout  # no "invalid (exit 2) ..., run <dir>" line: no run
    assert _listing(sciml.cwd) == before
    return proc.stderr.strip()


def test_solve_ckpt_of_another_problem_is_refused(sciml, tiny_run, fno_run):
    line = _refused(sciml, "solve", "problem=burgers", f"ckpt={tiny_run}")
    assert line == ("sciml: config error: ckpt: the run was trained on heat (sciml_cli.problems.heat.Heat), "
                    "not burgers; drop problem= or give problem=heat")
    line = _refused(sciml, "solve", "problem=heat", f"ckpt={fno_run}", "n_samples=2")
    assert line.startswith("sciml: config error: ckpt: the run was trained on burgers "
                           "(sciml_cli.problems.burgers.Burgers), not heat")


def test_solve_ckpt_without_problem_is_filed_under_the_runs_problem(sciml, fno_run):
    proc = sciml("solve", f"ckpt={fno_run}", "n_samples=2", "repeats=1")
    assert proc.returncode == 0, proc.stderr
    assert " vs the burgers solver" in proc.stdout
    (out,) = (sciml.cwd / "outputs" / "solve").iterdir()
    assert out.name == "burgers" and len(list(out.glob("*/surrogate.json"))) == 1


@pytest.mark.parametrize("args, message", [
    (["problem=heat", "resolution=1"], "resolution: "),
    (["problem=heat", "n_samples=2"], "n_samples: the 1D heat problem has one initial condition, use 1"),
    (["problem=poisson", "problem.dim=10"], "problem.dim: the finite-difference reference solver is two-dimensional"),
    (["problem=poisson", "resolution=64"], "resolution: an odd number of points >= 3"),
    (["problem=burgers", "problem.fine_resolution=256", "resolution=100"], "resolution: must divide"),
])
def test_solve_grid_its_solver_refuses_writes_nothing(sciml, args, message):
    line = _refused(sciml, "solve", *args)
    assert line.startswith(f"sciml: config error: {message}"), line
    assert not (sciml.cwd / "outputs").exists()


def test_solve_error_found_while_solving_leaves_no_run_directory(sciml):
    """A solver that diverges is found only by solving: the error names the problem's key, the
    run directory Hydra made (its config and log, nothing else) goes, and no run is named."""
    line = _refused(sciml, "solve", "problem=navier_stokes", "problem.dt=0.5", "problem.fine_resolution=32",
                    "problem.resolution=16", "problem.t_end=20", "progress=null")
    assert line.startswith("sciml: config error: problem.dt: the solution became non-finite"), line
    assert not (sciml.cwd / "outputs" / "solve").exists()


def _damage(run: Path, how: str) -> None:
    best = run / "checkpoints" / "best.pt"
    if how == "truncated":
        best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    else:  # a pickle that weights_only=True refuses
        torch.save({"format": object()}, best)


@pytest.mark.parametrize("how, detail", [
    ("truncated", "is not a readable checkpoint (truncated or foreign file): "),
    ("foreign", "is not a readable checkpoint (truncated or foreign file): Weights only load failed."),
])
def test_a_damaged_checkpoint_is_a_config_error_on_the_key_naming_it(sciml, tiny_run, how, detail):
    _damage(tiny_run, how)
    best = tiny_run / "checkpoints" / "best.pt"
    for command, key in (("eval", "run"), ("solve", "ckpt")):
        line = _refused(sciml, command, f"{key}={tiny_run}")
        assert line.startswith(f"sciml: config error: {key}: {best} {detail}"), line
        if how == "foreign":  # the first sentence of torch's explanation, not its cut-off rest
            assert line.endswith(detail), line
    assert not (sciml.cwd / "outputs" / "solve").exists() and not (tiny_run / "eval.json").exists()


@pytest.mark.parametrize("args, key", [(["resolution=100"], "resolution"),
                                       (["resolutions=[64,100]"], "resolutions.1")])
def test_eval_grid_the_data_cannot_be_made_at_generates_no_data(sciml, fno_run, args, key):
    line = _refused(sciml, "eval", f"run={fno_run}", *args)
    assert line == f"sciml: config error: {key}: must divide fine_resolution=256, got 100"
    assert not list((sciml.cwd / "outputs" / "data").glob("burgers-test-*"))
