"""Data-parallel training on 2 gloo processes (CPU): the same numbers as one process on the
same global batch, one run directory written by rank 0 only, and checkpoints that resume on
any number of processes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time

import pytest
import torch
from conftest import TINY, TINY_FNO, log_holds, only_run_dir, start_train

from sciml_cli.training import checkpoint

PINN = [*TINY, "trainer.dtype=float64"]


def _final(run):
    metrics = json.loads((run / "metrics.json").read_text())
    return metrics, checkpoint.load(run / "checkpoints" / "last.pt")


def test_two_gloo_processes_give_the_one_process_numbers_and_resume_on_one(sciml):
    """Steps 1-20 on 2 processes, 21-40 resumed on 1, end where 40 steps on 1 process do:
    disjoint halves of the points per rank with averaged gradients are the whole batch's
    gradient, and a checkpoint holds no trace of the process count."""
    out = sciml("train", *PINN, "optim.steps=20", "trainer.devices=2", check=True).stdout
    assert out.startswith("sciml train: finished heat-pinn") and out.count("\n") == 1
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "heat-pinn")
    # rank 0 wrote the run, rank 1 nothing: the files of a 1-process run, one event writer
    assert json.loads((run / "run.json").read_text())["devices"] == 2
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert sorted(p.name for p in run.iterdir()) == [".hydra", ".lock", "checkpoints", "metrics.json", "plots", "run.json",
                                                    "tb", "train.log"]
    assert len(list((run / "tb").iterdir())) == 2  # the events and the hparams summary
    assert json.loads((run / "metrics.json").read_text())["step"] == 20
    sciml("train", *PINN, f"resume={run}", "trainer.devices=1", check=True)
    sciml("train", *PINN, "paths.outputs=one", check=True)
    (m2, s2), (m1, s1) = _final(run), _final(only_run_dir(sciml.cwd / "one" / "train" / "heat-pinn"))
    assert m2["step"] == m1["step"] == 40
    for key in ("loss/total", "loss/residual", "loss/initial", "loss/boundary", "val/rel_l2"):
        assert m2[key] == pytest.approx(m1[key], rel=1e-10), key
    for name, w in s1["model"].items():
        torch.testing.assert_close(s2["model"][name], w, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_operator_data_split_over_two_processes_resumes_on_one(sciml):
    """The FNO's batch is split by sample (a distributed sampler); a checkpoint of the
    2-process run resumes on 1 process and ends where a 1-process run does."""
    # a constant learning rate: a run stopped at step 20 and one that goes on are the same run
    fno = [*TINY_FNO, "optim.steps=40", "trainer.val_every=20", "trainer.checkpoint_every=20",
           "optim.phases.0.scheduler=null", "trainer.dtype=float64", "trainer.callbacks.progress=null"]
    sciml("train", *fno, "optim.steps=20", "trainer.devices=2", check=True)
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "burgers-fno")
    sciml("train", *fno, f"resume={run}", "trainer.devices=1", check=True)
    sciml("train", *fno, "paths.outputs=one", "paths.data=outputs/data", check=True)
    one = only_run_dir(sciml.cwd / "one" / "train" / "burgers-fno")
    (m2, s2), (m1, s1) = _final(run), _final(one)
    assert m2["step"] == m1["step"] == 40
    assert m2["loss/total"] == pytest.approx(m1["loss/total"], rel=1e-9)
    assert m2["val/rel_l2"] == pytest.approx(m1["val/rel_l2"], rel=1e-9)
    for name, w in s1["model"].items():
        torch.testing.assert_close(s2["model"][name], w, rtol=1e-9, atol=1e-12)


def test_sigterm_stops_every_rank_at_one_step_and_the_run_resumes_bit_for_bit(sciml):
    """SIGTERM to ``trainer.devices=2`` (what a cluster sends the job) reaches both ranks: they
    agree on the step, rank 0 saves it, the parent exits 143 with rank 0's message in its JSON,
    and ``resume=auto`` on 2 processes ends where an uninterrupted 2-process run does."""
    args = [*PINN, "optim=adam_lbfgs", "optim.steps=60", "optim.lbfgs_steps=5", "trainer.checkpoint_every=10",
            "trainer.devices=2"]
    base = sciml.cwd / "outputs" / "train" / "heat-pinn"
    proc = start_train(args, sciml.cwd, lambda: bool(list(base.glob("*/checkpoints/last.pt"))))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.startswith("sciml: stopped: SIGTERM at step") and err.count("\n") == 1, err
    run = only_run_dir(base)
    result = json.loads(out)
    assert (result["status"], result["exit_code"], result["run_dir"]) == ("interrupted", 143, str(run))
    assert result["error"].startswith("SIGTERM at step")
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"

    # resumed as the stop message says, without trainer.devices: the run's own 2 processes
    sciml("train", *[a for a in args if a != "trainer.devices=2"], "resume=auto", check=True)
    assert only_run_dir(base) == run  # continued in place
    sciml("train", *args, "paths.outputs=whole", check=True)
    whole = only_run_dir(sciml.cwd / "whole" / "train" / "heat-pinn")
    (a, cut), (b, full) = _final(run), _final(whole)
    a.pop("wall_time_s"), b.pop("wall_time_s")
    assert a == b and a["step"] == 65
    assert all(torch.equal(cut["model"][k], w) for k, w in full["model"].items())
    # the run's log tells the story once (rank 0 writes it): start, the stop, the resume, the end
    story = [line.split(" - ", 1)[1] for line in (run / "train.log").read_text().splitlines()]
    events = [line.split(":")[0].split(" at ")[0] for line in story if not line.startswith(("step ", "phase "))]
    assert events == ["started", "stopped", "resumed", "finished"], story
    assert story[0].startswith("started: PINN on Heat,") and ", 2 processes, phases adam 60, lbfgs 5;" in story[0]
    assert any(line.startswith("stopped: SIGTERM at step") for line in story)
    assert next(line for line in story if line.startswith("resumed")).count(", 2 processes,") == 1
    assert story[-1].startswith("finished at step 65 ")
    validations = [line for line in story if line.startswith("step ")]
    assert [int(v.split()[1].rstrip(":")) for v in validations] == [20, 40, 60, 65]
    assert all(", val rel_l2 " in v for v in validations)


def _start_until(sciml, args, marker, **popen):
    """Start ``sciml train args`` and wait until its run's log holds ``marker``."""
    base = sciml.cwd / "outputs" / "train" / "heat-pinn"
    return start_train(args, sciml.cwd, log_holds(base, marker), **popen), base


def test_ctrl_c_at_the_terminal_checkpoints_a_multi_rank_run(sciml):
    """A terminal's Ctrl-C goes to the whole foreground process group. The ranks live in sessions
    of their own, so each gets SIGINT once, from the parent; before, the second copy read as a
    second Ctrl-C and the run stopped without a checkpoint."""
    args = [*PINN, "optim.steps=4000", "trainer.checkpoint_every=1000", "trainer.devices=2"]
    proc, base = _start_until(sciml, args, "step 40:", start_new_session=True)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    result = json.loads(out)
    assert result["status"] == "interrupted" and result["error"].startswith("SIGINT at step"), result
    step = int(result["error"].split()[3].split("/")[0])
    assert checkpoint.load(only_run_dir(base) / "checkpoints" / "last.pt")["step"] == step >= 40


def test_ranks_whose_parent_is_killed_checkpoint_and_stop(sciml):
    """SIGKILL to the parent (an OOM killer, a scheduler's hard kill) cannot be passed on; the
    ranks then get SIGTERM from the kernel, agree on a step, and rank 0 saves it."""
    args = [*PINN, "optim.steps=4000", "trainer.checkpoint_every=1000", "trainer.devices=2"]
    proc, base = _start_until(sciml, args, "step 40:")
    proc.kill()
    proc.communicate(timeout=60)
    run = only_run_dir(base)
    deadline = time.time() + 60
    while "stopped: SIGTERM" not in (run / "train.log").read_text() and time.time() < deadline:
        time.sleep(0.1)
    assert "stopped: SIGTERM at step" in (run / "train.log").read_text()  # logged after the save
    assert checkpoint.load(run / "checkpoints" / "last.pt")["step"] >= 40


def test_a_sweep_of_data_parallel_jobs_records_each_jobs_result_and_error(sciml):
    """Each job of a sweep with ``trainer.devices=2`` starts its own ranks in its own directory; a
    job whose loss overflows is recorded as failed with rank 0's message, not an exit code."""
    proc = sciml("sweep", *TINY, "optim.steps=20", "trainer.devices=2", "optim.lr=1e-3,1e30")
    assert proc.returncode == 1, proc.stderr
    sweep = only_run_dir(sciml.cwd / "outputs" / "sweep")
    with open(sweep / "summary.csv") as f:
        rows = {int(r["job"]): r for r in csv.DictReader(f)}
    assert rows[0]["status"] == "finished"
    assert float(rows[0]["value"]) == pytest.approx(json.loads((sweep / "0" / "metrics.json").read_text())["val/rel_l2"])
    assert json.loads((sweep / "0" / "run.json").read_text())["devices"] == 2
    assert rows[1]["status"] == "failed"
    assert rows[1]["error"].startswith("loss term") and " is inf at step " in rows[1]["error"], rows[1]["error"]
    assert f"[ERROR] - stopped: {rows[1]['error']}" in (sweep / "1" / "sweep.log").read_text()


def test_more_devices_than_the_machine_has_is_a_config_error(sciml):
    proc = sciml("train", *TINY, "trainer.devices=4096")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("sciml: config error: trainer.devices: 4096 processes need 4096 CPU cores")
    assert not (sciml.cwd / "outputs").exists()


@pytest.mark.slow
def test_a_job_started_by_torchrun_is_one_data_parallel_run(sciml):
    """``torchrun --nproc_per_node=2 -m sciml_cli train ...``: the ranks find one run directory
    (named by torchrun's run id), rank 0 writes it, and the numbers are the 1-process ones."""
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "sciml_cli", "train", *PINN], cwd=sciml.cwd, capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("sciml train: finished") == 1  # rank 0 reports
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "heat-pinn")
    assert run.name.startswith("ranks-")
    assert len(list((run / "tb").iterdir())) == 2  # one writer's events and its hparams summary
    sciml("train", *PINN, "paths.outputs=one", check=True)
    (m2, s2), (m1, s1) = _final(run), _final(only_run_dir(sciml.cwd / "one" / "train" / "heat-pinn"))
    assert m2["loss/total"] == pytest.approx(m1["loss/total"], rel=1e-10)
    for name, w in s1["model"].items():
        torch.testing.assert_close(s2["model"][name], w, rtol=1e-10, atol=1e-12)
