"""Data-parallel training on 2 gloo processes (CPU): the same numbers as one process on the
same global batch, one run directory written by rank 0 only, and checkpoints that resume on
any number of processes."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY, TINY_FNO, only_run_dir

from sciml_cli.training import checkpoint

PINN = [*TINY, "trainer.dtype=float64"]


def _final(run):
    metrics = json.loads((run / "metrics.json").read_text())
    return metrics, checkpoint.load(run / "checkpoints" / "last.pt")


def test_two_gloo_processes_give_the_one_process_numbers_and_one_run_directory(sciml):
    assert sciml("train", *PINN, "trainer.devices=2", check=True).stdout.startswith("sciml train: finished heat-pinn")
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "heat-pinn")
    sciml("train", *PINN, "paths.outputs=one", check=True)
    one = only_run_dir(sciml.cwd / "one" / "train" / "heat-pinn")
    (m2, s2), (m1, s1) = _final(run), _final(one)
    assert m2["step"] == m1["step"] == 40
    # disjoint halves of the points per rank, gradients averaged: the whole batch's gradient
    for key in ("loss/total", "loss/residual", "loss/initial", "loss/boundary", "val/rel_l2"):
        assert m2[key] == pytest.approx(m1[key], rel=1e-10), key
    for name, w in s1["model"].items():
        torch.testing.assert_close(s2["model"][name], w, rtol=1e-10, atol=1e-12)
    # rank 0 wrote the run; rank 1 nothing (one event writer, one config, run.json says 2)
    assert json.loads((run / "run.json").read_text())["devices"] == 2
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in one.iterdir())
    assert len(list((run / "tb").iterdir())) == len(list((one / "tb").iterdir()))
    # a checkpoint of 2 processes resumes on 1 and ends where both did
    sciml("train", *PINN, "optim.steps=20", "trainer.devices=2", "paths.outputs=half", check=True)
    half = only_run_dir(sciml.cwd / "half" / "train" / "heat-pinn")
    sciml("train", *PINN, f"resume={half}", check=True)
    mh, sh = _final(half)
    assert mh["step"] == 40 and mh["loss/total"] == pytest.approx(m1["loss/total"], rel=1e-10)
    for name, w in s1["model"].items():
        torch.testing.assert_close(sh["model"][name], w, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_operator_data_split_over_two_processes_resumes_on_one(sciml):
    """The FNO's batch is split by sample (a distributed sampler); a checkpoint of the
    2-process run resumes on 1 process and ends where a 1-process run does."""
    # a constant learning rate: a run stopped at step 20 and one that goes on are the same run
    fno = [*TINY_FNO, "optim.phases.0.scheduler=null", "trainer.dtype=float64", "trainer.callbacks.progress=null"]
    sciml("train", *fno, "optim.steps=20", "trainer.devices=2", check=True)
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "burgers-fno")
    sciml("train", *fno, f"resume={run}", check=True)  # optim.steps=40 from TINY_FNO, on 1 process
    sciml("train", *fno, "paths.outputs=one", "paths.data=outputs/data", check=True)
    one = only_run_dir(sciml.cwd / "one" / "train" / "burgers-fno")
    (m2, s2), (m1, s1) = _final(run), _final(one)
    assert m2["step"] == m1["step"] == 40
    assert m2["loss/total"] == pytest.approx(m1["loss/total"], rel=1e-9)
    assert m2["val/rel_l2"] == pytest.approx(m1["val/rel_l2"], rel=1e-9)
    for name, w in s1["model"].items():
        torch.testing.assert_close(s2["model"][name], w, rtol=1e-9, atol=1e-12)


def test_more_devices_than_the_machine_has_is_a_config_error(sciml):
    proc = sciml("train", *TINY, "trainer.devices=4096")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("sciml: config error: trainer.devices: 4096 processes need 4096 CPU cores")
    assert not (sciml.cwd / "outputs").exists()
