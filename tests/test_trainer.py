"""The training loop: resume bit for bit, signals, NaN, checkpoints, a PINN that learns."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import warnings

import pytest
import torch
from conftest import (
    PHASED,
    TINY,
    SignalAt,
    assert_figure,
    build,
    fit,
    log_holds,
    only_run_dir,
    run_sciml,
    start_train,
)

from sciml_cli.errors import CheckpointError, NonFiniteLossError
from sciml_cli.training import checkpoint
from sciml_cli.training.callbacks import Callback
from sciml_cli.training.trainer import Interrupted


def test_a_resume_takes_the_new_optimiser_settings_and_keeps_its_state(tmp_path):
    """``resume=<run> optim.lr=...`` without a scheduler: the new rate is the one used from the
    next step (it was the checkpoint's before), and Adam's moments and step count carry on."""
    args = [*TINY, "optim=adam", "optim.steps=10", "trainer.checkpoint_every=10", "trainer.val_every=10"]
    run_sciml("train", *args, cwd=tmp_path, check=True)
    run = only_run_dir(tmp_path / "outputs" / "train" / "heat-pinn")
    before = checkpoint.load(run / "checkpoints" / "last.pt")["optimizer"]
    run_sciml("train", *args, f"resume={run}", "optim.steps=12", "optim.lr=0.05", "optim.betas=[0.8,0.99]",
              cwd=tmp_path, check=True)
    after = checkpoint.load(run / "checkpoints" / "last.pt")["optimizer"]
    group = after["param_groups"][0]
    assert group["lr"] == 0.05 and tuple(group["betas"]) == (0.8, 0.99), group
    assert before["param_groups"][0]["lr"] == 1e-3
    assert all(float(s["step"]) == 12 for s in after["state"].values())  # 10 + 2: the moments went on


def test_a_run_being_trained_is_not_resumed_by_a_second_process(tmp_path):
    """While one process trains a run, ``resume=auto`` and ``resume=<run>`` from another are a
    one-line config error naming the holder, and write nothing; once it stops, the run resumes."""
    args = [*TINY, "optim.steps=100000", "trainer.checkpoint_every=5"]
    base = tmp_path / "outputs" / "train" / "heat-pinn"
    proc = start_train(args, tmp_path, lambda: bool(list(base.glob("*/checkpoints/last.pt"))))
    try:
        run = only_run_dir(base)
        umask = os.umask(0)
        os.umask(umask)
        assert (run / ".lock").stat().st_mode & 0o777 == 0o666 & ~umask
        hydra_config = (run / ".hydra" / "config.yaml").read_text()
        for resume in ("auto", str(run)):
            second = run_sciml("train", *TINY, f"resume={resume}", cwd=tmp_path)
            assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
            assert f"is being trained by pid {proc.pid} on " in second.stderr and "Traceback" not in second.stderr
        assert (run / ".hydra" / "config.yaml").read_text() == hydra_config
        assert only_run_dir(base) == run
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    step = checkpoint.load(run / "checkpoints" / "last.pt")["step"]
    run_sciml("train", *TINY, f"resume={run}", f"optim.steps={step + 5}", cwd=tmp_path, check=True)
    assert checkpoint.load(run / "checkpoints" / "last.pt")["step"] == step + 5


def test_resume_auto_does_not_continue_an_older_run_when_the_newest_never_checkpointed(sciml, tiny_run):
    """A run killed (SIGKILL: no handler runs) before its first checkpoint is the newest run:
    ``resume=auto`` says so rather than continue an older run unasked, and writes nothing. The
    killed process's lock is gone with it."""
    tmp_path, older = sciml.cwd, tiny_run
    base = older.parent
    stamp = (older / "checkpoints" / "last.pt").stat().st_mtime_ns
    args = [*TINY, "optim.steps=100000", "trainer.checkpoint_every=100000"]
    proc = start_train(args, tmp_path, lambda: len(list(base.glob("*/run.json"))) == 2)
    proc.kill()
    proc.communicate(timeout=60)
    newest = next(d for d in base.iterdir() if d != older)
    assert not (newest / "checkpoints" / "last.pt").exists()
    listing = sorted(str(p) for p in base.rglob("*"))
    again = run_sciml("train", *TINY, "resume=auto", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
    assert f"the newest run, {newest.relative_to(tmp_path)}, stopped before its first checkpoint" in again.stderr
    assert sorted(str(p) for p in base.rglob("*")) == listing
    assert (older / "checkpoints" / "last.pt").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("stop_at, signum", [(3, signal.SIGTERM), (20, signal.SIGINT), (25, signal.SIGTERM)])
def test_interrupted_and_resumed_run_matches_an_uninterrupted_one_bit_for_bit(tmp_path, stop_at, signum):
    full, full_model = fit(PHASED, tmp_path / "full")
    with pytest.raises(Interrupted) as info:
        fit(PHASED, tmp_path / "cut", callbacks=[SignalAt(stop_at, signum)])
    assert info.value.exit_code == 128 + signum
    assert f"at step {stop_at}/28" in str(info.value) and "resume=" in str(info.value)
    state = checkpoint.load(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert state["step"] == stop_at
    resumed, resumed_model = fit(PHASED, tmp_path / "cut", resume=state)
    full.pop("wall_time_s"), resumed.pop("wall_time_s")
    assert resumed == full  # exact float equality: same losses and metrics
    for a, b in zip(full_model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)


#: every stateful PINN option at once on Burgers: RAD redraws from the model, balanced weights,
#: causal weights, a learned coefficient from observations, Taylor derivatives
STATEFUL = [
    "optim=adam_lbfgs", "optim.steps=24", "optim.lbfgs_steps=4", "model.width=10", "model.depth=2",
    "problem=burgers", "problem.setup=raissi", "model.n_interior=200", "model.n_initial=40",
    "model.n_boundary=40", "model.adaptive=rad", "model.resample_every=6", "model.rad_pool=2000",
    "model.resample_until=${optim.steps}", "model.balance=lr_annealing", "model.balance_every=5",
    "model.causal_epsilon=1.0", "model.causal_bins=8", "model.learn={lambda1:0.5}", "model.n_observations=100",
    "model.derivatives=taylor", "trainer.dtype=float64", "trainer.val_every=10", "trainer.checkpoint_every=4",
    "trainer.log_every=1",
]


@pytest.mark.parametrize("stop_at", [7, 12, 26])
def test_stateful_pinn_options_resume_bit_for_bit(tmp_path, stop_at):
    full, full_model = fit(STATEFUL, tmp_path / "full")
    with pytest.raises(Interrupted):
        fit(STATEFUL, tmp_path / "cut", callbacks=[SignalAt(stop_at)])
    state = checkpoint.load(tmp_path / "cut" / "checkpoints" / "last.pt")
    resumed, resumed_model = fit(STATEFUL, tmp_path / "cut", resume=state)
    full.pop("wall_time_s"), resumed.pop("wall_time_s")
    assert resumed == full
    assert int(full_model.interior_draw) == 3  # RAD redrew (steps 6, 12, 18), then stopped
    assert not torch.equal(full_model.balance_weights, torch.ones_like(full_model.balance_weights))
    for (name, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name


class Accuracy(Callback):
    """Records every validation value of the trainer's metric."""

    def __init__(self):
        self.values = []

    def on_validation(self, trainer, evaluation):
        self.values.append(evaluation.metrics[trainer.val_metric])


def test_best_checkpoint_follows_a_higher_is_better_metric(tmp_path, monkeypatch):
    from sciml_cli.problems.heat import Heat

    # a problem whose metric is better higher (as PSNR is): 1 - rel_l2
    monkeypatch.setattr(Heat, "val_metric", "accuracy", raising=False)
    monkeypatch.setattr(Heat, "val_direction", "maximize", raising=False)
    original = Heat.metrics
    monkeypatch.setattr(Heat, "metrics", lambda self, p, r: {**original(self, p, r),
                                                             "accuracy": 1 - original(self, p, r)["rel_l2"]})
    record = Accuracy()
    summary, _ = fit([*PHASED[:12], "trainer.val_every=2"], tmp_path, callbacks=[record])
    assert len(record.values) >= 10 and max(record.values) > min(record.values)  # a min rule would differ
    assert summary["best/accuracy"] == max(record.values)
    assert checkpoint.load(tmp_path / "checkpoints" / "best.pt")["best"] == max(record.values)


class RecordLR(Callback):
    def __init__(self):
        self.lr = {}

    def on_log(self, trainer, logs):
        self.lr[trainer.step] = trainer.optimizer.param_groups[0]["lr"]


COSINE = [*PHASED[3:13], "optim=adam", "optim.lr=1e-2",
          "+optim.phases.0.scheduler._target_=torch.optim.lr_scheduler.CosineAnnealingLR",
          "+optim.phases.0.scheduler._partial_=true", "+optim.phases.0.scheduler.T_max=${optim.steps}"]


@pytest.mark.parametrize("stop_at", [10, 20], ids=["mid-run", "finished"])
def test_a_run_resumed_with_more_steps_follows_the_new_schedule(tmp_path, stop_at):
    """Cosine annealing with ``T_max: ${optim.steps}``, 20 steps, then resumed with 40: from
    the checkpoint's step on, the rates are those of a 40-step schedule (annealing to the new
    end, neither restarting the cycle nor stuck at the old end's zero)."""
    record = RecordLR()
    if stop_at < 20:
        with pytest.raises(Interrupted):
            fit([*COSINE, "optim.steps=20"], tmp_path / "cut", callbacks=[SignalAt(stop_at)])
    else:
        fit([*COSINE, "optim.steps=20"], tmp_path / "cut")
    state = checkpoint.load(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert state["step"] == stop_at
    fit([*COSINE, "optim.steps=40"], tmp_path / "cut", resume=state, callbacks=[record])
    reference = RecordLR()
    fit([*COSINE, "optim.steps=40"], tmp_path / "full", callbacks=[reference])
    steps = sorted(record.lr)
    assert steps[0] == stop_at + 1 and steps[-1] == 40
    assert [record.lr[k] for k in steps] == pytest.approx([reference.lr[k] for k in steps], rel=1e-12)
    assert record.lr[40] < 1e-6 < record.lr[stop_at + 1]


def test_a_resumed_run_takes_a_new_learning_rate(tmp_path):
    with pytest.raises(Interrupted):
        fit([*COSINE, "optim.steps=20"], tmp_path, callbacks=[SignalAt(10)])
    state = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    record = RecordLR()
    fit([*COSINE, "optim.steps=20", "optim.lr=2e-2"], tmp_path, resume=state, callbacks=[record])
    expected = 0.5 * 2e-2 * (1 + math.cos(math.pi * 11 / 20))
    assert record.lr[11] == pytest.approx(expected, rel=1e-9)


@pytest.mark.slow  # 50 s; the default suite keeps tests/test_sweep.py's SIGUSR1 stop, requeue and bit-identical resume
def test_sigterm_from_outside_leaves_a_resumable_checkpoint(tmp_path):
    args = [*TINY, "optim=adam_lbfgs", "optim.steps=400", "optim.lbfgs_steps=5", "trainer.checkpoint_every=10",
            "trainer.dtype=float64"]
    base = tmp_path / "outputs" / "train" / "heat-pinn"
    proc = start_train(args, tmp_path, lambda: bool(list(base.glob("*/checkpoints/last.pt"))))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM at step" in err and "Resume with: sciml train resume=" in err
    assert "Traceback" not in err and err.count("\n") == 1
    run = only_run_dir(base)
    result = json.loads(out)  # the one object a batch script reads, for a stopped run too
    assert (result["status"], result["exit_code"], result["run_dir"]) == ("interrupted", 143, str(run))
    assert "SIGTERM at step" in result["error"]
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"

    resumed = run_sciml("train", *args, "resume=auto", cwd=tmp_path, check=True)
    assert "resuming" in resumed.stderr
    assert only_run_dir(base) == run  # continued in place
    run_sciml("train", *args, "paths.outputs=whole", cwd=tmp_path, check=True)
    whole = only_run_dir(tmp_path / "whole" / "train" / "heat-pinn")
    a = json.loads((run / "metrics.json").read_text())
    b = json.loads((whole / "metrics.json").read_text())
    a.pop("wall_time_s"), b.pop("wall_time_s")
    assert a == b and a["step"] == 405
    # and the weights the interrupted run ends with are the uninterrupted run's, bit for bit
    cut, full = (checkpoint.load(r / "checkpoints" / "last.pt")["model"] for r in (run, whole))
    assert cut.keys() == full.keys() and all(torch.equal(cut[k], full[k]) for k in cut)


def test_a_stop_signal_after_the_last_step_waits_for_the_runs_last_files(tmp_path):
    """SIGTERM once training has finished, while the run writes its plots and metrics: the run
    ends finished with all its files, instead of being cut off half-written (run.json saying
    "running", no metrics.json)."""
    base = tmp_path / "outputs" / "train" / "heat-pinn"
    proc = start_train(TINY, tmp_path, log_holds(base, "finished at step"), poll=0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    run = only_run_dir(base)
    assert json.loads(out)["status"] == "finished"
    assert json.loads((run / "metrics.json").read_text())["step"] == 40
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert_figure(run / "plots" / "loss.png")


def test_a_stop_signal_before_the_first_step_ends_with_one_line_and_a_result(tmp_path):
    """SIGTERM as soon as the run directory exists, while the run sets itself up: one line, exit
    143 and, with output=json, the one object a batch script reads; the data cache keeps no partial
    file. Before, a signal before the training loop's handlers killed the process silently. (Data
    generated by the first batch is inside the loop: a signal there stops at step 1 with a
    checkpoint, which the same promises cover.)"""
    base = tmp_path / "outputs" / "train" / "burgers-fno"
    proc = start_train(["experiment=fno_burgers_quick", "trainer.device=cpu", "trainer.callbacks.progress=null"],
                       tmp_path, lambda: bool(list(base.glob("*/.hydra/config.yaml"))), poll=0.005)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    lines = [line for line in err.splitlines() if line.startswith("sciml:")]
    assert len(lines) == 1 and lines[0].startswith("sciml: stopped: SIGTERM "), err
    assert "Traceback" not in err
    result = json.loads(out)
    assert (result["status"], result["exit_code"]) == ("interrupted", 143)
    assert result["error"] == lines[0].removeprefix("sciml: stopped: ")
    data = tmp_path / "outputs" / "data"
    assert not data.exists() or all(p.suffix in (".h5", ".lock") for p in data.iterdir())
    assert "the run directory is removed" in lines[0] and not list(base.iterdir())  # nothing for resume=auto to trip on


def test_a_stop_signal_while_the_command_starts_is_one_line_and_writes_nothing(tmp_path):
    """SIGTERM half a second in: imports and config checks, before any directory exists."""
    import time

    proc = start_train([*TINY, "optim.steps=100000"], tmp_path, lambda: True)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err == "sciml: stopped: SIGTERM before the command began; nothing was written\n"
    assert json.loads(out)["status"] == "interrupted"
    assert not (tmp_path / "outputs").exists()


def test_nan_loss_stops_with_the_step_and_term_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"at step \d+") as info:
        fit(["optim=sgd", "optim.lr=1e6", "optim.steps=200", "trainer.checkpoint_every=2",
             "trainer.log_every=1", "model.n_interior=64"], tmp_path)
    assert "loss term '" in str(info.value) or "non-finite weights" in str(info.value)
    state = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_nan_through_the_cli_exits_1_with_one_line(sciml):
    proc = sciml("train", *TINY, "optim=sgd", "optim.lr=1e6", "optim.steps=200")
    assert proc.returncode == 1
    assert proc.stderr.startswith("sciml: error: loss term") and proc.stderr.count("\n") == 1
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "heat-pinn")
    # stdout still names the run a script may want to inspect
    assert re.fullmatch(r"sciml train: failed \(exit 1\) after \d+ s, run (\S+)\n", proc.stdout).group(1) == str(run)
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_checkpoints_are_plain_and_load_with_weights_only(tmp_path):
    fit(TINY[:5] + ["optim.steps=4"], tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["format"] == "sciml-checkpoint" and state["step"] == 4
    assert {"model", "optimizer", "scheduler", "rng", "config", "phase_index", "phase_step"} <= set(state)
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_truncated_and_foreign_checkpoints_give_one_line_errors(tmp_path):
    fit(TINY[:5] + ["optim.steps=4"], tmp_path)
    good = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or foreign"):
        checkpoint.load(bad)
    bad.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or foreign"):
        checkpoint.load(bad)
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match="not a sciml checkpoint"):
        checkpoint.load(bad)
    torch.save({"format": "sciml-checkpoint", "version": 1, "x": Callback()}, bad)  # arbitrary object
    with pytest.raises(CheckpointError, match="truncated or foreign"):
        checkpoint.load(bad)


def test_eval_of_a_corrupt_checkpoint_is_one_line(sciml, tiny_run):
    run = tiny_run
    best = run / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:100])
    proc = sciml("eval", f"run={run}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "truncated or foreign" in proc.stderr


def test_config_from_a_run_directory_cannot_build_foreign_classes(sciml, tiny_run, tmp_path):
    run = tiny_run
    path = run / "checkpoints" / "best.pt"
    state = torch.load(path, weights_only=True)
    marker = tmp_path / "pwned"
    state["config"] = state["config"].replace(
        "_target_: sciml_cli.problems.heat.Heat",
        f"_target_: os.system\n  command: touch {marker}")
    checkpoint.save(path, state)  # a consistent checksum: the config itself is what is refused
    proc = sciml("eval", f"run={run}")
    assert proc.returncode == 2 and "outside the classes sciml may build" in proc.stderr
    assert not marker.exists()
    # inside the package, a function is refused too: only registered classes are built
    written = tmp_path / "written.json"
    state["config"] = state["config"].replace(
        f"_target_: os.system\n  command: touch {marker}",
        f"_target_: sciml_cli.rundir.write_json\n  path: {written}\n  data: {{}}")
    checkpoint.save(path, state)
    proc = sciml("eval", f"run={run}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "'sciml_cli.rundir.write_json' is not a class sciml may build" in proc.stderr
    assert not written.exists()


def test_a_flipped_bit_in_a_weight_or_the_optimiser_state_is_caught(sciml, tiny_run):
    run = tiny_run
    for ckpt, where in (("best.pt", "model"), ("last.pt", "optimizer")):
        path = run / "checkpoints" / ckpt
        state = torch.load(path, weights_only=True)
        tensor = next(iter(state["model"].values())) if where == "model" else state["optimizer"]["state"][0]["exp_avg"]
        bits = tensor.view(torch.int32)
        bits.view(-1)[0] ^= 1 << 3  # one low mantissa bit: a tiny, silent change of the number
        torch.save(state, path)  # the file itself stays a valid checkpoint
    proc = sciml("eval", f"run={run}")  # a checkpoint named on the command line: bad input, as for resume=
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "best.pt fails its checksum" in proc.stderr and "last.pt in the same directory" in proc.stderr
    proc = sciml("train", *TINY, f"resume={run}")  # refused before anything is written
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "resume: " in proc.stderr and "last.pt fails its checksum" in proc.stderr


def test_checkpoints_without_a_checksum_from_version_1_still_load_with_a_warning(tmp_path):
    fit(TINY[:5] + ["optim.steps=4"], tmp_path)
    path = tmp_path / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    assert state["checksum"] == checkpoint.checksum(state)
    del state["checksum"]
    state["version"] = 1
    torch.save(state, path)
    with pytest.warns(checkpoint.CheckpointWarning, match="predates checksums"):
        assert checkpoint.load(path)["step"] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a version 2 file loads silently
        checkpoint.save(path, {k: v for k, v in state.items() if k not in ("format", "version")})
        assert checkpoint.load(path)["step"] == 4


def test_a_short_pinn_run_beats_the_classical_baseline(tmp_path):
    """Adam then L-BFGS, a few seconds of CPU: a rel-L2 against the exact solution below the
    problem's stored baseline, Crank–Nicolson on 9 points (1.6e-2; the run reaches 3.0e-3, the
    `pinn_heat` preset 1e-3: scripts/bench_pinn_presets.py pinn_heat)."""
    summary, _ = fit(["optim=adam_lbfgs", "optim.steps=200", "optim.lbfgs_steps=20", "model.width=20",
                      "model.depth=3", "model.n_interior=500", "model.n_initial=100", "model.n_boundary=100",
                      "trainer.dtype=float64", "trainer.val_every=1000"], tmp_path)
    from sciml_cli.problems.heat import Heat

    baseline = Heat().to("cpu", torch.float64).baselines()["crank_nicolson_9_rel_l2"]
    assert summary["val/rel_l2"] < baseline, (summary, baseline)


def test_seed_makes_runs_repeatable(tmp_path):
    short = TINY[:5] + ["optim.steps=5", "trainer.log_every=1"]
    a, _ = fit(short, tmp_path / "a")
    b, _ = fit(short, tmp_path / "b")
    c, _ = fit([*short, "trainer.seed=1"], tmp_path / "c")
    a.pop("wall_time_s"), b.pop("wall_time_s"), c.pop("wall_time_s")
    assert a == b and a != c


def test_gradient_clipping_bounds_the_update(tmp_path):
    """One SGD step at lr 1 without momentum moves the weights by minus the gradient: the whole
    gradient unclipped, and with clipping at 0.001 the same direction scaled to norm 0.001.
    In float64, so that the difference of the weights resolves a step of that size."""

    def one_step(clip):
        _, trainer, model, problem = build(TINY[:5] + [
            "optim=sgd", "optim.lr=1.0", "optim.steps=1", "optim.phases.0.optimizer.momentum=0.0",
            "optim.phases.0.optimizer.nesterov=false", f"trainer.grad_clip={clip}", "trainer.log_every=1",
            "trainer.dtype=float64"])
        before = torch.cat([p.detach().flatten().double() for p in model.parameters()])
        trainer.fit(model, problem, tmp_path / str(clip), "x: 1\n")
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        return after - before, trainer.last_logs["grad_norm"]

    free, free_norm = one_step("null")
    clipped, norm = one_step(0.001)
    # the norm before clipping is what gets logged: the gradient's, which the free step moved by
    assert norm == free_norm and torch.linalg.vector_norm(free).item() == pytest.approx(norm, rel=1e-12)
    assert norm > 0.01  # so clipping at 0.001 acts, shrinking the step tenfold or more
    size = torch.linalg.vector_norm(clipped).item()
    assert size == pytest.approx(0.001, rel=1e-5)  # torch divides by norm + 1e-6
    assert (torch.linalg.vector_norm(clipped - free * (size / norm)) / size).item() < 1e-9


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        checkpoint.atomic_write(tmp_path / "f.json", lambda tmp: open(tmp, "w").write("{}"))
    finally:
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "f.json").read_text() == "{}"


def test_a_resume_that_cannot_work_is_refused_before_the_run_is_touched(sciml, tiny_run):
    run = tiny_run
    before = {p: p.read_bytes() for p in [run / "run.json", *sorted((run / ".hydra").iterdir())]}
    proc = sciml("train", *TINY, f"resume={run}", "model.width=8")  # the weights are 16 wide
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("sciml: config error: resume: the weights in") and "do not fit" in proc.stderr
    assert {p: p.read_bytes() for p in before} == before  # config, overrides and status untouched
    # a file that is no checkpoint: nothing is created beside it
    notes = sciml.cwd / "a" / "b" / "notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("not a checkpoint\n")
    proc = sciml("train", *TINY, f"resume={notes}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not a readable checkpoint" in proc.stderr
    assert sorted(p.name for p in (sciml.cwd / "a").rglob("*")) == ["b", "notes.txt"]


def test_resuming_a_finished_run_changes_nothing(sciml, tiny_run):
    """resume=auto on a run that has nothing left to do says so and prints its metrics; no file of
    the run changes (no second set of TensorBoard events, no .hydra/ of the resume command). One
    killed before its final files is finished by a resume (test_faults)."""
    run = tiny_run

    def files() -> dict[str, bytes]:
        return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
                if p.is_file() and p.name != ".lock"}  # the lock names the process holding the run

    before = files()
    proc = sciml("train", *TINY, "resume=auto")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("sciml train: finished heat-pinn") and proc.stdout.rstrip().endswith(str(run))
    assert f"{run} already finished its 40 steps" in proc.stderr and "optim.steps=<more than 40>" in proc.stderr
    assert files() == before
    metrics = json.loads(before["metrics.json"])
    proc = sciml("train", f"resume={run}", "output=json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["metrics"] == {k: v for k, v in metrics.items() if k != "status"}
    assert files() == before

