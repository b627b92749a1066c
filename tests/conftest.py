"""Shared test helpers, imported by the tests as ``from conftest import ...`` (no test file imports
another): the `sciml` executable run as a real subprocess, the tiny configs of the CLI tests, a
check that a written PNG holds a drawn figure, a MATLAB v7.3 writer, and ``Diffusion``, an operator problem with an
exact solution at every resolution."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# Tiny test problems run faster on one thread, and a loaded machine (parallel CI jobs) makes
# OpenMP's spinning threads slow everything down many times over.
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from sciml_cli import config  # noqa: E402
from sciml_cli.commands import compose  # noqa: E402
from sciml_cli.problems.base import SPLIT_SEEDS, OperatorData, Problem, Solution  # noqa: E402
from sciml_cli.training.callbacks import Callback  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def generated_problems() -> list[str]:
    """Problem configs whose data sciml makes, so they build from their defaults alone
    (``problem=dataset`` reads the user's file: tests/test_dataset.py)."""
    from sciml_cli import config

    return [p for p in config.group_options("problem") if p != "dataset"]
SCIML = [sys.executable, "-m", "sciml_cli"]

#: a PINN run of a few seconds on a CPU core
TINY = [
    "model.width=16", "model.depth=2", "model.n_interior=256", "model.n_initial=64",
    "model.n_boundary=64", "optim.steps=40", "trainer.val_every=20", "trainer.checkpoint_every=20",
    "trainer.log_every=5", "trainer.device=cpu", "trainer.callbacks.progress=null",
]

#: an FNO on Burgers of a few seconds on a CPU core: 200 steps on 40 pairs at s = 64, enough to
#: beat the heat-equation baseline the data store (rel-L2 0.0086 against 0.024, measured). Every
#: step is logged, so the checkpoint's ``history[0]`` is the loss of the untrained model (about 1).
TINY_FNO = [
    "experiment=fno_burgers_quick", "problem.fine_resolution=256", "problem.resolution=64",
    "model.width=16", "model.modes=8", "model.n_train=40", "model.n_test=20", "model.batch_size=10",
    "optim.steps=200", "trainer.val_every=100", "trainer.checkpoint_every=100", "trainer.log_every=1",
    "trainer.device=cpu",
]

#: Navier-Stokes trajectories of a few seconds on one core: 4 records on a 32^2 solver grid, 2 in,
#: 2 out
SMALL_NS = {"t_end": 4.0, "t_in": 2, "dt": 0.05, "fine_resolution": 32, "resolution": 16}

#: the autoregressive FNO on :data:`SMALL_NS` through the command line, a few seconds on a CPU core
TINY_NS = [
    "experiment=fno_navier_stokes_small", *(f"problem.{k}={v}" for k, v in SMALL_NS.items()),
    "model.width=12", "model.modes=4", "model.n_train=20", "model.n_test=10", "model.batch_size=5",
    "optim.steps=60", "trainer.val_every=30", "trainer.checkpoint_every=30", "trainer.log_every=10",
    "trainer.device=cpu",
]


#: solver in the loop on Burgers through the command line, about half a minute on one core
TINY_HYBRID = [  # the preset's problem, a tenth of its data, one phase
    "experiment=hybrid_burgers", "optim=adam_cosine", "model.onestep_phase=null", "optim.lr=2e-3",
    "problem.fine_resolution=256", "problem.dt=0.0025", "model.n_train=16", "model.train_steps=40",
    "model.n_val=4", "model.val_steps=40", "model.n_test=4", "model.test_steps=80",
    "model.width=16", "model.batch_size=16", "optim.steps=250", "trainer.val_every=125",
    "trainer.checkpoint_every=125", "trainer.device=cpu", "trainer.callbacks.progress=null",
]


def sciml_environment(extra: dict | None = None) -> dict[str, str]:
    """The environment of a test's ``sciml`` call: this process's, unbuffered, without Hydra's
    full tracebacks (a test asks for them), plus ``extra``."""
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return {**environment, "PYTHONUNBUFFERED": "1", **(extra or {})}


class Zygote:
    """``tests/zygote.py``: a Python with torch, Hydra and the other libraries imported that
    forks one ``python -m sciml_cli`` per call, which saves each call the 1.5 s of those imports.
    The calls stay separate processes with their own directory, environment, umask, exit code,
    stdout and stderr, and import sciml itself afresh. ``SCIML_TEST_FRESH=1`` runs every call in
    a fresh interpreter instead; so do calls whose environment differs from the server's in
    anything but what a command reads as it runs, and tests that signal or watch a running
    process (:func:`start_train`). A server that stops answering is dropped: later calls go fresh."""

    #: environment variables a command reads as it runs (any other difference could be one a
    #: library read when the server imported it: thread counts, locale, Python's own)
    RUNTIME = {"HYDRA_FULL_ERROR", "COMP_LINE", "COMP_POINT", "TERM", "COLUMNS", "LINES", "NO_COLOR",
               "FORCE_COLOR", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
               "PYTEST_CURRENT_TEST", "SQLALCHEMY_SILENCE_UBER_WARNING",  # set by pytest, test_sweep
               "TORCHINDUCTOR_CACHE_DIR"}  # set by torch.compile in a test's own process, read when compiling
    RUNTIME_PREFIXES = ("SLURM_", "SCIML_")

    def __init__(self) -> None:
        import tempfile
        import threading

        self.lock = threading.Lock()
        self.dir = Path(tempfile.mkdtemp(prefix="sciml-zygote-"))
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] = {}
        self.calls = 0

    def start(self) -> bool:
        if os.environ.get("SCIML_TEST_FRESH") == "1" or not hasattr(os, "fork"):
            return False
        requests_r, requests_w = os.pipe()
        self.replies, replies_w = os.pipe()
        self.env = sciml_environment()
        preload_out = self.dir / "preload.out"
        with open(preload_out, "w") as out:
            self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("zygote.py")),
                                          str(requests_r), str(replies_w)], pass_fds=(requests_r, replies_w),
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=self.env)
        os.close(requests_r)
        os.close(replies_w)
        self.requests = os.fdopen(requests_w, "w")
        self.buffer = b""
        if self._reply(timeout=300) != "ready" or preload_out.read_text():  # a fresh process would show it
            self.stop()
            return False
        return True

    def _reply(self, timeout: float | None = None) -> str | None:
        """The server's next line, or None if none came within ``timeout`` seconds (or it ended)."""
        import select
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.replies], [], [], left)[0]:
                return None
            chunk = os.read(self.replies, 4096)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def stop(self) -> None:
        """End the server (killed if it does not end at once) and drop its files."""
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.requests.close()
            with contextlib.suppress(OSError):
                os.close(self.replies)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def fits(self, env: dict[str, str]) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return False
        differ = {k for k in env.keys() | self.env.keys() if env.get(k) != self.env.get(k)}
        return all(k in self.RUNTIME or k.startswith(self.RUNTIME_PREFIXES) for k in differ)

    def run(self, args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess | None:
        """The call's result, or None if the server could not start it (the caller runs it fresh)."""
        with self.lock:
            self.calls += 1
            out, err = self.dir / f"{self.calls}.out", self.dir / f"{self.calls}.err"
            umask = os.umask(0)
            os.umask(umask)
            pid = None
            try:
                self.requests.write(json.dumps({"argv": args, "cwd": str(cwd), "env": env, "umask": umask,
                                                "stdout": str(out), "stderr": str(err)}) + "\n")
                self.requests.flush()
                started = self._reply(timeout=60)
                if started is None:
                    raise ConnectionError("the test zygote did not start the call")
                pid = json.loads(started)["pid"]
                reply = self._reply(timeout)
                ended = reply is not None
                if not ended:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    reply = self._reply(timeout=60)
                if reply is None:
                    raise ConnectionError("the test zygote did not report the call's end")
                returncode = json.loads(reply)["returncode"]
                stdout, stderr = out.read_text(), err.read_text()
            except BaseException as error:
                # out of step or gone: no later call may read this one's replies
                self.stop()
                if pid is None and not isinstance(error, KeyboardInterrupt):
                    return None
                raise
            finally:
                for path in (out, err):
                    path.unlink(missing_ok=True)
        if not ended:
            raise subprocess.TimeoutExpired([*SCIML, *args], timeout, stdout, stderr)
        return subprocess.CompletedProcess([*SCIML, *args], returncode, stdout, stderr)


_zygote: Zygote | None = None


@pytest.fixture(scope="session", autouse=True)
def _sciml_zygote():
    global _zygote
    zygote = Zygote()
    _zygote = zygote if zygote.start() else None
    yield
    _zygote = None
    zygote.stop()


def run_sciml(*args: str, cwd: Path, check: bool = False, timeout: float = 300, env: dict | None = None,
              fresh: bool = False):
    """``sciml <args>`` in ``cwd`` as a separate process (forked by :class:`Zygote` unless
    ``fresh``), its output captured as text."""
    environment = sciml_environment(env)
    proc = None
    if not fresh and _zygote is not None and _zygote.fits(environment):
        proc = _zygote.run(list(args), Path(cwd).resolve(), environment, timeout)
    if proc is None:
        proc = subprocess.run([*SCIML, *args], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout, env=environment)
    if check and proc.returncode != 0:
        raise AssertionError(f"sciml {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def sciml(tmp_path):
    """Run ``sciml ...`` in a fresh directory; outputs land in ``tmp_path/outputs``."""

    def run(*args: str, **kwargs):
        return run_sciml(*args, cwd=tmp_path, **kwargs)

    run.cwd = tmp_path
    return run


@pytest.fixture(scope="session")
def _tiny_outputs(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("tiny")
    run_sciml("train", *TINY, cwd=cwd, check=True)
    return cwd / "outputs"


@pytest.fixture
def tiny_run(sciml, _tiny_outputs) -> Path:
    """A finished ``TINY`` run, trained once per session and copied into this test's directory
    (``sciml.cwd/outputs/train/heat-pinn/<stamp>``), so the test may damage it."""
    shutil.copytree(_tiny_outputs, sciml.cwd / "outputs")
    return only_run_dir(sciml.cwd / "outputs" / "train" / "heat-pinn")


def start_train(args, cwd: Path, ready, poll: float = 0.05, timeout: float = 120, **popen) -> subprocess.Popen:
    """Start ``sciml train <args> output=json`` (stdout and stderr piped, text) and return once
    ``ready()`` holds, the process has ended, or ``timeout`` seconds have passed."""
    import time

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen([*SCIML, "train", *args, "output=json"], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **popen)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(poll)
    return proc


def log_holds(base: Path, text: str):
    """A ``ready`` for :func:`start_train`: a run's log under ``base`` holds ``text``."""
    return lambda: any(text in log.read_text() for log in base.glob("*/train.log"))


def only_run_dir(base: Path) -> Path:
    runs = [p for p in base.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def write_v73(path: Path, arrays: dict, chunk_samples: int | None = None) -> None:
    """What MATLAB's ``save -v7.3`` writes: HDF5 after a 512-byte header, arrays column-major
    (written here independently of ``sciml_cli.data.export``, so a test checks one against the other)."""
    import h5py
    import numpy as np

    with h5py.File(path, "w", userblock_size=512) as f:
        for name, a in arrays.items():
            chunks = None if chunk_samples is None else a.shape[:0:-1] + (chunk_samples,)
            d = f.create_dataset(name, data=a.T, chunks=chunks)  # .T: MATLAB's (N, X) is HDF5's (X, N)
            d.attrs["MATLAB_class"] = np.bytes_("double")
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(text.ljust(116) + b"\0" * 8 + b"\x00\x02" + b"IM")


def first_logged_loss(run: Path) -> float:
    """The training loss at the first logged step of a run (step 1 with ``trainer.log_every=1``:
    the untrained model's), from the checkpoint's history."""
    from sciml_cli.training import checkpoint

    step, loss = checkpoint.load(run / "checkpoints" / "last.pt")["history"][0]
    assert step == 1, step
    return loss


def assert_figure(path: Path, min_width: int = 500, min_height: int = 350):
    """``path`` is a PNG of a figure with data drawn on it, not just a file: it decodes, has at
    least ``min_width`` x ``min_height`` pixels (our figures are 6 x 4 in or larger at 110 dpi),
    holds more than 32 colours (a blank canvas has one), and over 0.2 % of its pixels are
    coloured, as curves, bars and colour maps are; axes, ticks and text alone are grey (measured:
    0 % for empty axes, 0.5 to 37 % for our plots). Returns the ``[H, W, C]`` array."""
    import matplotlib.image
    import numpy as np

    image = matplotlib.image.imread(path)  # PNG: floats in [0, 1], RGB or RGBA
    height, width = image.shape[:2]
    assert width >= min_width and height >= min_height, (path, image.shape)
    rgb = image[..., :3]
    packed = (rgb * 255).round().astype(np.uint32).reshape(-1, 3) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)
    colours = len(np.unique(packed))
    coloured = ((rgb.max(-1) - rgb.min(-1)) > 0.3).mean()
    assert colours > 32 and coloured > 0.002, (path, colours, coloured)
    return image


# -- Diffusion: an operator problem with an exact solution at every resolution -----------------------
def coefficients(n_samples: int, channels: int, n_dims: int, band: int, seed: int):
    """Random complex Fourier coefficients ``[N, C, 2 band + 1, ...]`` for ``k_i = -band .. band``,
    decaying like ``1 / (1 + |k|^2)``, and ``|k|^2`` ``[2 band + 1, ...]``."""
    g = torch.Generator().manual_seed(seed)
    k = torch.arange(-band, band + 1, dtype=torch.float64)
    k2 = sum(torch.meshgrid(*[k**2] * n_dims, indexing="ij"))
    shape = (n_samples, channels, *k2.shape)
    c = torch.complex(torch.randn(shape, generator=g, dtype=torch.float64),
                      torch.randn(shape, generator=g, dtype=torch.float64))
    return c / (1 + k2), k2


def synthesise(c: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The real part of ``sum_k c_k exp(2 pi i k . x)`` on ``x_j = j / n`` of the unit cell:
    ``[N, C, n, ...]`` (float64), and the axis ``[n]``. The same function at every ``n``."""
    band = (c.shape[-1] - 1) // 2
    k = torch.arange(-band, band + 1, dtype=torch.float64)
    x = torch.arange(n, dtype=torch.float64) / n
    e = torch.exp(2j * math.pi * k[:, None] * x[None])  # [2 band + 1, n]
    if c.ndim == 3:
        return torch.einsum("ncp,px->ncx", c, e).real, x
    return torch.einsum("ncpq,px,qy->ncxy", c, e, e).real, x


class Diffusion(Problem, OperatorData):
    """Periodic diffusion on ``[0, 1)^d`` for a fixed time, ``u_o = exp(T_o kappa Laplacian) sum_i a_i``
    with ``T_o = (o + 1) T``: Fourier mode ``k`` of output channel ``o`` is damped by
    ``exp(-(o + 1) decay |k|^2)``, ``decay = 4 pi^2 kappa T``. Inputs are band-limited, so
    ``a`` and ``u`` are exact at every resolution."""

    def __init__(self, n_dims: int = 1, in_channels: int = 1, out_channels: int = 1, band: int = 6,
                 decay: float = 0.2, resolution: int = 64) -> None:
        super().__init__()
        self.n_dims, self.in_channels, self.out_channels = n_dims, in_channels, out_channels
        self.band, self.decay, self.resolution = band, decay, resolution
        self.calls: list[tuple[str, int, int]] = []  # (split, n_samples, resolution) asked for

    def operator_pairs(self, split, n_samples, resolution=None):
        resolution = resolution or self.resolution
        self.calls.append((split, n_samples, resolution))
        a, u, grid = self.exact(n_samples, resolution, SPLIT_SEEDS[split])
        return a.to(**self.factory), u.to(**self.factory), {k: v.to(**self.factory) for k, v in grid.items()}

    def exact(self, n_samples: int, resolution: int, seed: int):
        c, k2 = coefficients(n_samples, self.in_channels, self.n_dims, self.band, seed)
        damp = torch.stack([torch.exp(-(o + 1) * self.decay * k2) for o in range(self.out_channels)])
        a, x = synthesise(c, resolution)
        u, _ = synthesise(c.sum(1, keepdim=True) * damp, resolution)
        grid = {"x": x} if self.n_dims == 1 else {"x": x, "y": x.clone()}
        return a, u, grid

    def solve(self, resolution=None, n_samples=1, seed=0):
        a, u, grid = self.exact(n_samples, resolution or self.resolution, seed)
        return Solution({"a": a, "u": u}, grid, {"solver": "exact"})


# -- the trainer in process (test_trainer, test_optimizers) -----------------------------------
QUIET = ["trainer.callbacks.progress=null", "trainer.callbacks.tensorboard=null", "trainer.device=cpu"]
#: Adam then L-BFGS with a step-decay scheduler, in float64, a few seconds
PHASED = [
    "optim=adam_lbfgs", "optim.steps=20", "optim.lbfgs_steps=8", "model.width=12", "model.depth=2",
    "model.n_interior=128", "model.n_initial=32", "model.n_boundary=32", "model.resample_every=5",
    "trainer.dtype=float64", "trainer.val_every=10", "trainer.checkpoint_every=4", "trainer.log_every=1",
    "+optim.phases.0.scheduler._target_=torch.optim.lr_scheduler.StepLR",
    "+optim.phases.0.scheduler._partial_=true", "+optim.phases.0.scheduler.step_size=7",
    "+optim.phases.0.scheduler.gamma=0.5",
]


def build(overrides):
    cfg, _ = compose("train", [*QUIET, *overrides])
    trainer = config.instantiate(cfg.trainer)
    trainer.seed_everything()
    problem = config.instantiate(cfg.problem)
    model = config.instantiate(cfg.model, problem=problem)
    return cfg, trainer, model, problem


class SignalAt(Callback):
    """Sends a real signal to this process once the trainer has logged ``step``."""

    def __init__(self, step: int, signum: int = signal.SIGTERM):
        self.step, self.signum = step, signum

    def on_log(self, trainer, logs):
        if trainer.step == self.step:
            os.kill(os.getpid(), self.signum)


def fit(overrides, run_dir, resume=None, callbacks=()):
    cfg, trainer, model, problem = build(overrides)
    trainer.callbacks.extend(callbacks)
    summary = trainer.fit(model, problem, run_dir, "trainer: {}\n", resume=resume)
    return summary, model
