"""What a script reads from stdout: one result line per train, and no log records there."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import TINY, run_sciml


def test_quiet_train_prints_one_line_naming_its_run(tmp_path):
    proc = run_sciml("train", *TINY, cwd=tmp_path, check=True)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    m = re.fullmatch(r"sciml train: finished heat-pinn in \d+ s, val/rel_l2 (\S+), run (\S+)", lines[0])
    assert m, lines[0]
    run = Path(m.group(2))
    run = run if run.is_absolute() else tmp_path / run
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "metrics.json").is_file()
    assert float(m.group(1)) > 0


def test_log_records_go_to_stderr_and_the_run_log(tmp_path):
    """The UDE logs its recovered equation: on stderr and in train.log, not on stdout."""
    proc = run_sciml("train", "experiment=ude_lotka_volterra", "optim.steps=30", "optim.refit_steps=2",
                     "trainer.callbacks.progress=null", "trainer.callbacks.tensorboard=null", cwd=tmp_path, check=True)
    assert "symbolic regression" not in proc.stdout and "[HYDRA]" not in proc.stdout
    assert "symbolic regression" in proc.stderr
    (log,) = (tmp_path / "outputs" / "train" / "lotka_volterra-ude").glob("*/train.log")
    assert "symbolic regression" in log.read_text()
    assert len(proc.stdout.strip().splitlines()) == 1


def test_sweep_jobs_each_report_and_hydra_logs_stay_off_stdout(tmp_path):
    proc = run_sciml("sweep", *TINY, "model.width=8,16", cwd=tmp_path, check=True)
    assert "[HYDRA]" not in proc.stdout and "Launching 2 jobs" in proc.stderr
    assert len([ln for ln in proc.stdout.splitlines() if ln.startswith("sciml train: finished")]) == 2
