"""Progress bars: drawn on a terminal, silent off one or when switched off; every problem's default
``sciml solve`` stays small (the paper's settings stay reachable with ``fidelity=paper``)."""

from __future__ import annotations

import io
import math
import os
import re
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import ROOT, TINY_FNO, generated_problems, run_sciml
from rich.console import Console

from sciml_cli import config, progress
from sciml_cli.commands import compose
from sciml_cli.problems.ct import Ct
from sciml_cli.problems.lotka_volterra import LotkaVolterra
from sciml_cli.problems.navier_stokes import NavierStokes

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: rich's own ways of being told "this is a terminal": they must not make a pipe draw bars
_FORCING_ENV = {"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}
#: a Navier-Stokes solve of about a second: 3,000 steps on 16 x 16
_NS = [
    "problem=navier_stokes",
    "problem.t_end=3",
    "problem.t_in=1",
    "problem.dt=1e-3",
    "problem.fine_resolution=16",
    "problem.resolution=16",
    "device=cpu",
]
#: the CLI with bars due at once, so the checks do not depend on how fast this machine solves
_NO_DELAY_CLI = (
    "import sys; from sciml_cli import progress; progress.DELAY_S = 0; "
    "from sciml_cli.__main__ import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.fixture
def terminal(monkeypatch):
    """A forced-terminal rich console on a buffer, with bars due at once and every advance drawn;
    returns a function giving what was written, escape codes removed."""
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    monkeypatch.setattr(progress, "REFRESH_S", 0.0)
    buf = io.StringIO()
    with progress.enabled(True, Console(file=buf, force_terminal=True, width=120)):
        yield lambda: _ANSI.sub("", buf.getvalue())
    assert progress._display is None  # every bar closed its display


# -- the helper --------------------------------------------------------------------------------
def test_a_bar_is_drawn_on_a_terminal_with_count_and_eta(terminal):
    with progress.track_steps(20, "demo: time steps") as bar:
        assert bar.active
        for _ in range(20):
            bar.advance()
    out = terminal()
    assert "demo: time steps" in out and "20/20" in out and "ETA" in out


def test_nothing_is_drawn_when_switched_off_or_off_a_terminal(monkeypatch):
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    for on, is_terminal in ((False, True), (True, False)):
        buf = io.StringIO()
        with progress.enabled(on, Console(file=buf, force_terminal=is_terminal, width=120)):
            bar = progress.track_steps(5, "hidden")
            # the no-op bar is one shared object: nothing is allocated per solve, nothing per step
            assert not bar.active and bar is progress.track_steps(9, "other")
            with bar:
                for _ in range(5):
                    bar.advance()
        assert buf.getvalue() == ""


def test_quick_work_prints_nothing(monkeypatch):
    buf = io.StringIO()
    with progress.enabled(True, Console(file=buf, force_terminal=True, width=120)):
        with progress.track_steps(100, "quick") as bar:  # over long before DELAY_S
            assert bar.active
            for _ in range(100):
                bar.advance()
    assert buf.getvalue() == "" and progress._display is None


def test_nested_bars_share_one_display_and_the_inner_line_goes(terminal):
    with progress.track_steps(None, "generating demo-train (3 samples)", delay=0):
        for _ in range(2):
            with progress.track_steps(4, "inner: time steps") as inner:
                for _ in range(4):
                    inner.advance()
    out = terminal()
    assert "generating demo-train (3 samples)" in out and "inner: time steps" in out
    last_frame = out.rstrip().split("\r")[-1].split("\n")
    assert "inner" not in "".join(last_frame) and "1/1" in last_frame[-1]


def test_a_bar_inside_another_live_display_does_not_crash(monkeypatch):
    """Data generated during training: the training bar runs on rich's global console."""
    import rich
    from rich.progress import Progress

    buf = io.StringIO()
    host = Console(file=buf, force_terminal=True, width=120)
    monkeypatch.setattr(rich, "get_console", lambda: host)
    monkeypatch.setattr(progress, "_is_terminal", lambda: True)
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    with progress.enabled(True), Progress(console=host) as training:
        training.add_task("training", total=10)
        with progress.track_steps(None, "generating demo-val", delay=0):
            with progress.track_steps(3, "inner") as bar:
                for _ in range(3):
                    bar.advance()
    assert "training" in _ANSI.sub("", buf.getvalue())
    assert progress._display is None


def test_the_module_imports_neither_torch_nor_rich():
    code = (
        "import sys, sciml_cli.progress as p; b = p.track_steps(3, 'x'); b.advance(); "
        "assert not {'torch', 'rich'} & set(sys.modules), 'heavy import'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


# -- the loops that report ---------------------------------------------------------------------
def test_solver_loops_and_dataset_generation_report_their_steps(terminal, tmp_path):
    ns = NavierStokes(t_end=2.0, dt=0.1, resolution=8, fine_resolution=16, batch_size=2, t_in=1)
    ns.to("cpu", torch.float64).solve(n_samples=3)
    assert "navier_stokes: time steps on 16x16, 2 batches" in terminal()
    assert "40/40" in terminal()  # 2 batches x 20 steps

    ct = Ct(size=16, n_angles=6).to("cpu", torch.float64)
    ct.reconstruct(ct.solve().fields["sinogram"], n_iter=7)
    assert "ct: gradient descent (tv)" in terminal() and "7/7" in terminal()

    LotkaVolterra(t_end=3.0).to("cpu", torch.float64).solve()
    assert "lotka_volterra: time to 3" in terminal() and "3/3" in terminal()

    from sciml_cli.data.cache import cached_solution

    cached_solution("demo-train", {"n_samples": 2}, lambda: ns.solve(n_samples=2), tmp_path)
    assert "generating demo-train (2 samples)" in terminal()


# -- the command line, as a real subprocess ------------------------------------------------------
def _solve(tmp_path, *args: str, tty: bool, env: dict | None = None, command: str = "solve") -> tuple[int, str, str]:
    """``sciml solve`` (or ``command``; bars due at once) with stderr on a pseudo-terminal or a
    pipe; returns the exit code, stdout and stderr."""
    environment = {k: v for k, v in os.environ.items() if k not in _FORCING_ENV}
    environment.update({"PYTHONUNBUFFERED": "1", "COLUMNS": "120", **(env or {})})
    cmd = [sys.executable, "-c", _NO_DELAY_CLI, command, *args]
    if not tty:
        proc = subprocess.run(
            cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=environment
        )
        return proc.returncode, proc.stdout, proc.stderr
    master, slave = os.openpty()
    chunks: list[bytes] = []

    def drain():  # a full pty would block the writer
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(
            cmd,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            timeout=120,
            env=environment,
        )
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    return proc.returncode, proc.stdout, _ANSI.sub("", b"".join(chunks).decode(errors="replace"))


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_solve_on_a_terminal_draws_a_bar_and_progress_null_does_not(tmp_path):
    rc, out, err = _solve(tmp_path, *_NS, tty=True)
    assert rc == 0, out + err
    assert "navier_stokes: time steps on 16x16" in err and "3000/3000" in err and "ETA" in err
    assert "time steps" not in out  # the bar is on stderr; stdout keeps the summary only
    rc, out, err = _solve(tmp_path, *_NS, "progress=null", tty=True)
    assert rc == 0, out + err
    assert "time steps" not in err + out and "ETA" not in err + out


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_eval_draws_the_bar_of_the_test_split_it_makes_and_progress_null_does_not(tmp_path):
    """eval makes the test split on first use (training made train and val only)."""
    run_sciml("train", *TINY_FNO, "optim.steps=2", "trainer.callbacks.progress=null", cwd=tmp_path, check=True)
    (run,) = (tmp_path / "outputs" / "train" / "burgers-fno").iterdir()
    rc, out, err = _solve(tmp_path, f"run={run}", "progress=null", tty=True, command="eval")
    assert rc == 0, out + err
    assert "generating" not in err + out and "ETA" not in err + out
    for test_split in (tmp_path / "outputs" / "data").glob("burgers-test-*.h5"):
        test_split.unlink()
    rc, out, err = _solve(tmp_path, f"run={run}", tty=True, command="eval")
    assert rc == 0, out + err
    assert "generating burgers-test" in err and "ETA" in err


def test_solve_off_a_terminal_prints_no_bar_whatever_rich_is_told(tmp_path):
    rc, out, err = _solve(tmp_path, *_NS, tty=False, env=_FORCING_ENV)
    assert rc == 0, out + err
    assert "n_steps" in out  # the summary is there
    assert "time steps" not in out + err and "ETA" not in out + err


# -- default solve settings ------------------------------------------------------------------------
#: 64 x 64 step equivalents (0.5 ms each on one CPU core): a few seconds of Navier-Stokes
NS_BUDGET = 20_000


def _ns_work(p: NavierStokes, n_samples: int) -> float:
    n_steps = p.n_records * p.steps_per_record
    return math.ceil(n_samples / p.batch_size) * n_steps * (p.fine_resolution / 64) ** 2


@pytest.mark.parametrize("problem", generated_problems())
def test_every_default_solve_is_small(problem):
    cfg, choices = compose("solve", [f"problem={problem}"])
    assert choices["fidelity"] == "quick"
    p = config.instantiate(cfg.problem).to("cpu", torch.float64)
    if isinstance(p, NavierStokes):  # too slow to run to find out: count its work
        assert _ns_work(p, cfg.n_samples) <= NS_BUDGET, (p.dt, p.fine_resolution)
        return
    start = time.perf_counter()
    p.solve(resolution=cfg.resolution, n_samples=cfg.n_samples, seed=cfg.seed)
    assert time.perf_counter() - start < 30


def test_the_papers_navier_stokes_settings_stay_reachable_and_training_keeps_them():
    cfg, _ = compose("solve", ["problem=navier_stokes", "fidelity=paper"])
    paper = config.instantiate(cfg.problem)
    assert (paper.dt, paper.fine_resolution, paper.t_end) == (1e-4, 256, 50.0)
    assert paper.n_records * paper.steps_per_record == 500_000
    assert _ns_work(paper, 1) > 100 * NS_BUDGET
    # the quick fidelity is solve's alone: training and the presets' data keep their numbers
    cfg, _ = compose("train", ["model=fno", "problem=navier_stokes"])
    assert (cfg.problem.dt, cfg.problem.fine_resolution) == (1e-4, 256)
    for preset, dt in (("fno_navier_stokes", 1e-2), ("fno_navier_stokes_small", 2e-2)):
        cfg, _ = compose("train", [f"experiment={preset}"])
        assert (
            cfg.problem.dt,
            cfg.problem.fine_resolution,
            cfg.problem.forcing_amplitude,
            cfg.problem.scheme,
        ) == (dt, 64, 0.1, "cn_heun")
    # an explicit override beats the fidelity
    cfg, _ = compose("solve", ["problem=navier_stokes", "problem.dt=5e-3"])
    assert (cfg.problem.dt, cfg.problem.fine_resolution) == (5e-3, 64)
