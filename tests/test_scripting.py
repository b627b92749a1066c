"""What a script reads from stdout: one result line (or one JSON object with `output=json`) per
command, log records and tables elsewhere, and the documented exit codes."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from conftest import TINY, assert_figure, run_sciml


def test_quiet_train_prints_one_line_naming_its_run(tmp_path):
    proc = run_sciml("train", *TINY, cwd=tmp_path, check=True, fresh=True)  # the entry point as a user runs it
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    m = re.fullmatch(r"sciml train: finished heat-pinn in \d+ s, val/rel_l2 (\S+), run (\S+)", lines[0])
    assert m, lines[0]
    run = Path(m.group(2))
    run = run if run.is_absolute() else tmp_path / run
    assert (run / "checkpoints" / "last.pt").is_file()
    assert m.group(1) == f"{json.loads((run / 'metrics.json').read_text())['val/rel_l2']:.2e}"


@pytest.mark.slow  # 17 s of UDE training; hydra's records stay off stdout in the sweep test below
def test_log_records_go_to_stderr_and_the_run_log(tmp_path):
    """The UDE logs its recovered equation: on stderr and in train.log, not on stdout."""
    proc = run_sciml("train", "experiment=ude_lotka_volterra", "optim.steps=30", "optim.refit_steps=2",
                     "trainer.callbacks.progress=null", "trainer.callbacks.tensorboard=null", cwd=tmp_path, check=True)
    assert "symbolic regression" not in proc.stdout and "[HYDRA]" not in proc.stdout
    assert "symbolic regression" in proc.stderr
    (log,) = (tmp_path / "outputs" / "train" / "lotka_volterra-ude").glob("*/train.log")
    assert "symbolic regression" in log.read_text()
    assert len(proc.stdout.strip().splitlines()) == 1


def _json(proc) -> dict:
    """stdout holds exactly one JSON object and nothing else."""
    (line,) = proc.stdout.splitlines()
    record = json.loads(line)
    assert record["exit_code"] == proc.returncode
    return record


def test_json_mode_train_eval_solve_each_print_one_object(tmp_path):
    train = _json(run_sciml("train", *TINY, "output=json", cwd=tmp_path, check=True))
    run = Path(train["run_dir"])
    assert (train["command"], train["status"]) == ("train", "finished")
    assert train["metrics"] == {k: v for k, v in json.loads((run / "metrics.json").read_text()).items() if k != "status"}

    ev = _json(run_sciml("eval", f"run={run}", "output=json", cwd=tmp_path, check=True))
    assert (ev["command"], ev["status"], ev["run_dir"], ev["step"]) == ("eval", "finished", str(run), 40)
    assert ev["metrics"] == json.loads((run / "eval.json").read_text())["metrics"]
    assert ev["plots"]
    for plot in ev["plots"]:
        assert_figure(Path(plot))

    solve = _json(run_sciml("solve", "problem=heat", "output=json", cwd=tmp_path, check=True))
    h5 = Path(solve["files"][0])
    assert solve["status"] == "finished" and h5.parent == Path(solve["run_dir"])
    import h5py

    with h5py.File(h5) as f:
        assert list(f["fields/u"].shape) == solve["fields"]["u"]
    assert solve["attrs"]["rel_l2_vs_exact"] < 1e-4


@pytest.mark.parametrize("args, code, key", [
    (("train", "model.widthh=3"), 2, "model.widthh"),
    (("eval", "run=nowhere"), 2, "run"),
    (("solve", "problem=heat", "resolution=-4"), 2, "resolution"),
    (("sweep", "problem=nope,heat"), 2, "problem"),
])
def test_json_mode_reports_config_errors_as_one_object(tmp_path, args, code, key):
    proc = run_sciml(*args, "output=json", cwd=tmp_path)
    record = _json(proc)
    assert (record["command"], record["status"], record["exit_code"]) == (args[0], "invalid", code)
    assert record["error"].startswith(key) and proc.stderr.count("\n") == 1
    assert not (tmp_path / "outputs").exists()


def test_json_mode_of_a_failed_run_names_its_run_directory(tmp_path):
    proc = run_sciml("train", *TINY, "optim=sgd", "optim.lr=1e6", "optim.steps=200", "output=json", cwd=tmp_path)
    record = _json(proc)
    assert (record["status"], record["exit_code"]) == ("failed", 1) and "loss term" in record["error"]
    assert json.loads((Path(record["run_dir"]) / "run.json").read_text())["status"] == "failed"


def test_json_sweep_lists_every_job_with_its_status_and_exits_1_on_a_failed_job(tmp_path):
    proc = run_sciml("sweep", *TINY, "optim=sgd", "optim.lr=1e-3,1e6", "output=json", cwd=tmp_path)
    record = _json(proc)
    assert (record["command"], record["status"], record["exit_code"]) == ("sweep", "failed", 1)
    jobs = {j["job"]: j for j in record["jobs"]}
    assert (jobs[0]["status"], jobs[1]["status"]) == ("finished", "failed")
    assert record["best_job"] == 0 and record["best_value"] == jobs[0]["value"]
    finished = json.loads((tmp_path / jobs[0]["run_dir"] / "metrics.json").read_text())
    assert finished["val/rel_l2"] == jobs[0]["value"]
    assert "loss term" in jobs[1]["error"]
    with open(tmp_path / record["summary"]) as f:
        rows = {int(r["job"]): r for r in csv.DictReader(f)}
    assert (rows[0]["status"], rows[1]["status"]) == ("finished", "failed")
    assert float(rows[0]["value"]) == pytest.approx(finished["val/rel_l2"], rel=1e-6)


def test_bad_output_mode_names_the_choices(tmp_path):
    proc = run_sciml("train", "output=yaml", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "sciml: config error: output: unknown output mode 'yaml' (valid: text, json)\n"
