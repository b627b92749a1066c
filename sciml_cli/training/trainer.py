"""The one training loop.

Every step goes through a closure, so SGD, Adam and L-BFGS share the loop (Levenberg-Marquardt,
which steps on residuals, gets the model's residual blocks instead); optimiser *phases*
(e.g. Adam then L-BFGS) run one after the other. The loop knows nothing about the model or the
problem: it asks the model for a batch and named loss terms, weights and sums them, and steps.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import signal
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..constraints import NonNegativeInt, PositiveFloat, PositiveInt
from ..errors import ConfigError, NonFiniteLossError, SciMLError
from ..models.base import Model
from ..problems.base import Evaluation, Problem
from . import checkpoint, distributed
from .callbacks import Callback

log = logging.getLogger(__name__)
#: the run's story for its log file (train.log): start or resume, phases, validations, how it
#: ended. Only the file hears it (configs/train.yaml); without a configured handler it is silent.
run_log = logging.getLogger("sciml.run")
run_log.addHandler(logging.NullHandler())

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class Phase:
    """One optimiser phase: ``steps`` optimiser steps with ``optimizer`` (a partial taking the
    parameters) and an optional ``scheduler`` (a partial taking the optimiser), stepped once per
    optimiser step."""

    name: str
    steps: PositiveInt
    optimizer: Callable[..., torch.optim.Optimizer]
    scheduler: Callable[..., Any] | None = None


#: signals that stop a run at the next step with a checkpoint; SIGUSR1 is SLURM's warning before
#: the time limit (``--signal=USR1@<s>``, submitit's default)
STOP_SIGNALS = tuple(getattr(signal, s) for s in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, s))


class Interrupted(SciMLError):
    """SIGTERM, SIGINT or SIGUSR1: the run was checkpointed at the current step and stopped."""

    label = "stopped"

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.exit_code = 128 + signum


def _slurm_requeue() -> bool:
    """Inside a SLURM job, ask SLURM to run it again (``scontrol requeue``); whether it took."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID") and \
        f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}" or os.environ.get("SLURM_JOB_ID")
    if not job or shutil.which("scontrol") is None:
        return False
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if done.returncode != 0:
        log.warning("scontrol requeue %s failed: %s", job, done.stderr.strip())
    return done.returncode == 0


def _number(value: float) -> str:
    return f"{value:.4g}"


def _restore_scheduler(scheduler: Any, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Bring a scheduler built from the current config to the checkpoint's step by replaying it
    from the start. Unchanged, this reproduces the original run's rates exactly (schedulers
    compute each rate from the last by the same operations); with a changed config, e.g. more
    ``optim.steps`` behind a cosine ``T_max: ${optim.steps}`` or another ``optim.lr``, the rate is
    the one the new schedule has at this step, as if the run had been configured so from the
    start (loading the saved state instead would keep the old ``T_max`` and restart the cycle).
    """
    # the rates the scheduler set when it was built (loading the optimiser replaced them)
    for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
        group["lr"] = lr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "scheduler.step() before optimizer.step()"
        for _ in range(int(saved["last_epoch"])):
            scheduler.step()


def resolve_device(name: str, key: str = "trainer.device") -> torch.device:
    """``auto`` tries cuda, then mps, then cpu; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(key, f"{name!r} is not a device", ["auto", "cpu", "cuda", "mps"]) from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        raise ConfigError(key, f"{name} is not available on this machine",
                          ["auto"] + [k for k, ok in available.items() if ok])
    return device


def check_devices(devices: int, device: torch.device, key: str = "trainer.devices") -> None:
    """``devices`` processes fit this machine: one CUDA device each, or one CPU core each;
    MPS is a single device."""
    if devices <= 1:
        return
    if device.type == "cuda":
        present, what = torch.cuda.device_count(), "CUDA devices"
    elif device.type == "cpu":
        present, what = os.cpu_count() or 1, "CPU cores"
    else:
        present, what = 1, f"{device.type} devices"
    if devices > present:
        raise ConfigError(key, f"{devices} processes need {devices} {what}; this machine has {present}",
                          [str(n) for n in range(1, present + 1)])


class Trainer:
    """Runs the optimiser phases on a model and problem, with validation and checkpoints.

    Parameters
    ----------
    phases
        Optimiser phases, run in order (see :class:`Phase`).
    device
        ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    dtype
        Floating-point type of the model and the problem's tensors.
    seed
        Seeds python, numpy and torch before the model is built, and the collocation draws.
    grad_clip
        Clip the global gradient norm to this value; ``null`` disables clipping.
    val_every, log_every, checkpoint_every
        Intervals in optimiser steps. A run always validates and checkpoints at its end.
    callbacks
        Side work (progress display, TensorBoard), by name so a config can switch one off.
    threads
        CPU threads for torch's intra-op parallelism; ``null`` keeps torch's default. Small
        networks often run faster on one thread than on several.
    amp
        Run the loss under bfloat16 autocast (mixed precision) where the device supports it.
    compile
        ``torch.compile`` the model's forward pass (off by default: compiling costs start-up time).
    devices
        Data-parallel processes, one per device (:mod:`sciml_cli.training.distributed`): each
        computes the gradient on its share of the batch, and the shares' gradients are averaged.
        ``1`` unless the job was started by ``torchrun``, whose process count it then takes.
    requeue
        On SIGUSR1 (SLURM's warning before the time limit) inside a SLURM job, ask SLURM to run
        the job again after the checkpoint (``scontrol requeue``); a sweep job, or a script with
        ``resume=auto``, then resumes where it stopped. SIGTERM, SIGINT and SIGUSR1 all stop at the
        next step with a checkpoint.
    """

    def __init__(
        self,
        phases: list[Phase],
        device: str = "auto",
        dtype: Literal["float32", "float64"] = "float32",
        seed: NonNegativeInt = 0,
        grad_clip: PositiveFloat | None = None,
        val_every: PositiveInt = 500,
        log_every: PositiveInt = 10,
        checkpoint_every: PositiveInt = 500,
        callbacks: dict[str, Callback | None] | None = None,
        threads: PositiveInt | None = None,
        amp: bool = False,
        compile: bool = False,
        requeue: bool = True,
        devices: PositiveInt = 1,
    ) -> None:
        if not phases:
            raise ConfigError("optim.phases", "at least one optimiser phase is needed")
        self.phases = phases
        self.device_name, self.dtype_name = device, dtype
        self.seed, self.grad_clip = seed, grad_clip
        self.val_every, self.log_every, self.checkpoint_every = val_every, log_every, checkpoint_every
        self.callbacks = [cb for cb in (callbacks or {}).values() if cb is not None]
        if threads is not None:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        self.world = distributed.world_size()
        if self.world > 1 and devices not in (1, self.world):
            raise ConfigError("trainer.devices", f"{devices} asked for, but this job was started with {self.world} processes")
        self.devices = max(devices, self.world)
        if self.world == 1:  # ranks this process will start here; torchrun's may span machines
            check_devices(self.devices, self.device)
        self.rank = distributed.rank() if self.world > 1 else 0
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", distributed.local_rank())
        self.dtype = DTYPES[dtype]
        self.amp = amp and self._bf16_supported()
        self.compile = compile
        #: on SIGUSR1 inside a SLURM job, requeue it after the checkpoint
        self.requeue = requeue
        # progress, restored from a checkpoint on resume
        self.step = 0
        self.phase_index = 0
        self.phase_step = 0
        self.best: float = math.inf
        self.history: list[list[float]] = []  # [step, total loss] at every log step
        self.elapsed = 0.0  # wall seconds spent training, over all sessions of the run
        self.last_logs: dict[str, float] = {}
        self.last_eval: Evaluation | None = None
        self._validated_at = -1
        self._stop_signal: int | None = None

    def _bf16_supported(self) -> bool:
        if self.device.type == "cuda":
            return torch.cuda.is_bf16_supported()
        return self.device.type in ("cpu", "mps")

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    def seed_everything(self) -> None:
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)

    # -- the loop ----------------------------------------------------------------------------
    def fit(
        self,
        model: Model,
        problem: Problem,
        run_dir: Path,
        config_yaml: str,
        resume: dict[str, Any] | None = None,
        hparams: dict[str, Any] | None = None,
        choices: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Train, validate and checkpoint; returns the final metrics. ``choices``: the config
        groups the run was composed from, kept in its checkpoints for a resume to compose alike."""
        if self.world > 1:
            distributed.start(self.device)
            if self.rank != 0:  # rank 0 writes; the others compute
                self.callbacks = []
        self.model, self.problem = model.to(self.device, self.dtype), problem.to(self.device, self.dtype)
        if self.compile:
            model.compile()  # compiles __call__ in place: state_dict keys stay the same
        self.run_dir, self.config_yaml, self.choices = Path(run_dir), config_yaml, dict(choices or {})
        self.ckpt_dir = self.run_dir / "checkpoints"
        if self.rank == 0:  # a checkpoint's temporary copy left by a killed process (the command holds the run)
            for stale in self.ckpt_dir.glob(".*.pt.*.tmp"):
                stale.unlink(missing_ok=True)
        self.val_metric = problem.val_metric
        if resume is None:
            self.best = problem.worst
        self.hparams = hparams or {}
        pending_optim: dict[str, Any] | None = None
        if resume is not None:
            pending_optim = self._restore(resume)
        distributed.broadcast_([*model.parameters(), *model.buffers()])  # the same start on every rank
        if self.rank == 0:
            self._log_start(resume)
        for cb in self.callbacks:
            cb.on_fit_start(self)
        start = time.perf_counter()
        elapsed0 = self.elapsed
        try:
            with self._signals():
                for index in range(self.phase_index, len(self.phases)):
                    self.phase_index = index
                    phase = self.phases[index]
                    model.start_phase(problem, phase.name)
                    if self.rank == 0 and len(self.phases) > 1 and self.phase_step < phase.steps:
                        run_log.info("phase %d/%d, %s: steps %d to %d", index + 1, len(self.phases), phase.name,
                                     self.step + 1, self.step + phase.steps - self.phase_step)
                    # listed once per phase: walking the module tree every step cost a few per cent of a small PINN step
                    self._params = [p for p in model.parameters() if p.requires_grad]
                    self.optimizer = phase.optimizer(self._params)
                    if getattr(self.optimizer, "least_squares", False) and self.world > 1:  # e.g. a resume on more devices
                        raise ConfigError("trainer.devices", f"{phase.name} runs on one process; set trainer.devices=1")
                    self.scheduler = phase.scheduler(self.optimizer) if phase.scheduler else None
                    if pending_optim is not None:
                        # the state (moments, step counts) is the checkpoint's; the settings are
                        # this config's, so `resume=<run> optim.lr=...` takes effect
                        settings = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
                        self.optimizer.load_state_dict(pending_optim["optimizer"])
                        evolving = getattr(self.optimizer, "evolving", ())
                        for group, fresh in zip(self.optimizer.param_groups, settings):
                            group.update({k: v for k, v in fresh.items() if k not in evolving})
                        if self.scheduler is not None and pending_optim.get("scheduler") is not None:
                            _restore_scheduler(self.scheduler, self.optimizer, pending_optim["scheduler"])
                        pending_optim = None
                    while self.phase_step < phase.steps:
                        self._train_step(phase)
                        self.elapsed = elapsed0 + time.perf_counter() - start
                        if self.step % self.val_every == 0:
                            self._validate()
                        if self.step % self.checkpoint_every == 0:
                            self.save("last.pt")
                        stop = self._stop_signal is not None
                        if self.world > 1 and distributed.any_rank(stop, self.device):
                            # a signal reaches the ranks at different steps: all stop at this one
                            self._stop_signal = self._stop_signal or signal.SIGTERM
                            stop = True
                        if stop:
                            self._interrupt()
                    if index < len(self.phases) - 1:
                        self.phase_step = 0
                if self.last_eval is None or self._validated_at != self.step:
                    self._validate()
                self.elapsed = elapsed0 + time.perf_counter() - start
                self.save("last.pt")
        except BaseException as err:
            for cb in self.callbacks:  # the error that stopped the run is the one to report
                with contextlib.suppress(Exception):
                    cb.close()
            if self.rank == 0:
                level = logging.WARNING if isinstance(err, (Interrupted, KeyboardInterrupt)) else logging.ERROR
                run_log.log(level, "stopped: %s", str(err) or type(err).__name__)
            raise
        with self.signals_held():
            for cb in self.callbacks:
                cb.close()
            summary = self.summary()
            if self.rank == 0:
                run_log.info("finished at step %d after %.0f s of training; best %s %s", self.step, self.elapsed,
                             self.val_metric, _number(self.best))
            for cb in self.callbacks:
                cb.on_fit_end(self, summary)
        return summary

    def _train_step(self, phase: Phase) -> None:
        model, problem = self.model, self.problem
        batch = model.batch(problem, self.step, self.seed)
        if self.world > 1:
            batch = model.shard(batch, self.rank, self.world)
        weights = model.loss_weights
        log_now = (self.step + 1) % self.log_every == 0 or self.phase_step + 1 == phase.steps
        first: dict[str, Any] = {}

        def closure() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                terms = model.loss(problem, batch)
            # a weight of 1 multiplies nothing: one operation less per term and step
            total = sum(v if weights.get(k, 1.0) == 1.0 else weights[k] * v for k, v in terms.items())
            if self.world > 1:  # the whole batch's loss on every rank: the same NaN check, the same line search
                values = torch.stack([*(v.detach() for v in terms.values()), total.detach()])
                distributed.average_([values])
                terms = dict(zip(terms, values[:-1]))
                total_all = values[-1]
            else:
                total_all = total
            self._check_finite(terms, total_all, phase)
            total.backward()
            if self.world > 1:
                distributed.average_([p.grad for p in self._params if p.grad is not None])
            if not first:
                if self.grad_clip is not None:
                    first["grad_norm"] = torch.nn.utils.clip_grad_norm_(self._params, self.grad_clip)
                elif log_now:
                    first["grad_norm"] = torch.nn.utils.get_total_norm([p.grad for p in self._params
                                                                        if p.grad is not None])
                first["terms"] = {k: v.detach() for k, v in terms.items()}
                first["total"] = total_all.detach()
            elif self.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self._params, self.grad_clip)
            return total_all if self.world > 1 else total

        lr = self.optimizer.param_groups[0]["lr"]
        if getattr(self.optimizer, "least_squares", False):  # a Gauss-Newton step needs the residuals themselves
            blocks = model.least_squares(problem, batch)
            parts, gradient = self.optimizer.step([(f, inputs, weights.get(term, 1.0)) for term, f, inputs in blocks])
            terms: dict[str, torch.Tensor] = {}
            for (term, _, _), r in zip(blocks, parts):
                terms[term] = terms[term] + r.square().sum() if term in terms else r.square().sum()
            total = sum(weights.get(k, 1.0) * v for k, v in terms.items())
            # the step kept the weights where either is not finite: the last checkpoint is good
            grad_norm = gradient.norm()
            self._check_finite(terms, total, phase, gradient_norm=grad_norm)
            first.update(terms=terms, total=total, grad_norm=grad_norm)
        else:
            self.optimizer.step(closure)
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        self.phase_step += 1
        if log_now:
            logs = {f"loss/{k}": v.item() for k, v in first["terms"].items()}
            logs["loss/total"] = first["total"].item()
            logs["lr"] = float(lr)
            if "damping" in self.optimizer.param_groups[0]:  # Levenberg-Marquardt's, after the step
                logs["damping"] = float(self.optimizer.param_groups[0]["damping"])
            logs["grad_norm"] = first["grad_norm"].item()
            logs.update(model.scalars())
            self.last_logs = logs
            self.history.append([self.step, logs["loss/total"]])
            for cb in self.callbacks:
                cb.on_log(self, logs)

    def _check_finite(self, terms: dict[str, torch.Tensor], total: torch.Tensor, phase: Phase,
                      gradient_norm: torch.Tensor | None = None) -> None:
        """A sync point: a non-finite loss (or gradient, where given) must stop the run before
        it reaches a checkpoint."""
        what = None
        if not math.isfinite(total.item()):
            bad = next((k for k, v in terms.items() if not torch.isfinite(v).item()), "total")
            what = f"loss term '{bad}' is {terms[bad].item() if bad in terms else total.item()}"
        elif gradient_norm is not None and not math.isfinite(gradient_norm.item()):
            what = f"the gradient's norm is {gradient_norm.item()}"
        if what is not None:
            last = self.ckpt_dir / "last.pt"
            raise NonFiniteLossError(
                f"{what} at step {self.step + 1} (phase {phase.name}); "
                + (f"last good checkpoint: {last}" if last.exists() else "no checkpoint was written yet")
            )

    def _validate(self) -> None:
        if self.rank != 0:  # validation decides what rank 0 writes; it changes no training state
            self._validated_at = self.step
            return
        self.model.eval()
        evaluation = self.model.evaluate(self.problem, split="val")
        self.model.train()
        self.last_eval, self._validated_at = evaluation, self.step
        value = evaluation.metrics[self.val_metric]
        improved = self.problem.better(value, self.best)
        if improved:
            self.best = value
            self.save("best.pt")
        loss = self.last_logs.get("loss/total")
        run_log.info("step %d: loss %s, val %s %s%s", self.step, _number(loss) if loss is not None else "-",
                     self.val_metric, _number(value), " (best so far: best.pt)" if improved else "")
        for cb in self.callbacks:
            cb.on_validation(self, evaluation)

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "step": self.step,
            "phase_index": self.phase_index,
            "phase_step": self.phase_step,
            "best": self.best,
            "history": self.history,
            "elapsed": self.elapsed,
            "metrics": self.last_eval.metrics if self.last_eval else {},
            "last_logs": dict(self.last_logs),  # so a resumed run that has nothing left to do reports them
            "rng": checkpoint.rng_state(),
            "config": self.config_yaml,
            **({"choices": self.choices} if self.choices else {}),
        }

    def save(self, name: str) -> Path:
        path = self.ckpt_dir / name
        if self.rank != 0:
            return path
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise NonFiniteLossError(f"non-finite weights at step {self.step}; {path} was not overwritten")
        checkpoint.save(path, self.state_dict())
        return path

    def _restore(self, state: dict[str, Any]) -> dict[str, Any]:
        self.model.load_state_dict(state["model"])
        self.step, self.phase_index, self.phase_step = state["step"], state["phase_index"], state["phase_step"]
        if self.phase_index >= len(self.phases):
            raise ConfigError("resume", f"the checkpoint is in phase {self.phase_index + 1} but optim has {len(self.phases)}")
        self.best, self.history, self.elapsed = state["best"], list(state["history"]), state["elapsed"]
        self.last_logs = dict(state.get("last_logs", {}))
        checkpoint.set_rng_state(state["rng"])
        return {"optimizer": state["optimizer"], "scheduler": state["scheduler"]}

    def _log_start(self, resume: dict[str, Any] | None) -> None:
        model, problem = self.model, self.problem
        n = sum(p.numel() for p in model.parameters())
        what = (f"{type(model).__name__} on {type(problem).__name__}, {n:,} parameters, {self.device} "
                f"{str(self.dtype).removeprefix('torch.')}" + (f", {self.world} processes" if self.world > 1 else "")
                + ", phases " + ", ".join(f"{p.name} {p.steps}" for p in self.phases))
        if resume is None:
            run_log.info("started: %s; %d steps, seed %d", what, self.total_steps, self.seed)
        else:
            run_log.info("resumed at step %d of %d: %s", self.step, self.total_steps, what)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.step, "wall_time_s": round(self.elapsed, 3)}
        out.update({k: v for k, v in self.last_logs.items() if k.startswith("loss/")})
        if self.last_eval is not None:
            out.update({f"val/{k}": v for k, v in self.last_eval.metrics.items()})
        out[f"best/{self.val_metric}"] = self.best
        return out

    # -- signals -----------------------------------------------------------------------------
    @contextmanager
    def _signals(self) -> Iterator[None]:
        def handler(signum, frame):
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C stops at once
            self._stop_signal = signum

        previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def signals_held(self) -> contextlib.AbstractContextManager[None]:
        """Stop signals wait while a finished run writes its last files (a second Ctrl-C still
        stops at once): a run stopped at its very end then ends finished, not half-written."""
        return self._signals()

    def _interrupt(self) -> None:
        path = self.save("last.pt")
        name = signal.Signals(self._stop_signal).name
        requeued = (self._stop_signal == getattr(signal, "SIGUSR1", None) and self.requeue and self.rank == 0
                    and _slurm_requeue())
        then = ("SLURM requeued the job: it resumes in this run directory" if requeued
                else f"Resume with: sciml train resume={path}")
        raise Interrupted(self._stop_signal, f"{name} at step {self.step}/{self.total_steps}; checkpoint saved to {path}. {then}")
