"""``sciml train``: compose model, problem, optim and trainer; train; write the run directory."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from .. import config, output, rundir
from ..errors import (
    ConfigError,
    DiskFullError,
    SciMLError,
    disk_full,
    full_error,
    no_space,
    report,
)
from . import (
    GROUPS,
    PRIMARY,
    check_compatible,
    check_writable,
    compose,
    expand,
    parse_overrides,
    run_app,
)

RESUME_GROUPS = ("model", "problem")
#: the group choices a checkpoint keeps, so that a resume composes the run's groups, not the defaults
RUN_GROUPS = ("model", "problem", "optim", "trainer", "experiment")


#: launchers whose jobs run on this machine, so this machine's devices must serve every job
LOCAL_LAUNCHERS = ("basic", "joblib", "submitit_local")


def preflight(overrides: list[str], config_name: str = "train") -> list[str] | None:
    """Compose and check every job before Hydra creates any directory; for a resumed
    data-parallel run without ``trainer.devices``, the run's own count as an extra override."""
    launcher = next((line.split("=", 1)[1] for line in overrides if line.lstrip("+").startswith("hydra/launcher=")),
                    "basic")
    restored, found = _run_choices(overrides, config_name)  # a resume is one job of `train`
    for job in expand([*restored, *overrides], config_name):
        cfg, choices = compose(config_name, job)
        config.check(cfg)
        check_writable("paths.outputs", str(cfg.paths.outputs))
        if cfg.get("resume") is None:  # a resumed run builds from its checkpoint's config, below
            check_compatible(cfg)
        _check_phases(cfg)
        if config_name == "train" or launcher in LOCAL_LAUNCHERS:  # a cluster's jobs run elsewhere (a GPU node)
            from ..training.trainer import check_devices, resolve_device

            check_devices(int(cfg.trainer.get("devices", 1)), resolve_device(str(cfg.trainer.device)))
        if cfg.get("init") is not None and cfg.get("resume") is None:
            _init_state(cfg, check=True)
        if cfg.get("resume") is not None:
            if config_name != "train":
                raise ConfigError("resume", "a sweep cannot resume; resume its runs one by one")
            path, state = found or _resume_state(str(cfg.resume), lambda: _auto_base(cfg, choices))
            merged = _check_resume(cfg, job, path, state)
            devices = int(merged.trainer.get("devices", 1))
            if devices > 1 and not any(o.lstrip("+").startswith("trainer.devices=") for o in job):
                restored.append(f"trainer.devices={devices}")  # the bare `resume=<run>` a stop prints keeps its processes
            steps = sum(int(phase.steps) for phase in merged.optim.phases)
            if (state["step"] >= steps and _finished_result(path.resolve().parent.parent) is not None
                    and not any(o.startswith("hydra.output_subdir=") for o in job)):
                restored.append("hydra.output_subdir=null")  # nothing to train: Hydra leaves the run's .hydra/ alone
            return restored or None
    return None


def _run_choices(overrides: list[str], config_name: str) -> tuple[list[str], tuple[Path, dict[str, Any]] | None]:
    """For a resume, the run's own group choices that ``overrides`` do not name, as overrides,
    and its checkpoint (``(path, state)``, read once for every check). Composed with the
    defaults instead, a key of the run's optimiser (``optim.lbfgs_steps`` of ``adam_lbfgs``)
    would be "no such key" on resume. Naming an ``experiment`` keeps the command's composition
    (its groups are checked against the run's); checkpoints written before the choices were
    kept restore none."""
    parsed = parse_overrides(overrides)
    given = {o.key_or_group for o in parsed}
    resume = next((str(o.value()) for o in parsed if o.key_or_group == "resume"), None)
    if config_name != "train" or resume in (None, "null"):
        return [], None
    # resume=auto finds its run by the command's problem and model: compose those alone
    keep = [line for line, o in zip(overrides, parsed)
            if o.key_or_group in GROUPS or o.key_or_group.startswith(("paths.", "hydra")) or o.key_or_group == "resume"]
    path, state = _resume_state(resume, lambda: _auto_base(*compose(config_name, keep)))
    if "experiment" in given or PRIMARY:  # a config given whole (a sweep's best.yaml) has no groups to choose
        return [], (path, state)
    saved = dict(state.get("choices") or {})
    if given & set(RUN_GROUPS):  # the run's experiment would set its keys on the group named here
        saved.pop("experiment", None)
    # an option since renamed or removed is not restored: the run's stored config still is the run
    return [f"{g}={saved[g]}" for g in RUN_GROUPS
            if saved.get(g) and g not in given and saved[g] in config.group_options(g)], (path, state)


def _auto_base(cfg: DictConfig, choices: dict[str, str]) -> Path:
    """Where ``resume=auto`` looks for the newest run: ``<outputs>/train/<problem>-<model>``."""
    return Path(cfg.paths.outputs) / "train" / f"{choices['problem']}-{choices['model']}"


def _resume_state(resume: str, auto_base: Callable[[], Path]) -> tuple[Path, dict[str, Any]]:
    """The checkpoint meant by ``resume=auto|<run dir>|<file>`` and its contents (format and
    checksum checked), or a config error on ``resume``."""
    from ..errors import CheckpointError
    from ..training import checkpoint

    if resume == "auto":
        base = auto_base()
        run = rundir.newest_run(base)
        if run is None:
            raise ConfigError("resume", f"resume=auto found no run with a checkpoint under {base}")
        path = rundir.resume_checkpoint("auto", run)
        _check_not_held(run)
        if not path.is_file():
            raise ConfigError("resume", f"resume=auto: the newest run, {run}, stopped before its first checkpoint, "
                                        "so nothing of it can be resumed; train afresh (no resume), or name "
                                        "an older run: resume=<run dir>")
    else:
        path = rundir.resume_checkpoint(resume)
        if not path.is_file():
            raise ConfigError("resume", f"no checkpoint at {path}", ["auto", "<run dir>", "<checkpoint file>"])
        if path.parent.name == "checkpoints":
            _check_not_held(path.parent.parent)
    try:
        return path, checkpoint.load(path)
    except CheckpointError as err:
        raise ConfigError("resume", str(err)) from None


def _check_not_held(run: Path, key: str = "resume") -> None:
    who = rundir.holder(run)
    if who is not None:
        raise _in_use(key, run, who)


def _in_use(key: str, run: Path, who: Any) -> ConfigError:
    return ConfigError(key, f"{run} is being trained by {who}; wait for it to end, or stop it "
                            "(SIGTERM checkpoints it) and resume then")


def _check_phases(cfg: DictConfig) -> None:
    """Build each phase's optimiser and scheduler on a dummy parameter, so torch's own argument
    checks (e.g. Nesterov without momentum) fail now, not after the run directory exists."""
    import torch
    from hydra.utils import instantiate

    for i, phase in enumerate(cfg.optim.phases):
        key = f"optim.phases.{i}"
        try:
            optimizer = instantiate(phase.optimizer)([torch.nn.Parameter(torch.zeros(1))])
            if phase.get("scheduler") is not None:
                key += ".scheduler"
                scheduler = instantiate(phase.scheduler)(optimizer)
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    raise ValueError("ReduceLROnPlateau needs a metric at every step; the trainer "
                                     "steps schedulers by optimiser step (use StepLR, CosineAnnealingLR, ...)")
        except Exception as err:
            cause = err.__cause__ or err
            message = str(cause).strip().splitlines()[0]
            raise ConfigError(_blamed_key(phase, key, message), message) from None


#: torch's optimisers' argument checks, by the argument they name
_TORCH_ARGUMENT_ERRORS = {"Invalid beta parameter": "betas", "Invalid learning rate": "lr",
                          "Invalid epsilon value": "eps", "Invalid weight_decay value": "weight_decay",
                          "Invalid momentum value": "momentum", "Invalid dampening value": "dampening"}


def _blamed_key(phase: DictConfig, key: str, message: str) -> str:
    """The key the user typed for the optimiser argument ``message`` names: ``optim.betas`` when
    the phase takes ``betas: ${optim.betas}``, else the phase's own key; ``key`` when none is named."""
    argument = next((a for prefix, a in _TORCH_ARGUMENT_ERRORS.items() if message.startswith(prefix)), None)
    if argument is None or argument not in phase.optimizer:
        return key
    raw = OmegaConf.to_container(phase.optimizer, resolve=False).get(argument)
    m = re.fullmatch(r"\$\{([\w.]+)\}", raw) if isinstance(raw, str) else None
    return m.group(1) if m else f"{key}.optimizer.{argument}"


def _check_resume(cfg: DictConfig, overrides: list[str], path: Path, state: dict[str, Any]) -> DictConfig:
    """The model of the checkpoint's config with this command's overrides takes its weights, its
    finished phases keep their lengths, its devices exist: all before anything is written.
    Returns that resumed config."""
    merged = _resumed_config(state["config"], cfg, overrides)
    config.check(merged)
    _check_finished_phases(merged, OmegaConf.create(state["config"]), state["phase_index"])
    from ..training.trainer import check_devices, resolve_device

    devices = int(merged.trainer.get("devices", 1))
    check_devices(devices, resolve_device(str(merged.trainer.device)))
    _check_weights_fit(merged, state["model"], "resume", f"the weights in {path} do not fit the model with these overrides")
    return merged


def _check_finished_phases(merged: DictConfig, saved: DictConfig, index: int) -> None:
    """A resumed run continues phase ``index``: the phases before it are done, so changing their
    length would change nothing (the run would not go back); only the current and later phases can."""
    for i, (now, then) in enumerate(zip(list(merged.optim.phases)[:index], list(saved.optim.phases)[:index])):
        if int(now.steps) != int(then.steps):
            raise ConfigError(f"optim.phases.{i}.steps", f"phase {i + 1} ({then.name}) of this run is finished after "
                              f"{int(then.steps)} steps and cannot become {int(now.steps)}; the run is in phase "
                              f"{index + 1}, whose steps (and later phases') can change")


def _check_weights_fit(cfg: DictConfig, weights: dict[str, Any], key: str, message: str) -> None:
    """The model of ``cfg`` takes ``weights``, else a config error on ``key``: ``message`` and why."""
    problem = config.instantiate(cfg.problem)
    model = config.instantiate(cfg.model, problem=problem)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise ConfigError(key, f"{message}: {str(err).strip().splitlines()[-1].strip()[:200]}") from None


def _init_state(cfg: DictConfig, check: bool = False) -> tuple[Path, dict[str, Any]]:
    """``(path, weights)`` of ``init=<run dir>|<checkpoint>`` (a run directory means its
    ``best.pt``); with ``check``, also that they load into this config's model."""
    from ..errors import CheckpointError
    from ..training import checkpoint

    path = Path(str(cfg.init))
    if path.is_dir():
        path = path / "checkpoints" / "best.pt"
    try:
        state = checkpoint.load(path)
    except CheckpointError as err:
        raise ConfigError("init", str(err), ["<run dir>", "<checkpoint file>"]) from None
    if check:
        _check_weights_fit(cfg, state["model"], "init", f"the weights in {path} do not fit this model")
    return path, state["model"]


def _flat(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Scalars of the config for TensorBoard's hparams (lists become strings)."""
    out: dict[str, Any] = {}
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            if str(k).startswith("_") or k in ("callbacks", "paths"):
                continue
            out.update(_flat(v, f"{prefix}{k}." if prefix or k else ""))
        return out
    key = prefix.rstrip(".")
    if isinstance(cfg, (bool, int, float, str)):
        out[key] = cfg
    elif isinstance(cfg, list):
        out[key] = str(cfg)
    return out


def _resumed_config(saved_yaml: str, composed: DictConfig, overrides: list[str]) -> DictConfig:
    """The checkpoint's config with this command's explicit ``key=value`` overrides on top."""
    try:
        saved = OmegaConf.create(saved_yaml)
    except Exception as err:  # a damaged or hand-edited config: one line, not a parser traceback
        raise ConfigError("resume", f"the checkpoint's stored config is not valid YAML: {str(err).splitlines()[0][:160]}") from None
    parsed = parse_overrides(overrides)
    # only a group this command names (itself or through an experiment) can disagree with the run:
    # a bare `sciml train resume=<run>` keeps the run's groups, whatever the defaults are
    chosen = {o.key_or_group for o in parsed}
    for group in RESUME_GROUPS:
        if (group in chosen or "experiment" in chosen) and composed[group]._target_ != saved[group]._target_:
            raise ConfigError(group, f"a resumed run keeps its {group} ({saved[group]._target_})")
    if {"optim", "experiment"} & chosen:  # the groups are not applied: one naming other phases would be ignored
        theirs, mine = ([str(p.name) for p in c.optim.phases] for c in (saved, composed))
        if mine != theirs:
            raise ConfigError("optim", f"a resumed run keeps its phases ({', '.join(theirs)}), not "
                                       f"{', '.join(mine)}; change their keys instead (e.g. optim.steps=...)")
    for o in parsed:
        key = o.key_or_group
        if key == "resume" or key in GROUPS or key.startswith("hydra"):
            continue
        OmegaConf.update(saved, key, OmegaConf.select(composed, key), merge=False)
    saved.resume = composed.resume
    return saved


def _train(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    import signal

    from ..training.trainer import STOP_SIGNALS
    from . import PENDING_SIGNALS

    # before the training loop (set-up, data generation) a stop signal ends the command with one
    # line and its result (the loop has its own handlers, and holds signals while writing)
    stop = _stopped_outside_the_loop(run_dir)
    if PENDING_SIGNALS:  # one that came while Hydra made the run directory
        stop(PENDING_SIGNALS.pop(), None)
    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        return _train_run(cfg, run_dir, overrides)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _stopped_outside_the_loop(run_dir: Path) -> Callable[[int, Any], None]:
    import signal

    from ..training.trainer import Interrupted

    def handler(signum: int, frame: Any) -> None:
        last = run_dir / "checkpoints" / "last.pt"
        then = (f"resume with: sciml train resume={run_dir}" if last.is_file() else
                "no checkpoint was written yet, so the run directory is removed")
        raise Interrupted(signum, f"{signal.Signals(signum).name} outside the training loop; {then}")

    return handler


def _train_run(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    from .. import plotting, progress
    from ..training import checkpoint, distributed

    writer = distributed.rank() == 0  # in data-parallel training the other ranks write nothing

    # quiet training means quiet data generation too
    progress.enable(OmegaConf.select(cfg, "trainer.callbacks.progress") is not None)

    resume_state = None
    if cfg.resume is not None:
        ckpt = rundir.resume_checkpoint(str(cfg.resume), run_dir)
        resume_state = checkpoint.load(ckpt)
        cfg = _resumed_config(resume_state["config"], cfg, overrides)
        config.check(cfg)

    # before instantiating: Hydra resolves the nodes an interpolation points to in place
    # (trainer.phases -> optim.phases), which would freeze e.g. a phase's ${optim.steps}
    config_yaml = OmegaConf.to_yaml(cfg)
    trainer = config.instantiate(cfg.trainer)
    if resume_state is not None:
        step = resume_state["step"]
        done = _finished_result(run_dir) if step >= trainer.total_steps else None
        if done is not None:  # validating and saving again would only add TensorBoard events and rewrite files
            if writer:
                print(f"sciml: {run_dir} already finished its {step} steps; its metrics stand (to train on: "
                      f"resume={run_dir} optim.steps=<more than {step}>)", file=sys.stderr)
            return done
        if writer:  # a sweep's summary reads the config back: never half-written
            checkpoint.atomic_write(run_dir / ".hydra" / "config.yaml", lambda tmp: Path(tmp).write_text(config_yaml))
            print(f"resuming {run_dir} from {ckpt} (step {step})", file=sys.stderr)
    trainer.seed_everything()
    problem = config.instantiate(cfg.problem)
    model = config.instantiate(cfg.model, problem=problem)
    init_from = None
    if cfg.get("init") is not None and resume_state is None:  # a resumed run has its own weights
        init_from, weights = _init_state(cfg)
        model.load_state_dict(weights)
    pinned = problem.pinned_arguments()
    if pinned:  # e.g. a data file's absolute path and checksum: eval and resume read the same bytes
        stored = OmegaConf.create(config_yaml)
        for key, value in pinned.items():
            stored.problem[key] = value
        config_yaml = OmegaConf.to_yaml(stored)

    info = {**rundir.provenance(), "device": str(trainer.device), "dtype": trainer.dtype_name,
            "seed": trainer.seed, "status": "running", "resumed_from_step": resume_state and resume_state["step"]}
    if init_from is not None:
        info["init_from"] = str(init_from.resolve())
    if problem.provenance():
        info["data"] = problem.provenance()
    if trainer.devices > 1:
        info["devices"] = trainer.devices
    if writer:
        rundir.write_json(run_dir / "run.json", info)
    container = OmegaConf.to_container(cfg, resolve=True)
    if resume_state is not None:  # the run's own; a run from before they were kept has none
        choices = resume_state.get("choices")
    else:
        from hydra.core.hydra_config import HydraConfig

        choices = {g: c for g, c in HydraConfig.get().runtime.choices.items() if g in RUN_GROUPS and c is not None}
    try:
        summary = trainer.fit(model, problem, run_dir, config_yaml, resume=resume_state, choices=choices,
                              hparams=_flat({k: container[k] for k in ("model", "problem", "optim")}))
    except BaseException as err:  # any exit Python sees leaves run.json saying how the run ended
        if not writer:
            raise
        interrupted = isinstance(err, KeyboardInterrupt) or getattr(err, "exit_code", 1) >= 128
        if not isinstance(err, SciMLError) and no_space(err):  # a library's write (TensorBoard, a plot)
            err = disk_full(run_dir, err)
        if isinstance(err, DiskFullError):
            last = run_dir / "checkpoints" / "last.pt"
            err = DiskFullError(f"{err}; " + (f"the last good checkpoint {last} is intact: free some space, then "
                                              f"`sciml train resume={run_dir}`" if last.is_file() else
                                              "no checkpoint was written yet"))
        message = str(err) if isinstance(err, SciMLError) else f"{type(err).__name__}: {err}"
        try:
            rundir.write_json(run_dir / "run.json", {**info, "status": "interrupted" if interrupted else "failed",
                                                     "error": message, "wall_time_s": round(trainer.elapsed, 3)})
        except DiskFullError:  # no room for a second copy: overwrite the small file in place
            with contextlib.suppress(OSError):
                rundir.overwrite_json(run_dir / "run.json", {**info, "status": "failed", "error": message,
                                                             "wall_time_s": round(trainer.elapsed, 3)})
        if isinstance(err, DiskFullError):
            raise err from None
        raise
    finally:
        distributed.stop()
    metrics = {"status": "finished", "val_metric": problem.val_metric, "val_direction": problem.val_direction, **summary}
    if not writer:
        return metrics
    with trainer.signals_held():
        if trainer.last_eval is not None:  # the model's own figures of its last validation
            for key, fig in model.figures(problem, trainer.last_eval, f"step {trainer.step}").items():
                plotting.save(fig, run_dir / "plots" / (f"prediction_{key}.png" if key else "prediction.png"))
        plotting.save(plotting.loss_figure(trainer.history), run_dir / "plots" / "loss.png")
        rundir.write_json(run_dir / "metrics.json", metrics)
        rundir.write_json(run_dir / "run.json", {**info, "status": "finished", "wall_time_s": summary["wall_time_s"]})
    return metrics


#: config sections that must agree for a sweep job to continue the run already in its directory
_JOB_SECTIONS = ("model", "problem", "optim", "trainer")


def _continue_job(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """A sweep job whose directory already holds its run (a requeued or relaunched job: its
    directory is a function of the sweep directory and the job number): resume that run, or,
    if it finished, return its metrics without training again. ``None``: train."""
    last = run_dir / "checkpoints" / "last.pt"
    if cfg.resume is not None or not last.is_file():
        return None
    from ..training import checkpoint

    try:
        saved = OmegaConf.create(checkpoint.load(last)["config"])
    except Exception as err:  # a damaged checkpoint: the job cannot continue it, and must not overwrite it
        raise ConfigError("hydra.sweep.dir", f"{run_dir} holds a checkpoint that does not load ({err}); "
                                             "move it away or use a new sweep directory") from None
    for section in _JOB_SECTIONS:
        mine = OmegaConf.to_container(cfg[section], resolve=False)
        theirs = OmegaConf.to_container(saved[section], resolve=False)
        if section == "problem":  # a data file's path and checksum are pinned at training time
            for key in ("path", "sha256"):
                mine.pop(key, None), theirs.pop(key, None)
        if mine != theirs:
            raise ConfigError("hydra.sweep.dir", f"{run_dir} holds a run of other {section} settings; "
                                                 "use a new sweep directory")
    result = _finished_result(run_dir)
    if result is not None:
        print(f"sciml: job in {run_dir} already finished; its metrics stand", file=sys.stderr)
        return result
    with open_dict(cfg):
        cfg.resume = str(run_dir)
    return None


def _finished_result(run_dir: Path) -> dict[str, Any] | None:
    """The metrics of a run that wrote all its final files (``run.json`` and ``metrics.json``
    say finished), else ``None``: a run killed while writing them is finished by training again."""
    import json

    try:
        info = json.loads((run_dir / "run.json").read_text())
        result = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return result if info.get("status") == result.get("status") == "finished" else None


def _terminate_with_parent() -> None:
    """In a child before it starts (Linux): SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the ranks then outlive a killed parent
        pass


def _launch_ranks(cfg: DictConfig, run_dir: Path, overrides: list[str], n: int) -> tuple[int, str | None]:
    """Run this training in ``n`` processes on this machine (``trainer.devices=n``), with the
    environment ``torchrun`` would give them, all in ``run_dir``; returns rank 0's exit code (or
    the first failure's) and, for a failure, its message. Signals reach every rank; a rank that
    fails stops the others."""
    import os
    import signal
    import socket
    import subprocess
    import tempfile
    import time

    from ..training.distributed import STOP_GRACE_S

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    skip = ("hydra.run.dir=", "output=", "resume=")
    args = [o for o in overrides if not o.lstrip("+").startswith(skip)] + [f"hydra.run.dir={run_dir}"]
    if cfg.resume is not None:
        args.append(f"resume={run_dir if str(cfg.resume) == 'auto' else cfg.resume}")
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(n),
            rundir.HELD_ENV: str(run_dir.resolve())}  # this process holds the run for its ranks
    if cfg.trainer.device != "cuda" and "OMP_NUM_THREADS" not in os.environ:
        # the cores shared out: ranks that each spin up every core's thread slow each other 10x
        base["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(1, n)]
    result = tempfile.TemporaryFile(mode="w+")  # rank 0's JSON object: the error a failure names
    # the parent wrote .hydra/ and opened the log (train.log, a sweep job's sweep.log), which rank 0
    # appends to (run_app quiets the others)
    from hydra.core.hydra_config import HydraConfig

    args += ["hydra.output_subdir=null", f"hydra.job.name={HydraConfig.get().job.name}"]
    # each rank in a session of its own: a Ctrl-C at the terminal reaches the parent alone, which
    # passes it on once (a rank that got it twice would take it for a second Ctrl-C and stop
    # without a checkpoint); a rank whose parent dies is sent SIGTERM, so it checkpoints and stops
    procs = [subprocess.Popen([sys.executable, "-m", "sciml_cli", "train", *args, "output=json" if rank == 0 else "output=text"],
                              stdout=result if rank == 0 else subprocess.DEVNULL,
                              stderr=None if rank == 0 else logs[rank - 1],
                              env={**base, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                              start_new_session=True, preexec_fn=_terminate_with_parent) for rank in range(n)]

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    stops = [s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None)) if s is not None]
    previous = {s: signal.signal(s, forward) for s in stops}
    from . import PENDING_SIGNALS

    while PENDING_SIGNALS:  # one that came while Hydra made the run directory
        forward(PENDING_SIGNALS.pop(), None)
    try:
        failed_at = None
        while any(p.poll() is None for p in procs):
            if failed_at is None and any(p.poll() not in (None, 0) for p in procs):
                failed_at = time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > STOP_GRACE_S:
                for p in procs:  # the others wait in a collective that will never complete
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.1)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    codes = [p.returncode for p in procs]
    result.seek(0)
    lines = result.read().splitlines()
    try:
        error = json.loads(lines[-1]).get("error") if lines else None
    except ValueError:
        error = None
    if codes[0] == 0 and any(codes):  # a rank failed where rank 0 did not say why: its last line
        rank = next(i for i, c in enumerate(codes) if c)
        logs[rank - 1].seek(0)
        lines = [ln for ln in logs[rank - 1].read().splitlines() if ln.strip()]
        error = f"rank {rank} failed (exit {codes[rank]}): {lines[-1] if lines else ''}"
        sys.stderr.write(f"sciml: error: {error}\n")
    for f in [*logs, result]:
        f.close()
    code = codes[0] if codes[0] > 0 else next((c if c > 0 else 128 - c for c in codes if c), 0)
    return code, error if code else None


def task(cfg: DictConfig) -> float | None:
    """The Hydra task of ``train`` and of every ``sweep`` job; returns the validation metric
    (what a sweeper such as Optuna optimises, in the problem's ``val_direction``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from ..training import distributed

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    # a config given whole (--config-name best) has no group choices: name it by its classes
    name = "-".join(str(hc.runtime.choices.get(group) or str(cfg[group]._target_).rpartition(".")[2].lower())
                    for group in ("problem", "model"))
    if cfg.resume is not None and not multirun and run_dir.parent.parent.name == "train":
        name = run_dir.parent.name  # the run's own name (train/<problem>-<model>/<time>); a moved run keeps its groups
    if not multirun:
        output.context(run_dir=str(run_dir), name=name)
    with contextlib.ExitStack() as held:
        try:
            if distributed.rank() == 0:  # rank 0, or the process that starts the ranks, owns the run
                try:
                    held.enter_context(rundir.hold(run_dir))
                except rundir.RunInUse as err:
                    raise _in_use("hydra.sweep.dir" if multirun else "resume", run_dir, err) from None
            done = _continue_job(cfg, run_dir) if multirun else None
        except ConfigError as err:  # the directory holds another run: stop, leave the run as it is
            if full_error():
                raise
            sys.exit(report(err))
        return _task(cfg, hc, run_dir, name, multirun, done)


def _task(cfg: DictConfig, hc: Any, run_dir: Path, name: str, multirun: bool, done: dict[str, Any] | None) -> float | None:
    from ..training import distributed
    from ..training.trainer import Interrupted

    try:
        if done is not None:
            return done.get(f"val/{done['val_metric']}")
        devices = int(cfg.trainer.get("devices", 1))
        if devices > 1 and distributed.world_size() == 1:  # start the ranks; rank 0 writes the run
            code, error = _launch_ranks(cfg, run_dir, list(hc.overrides.task), devices)
            if code:
                if multirun and code < 128:
                    rundir.write_json(run_dir / "metrics.json", {"status": "failed", "error": error or f"exit {code}"})
                    return None
                if error:
                    output.note_error(error)
                sys.exit(code)
            metrics = json.loads((run_dir / "metrics.json").read_text())
        else:
            metrics = _train(cfg, run_dir, list(hc.overrides.task))
    except SciMLError as err:
        if isinstance(err, (ConfigError, Interrupted)) and cfg.resume is None and not (run_dir / "checkpoints").exists():
            # nothing that looks like a result; a stopped run's empty directory would be the
            # newest run that `resume=auto` cannot resume
            shutil.rmtree(run_dir, ignore_errors=True)
        if full_error():
            raise
        code = report(err)
        if multirun and code < 128:  # one failed job does not stop the sweep; a signal does
            rundir.write_json(run_dir / "metrics.json", {"status": "failed", "error": str(err)})
            return None
        sys.exit(code)
    except Exception as err:
        if not multirun or full_error():
            raise  # a bug: the traceback is what helps
        # a sweep records the job as failed and goes on; the summary lists it
        message = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        sys.stderr.write(f"sciml: error: job {hc.job.num} failed: {message}\n")
        rundir.write_json(run_dir / "metrics.json", {"status": "failed", "error": message})
        return None
    key = f"val/{metrics['val_metric']}"
    value = metrics.get(key)
    if distributed.rank() > 0:  # rank 0 reports the job
        return value
    # the one line a script reads, in quiet mode too (quiet means no progress bar)
    score = f", {key} {output.number(value, metrics['val_direction'])}" if value is not None else ""
    line = f"sciml train: finished {name} in {metrics['wall_time_s']:.0f} s{score}, run {run_dir}"
    if multirun:
        output.job_line(line)
    else:
        output.emit(line, metrics={k: v for k, v in metrics.items() if k != "status"})
    return value


@hydra.main(version_base="1.3", config_path=str(config.CONFIG_DIR), config_name="train")
def _app(cfg: DictConfig) -> float | None:
    return task(cfg)


def main(args: list[str]) -> int:
    return run_app("train", _app, args, preflight)
