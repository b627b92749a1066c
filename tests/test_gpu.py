"""The trainer's CUDA paths through the real command: bf16 autocast, torch.compile, resume, and
a short training of every paradigm.

Skipped without a CUDA device (``-m gpu`` selects them)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import QUIET, TINY, TINY_FNO, TINY_HYBRID, TINY_NS, only_run_dir

from sciml_cli.data.hdf5 import read_solution

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def on_cuda(overrides: list[str]) -> list[str]:
    return [o for o in overrides if not o.startswith("trainer.device=")] + ["trainer.device=cuda"]


@pytest.mark.parametrize("flags", [[], ["trainer.amp=true"], ["trainer.compile=true"]], ids=["fp32", "amp", "compile"])
def test_fno_burgers_trains_and_evaluates_on_cuda(sciml, flags):
    proc = sciml("train", *on_cuda(TINY_FNO), *flags, timeout=600)
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "burgers-fno")
    assert json.loads((run / "run.json").read_text())["device"] == "cuda"
    metrics = json.loads((run / "metrics.json").read_text())
    # learning, as on the CPU: past the heat-equation baseline the data store (test_fno_cli)
    (val_file,) = (sciml.cwd / "outputs" / "data").glob("burgers-val-*.h5")
    baseline = read_solution(val_file).attrs["baseline_heat_rel_l2"]
    assert metrics["val/rel_l2"] < baseline
    proc = sciml("eval", f"run={run}", "device=cuda")
    assert proc.returncode == 0, proc.stderr
    on_gpu = json.loads((run / "eval.json").read_text())
    assert on_gpu["device"].startswith("cuda")
    # the same checkpoint scored on the CPU: eval runs float32 without autocast or compile, and
    # matmuls do not use TF32 by default, so only round-off in the FFTs and sums differs
    proc = sciml("eval", f"run={run}", "device=cpu")
    assert proc.returncode == 0, proc.stderr
    on_cpu = json.loads((run / "eval.json").read_text())
    assert on_cpu["device"] == "cpu"
    assert on_gpu["metrics"]["rel_l2"] == pytest.approx(on_cpu["metrics"]["rel_l2"], rel=1e-3)
    assert on_gpu["metrics"]["rel_l2"] < on_gpu["baselines"]["heat_equation_rel_l2"]


def test_autoregressive_fno_trains_under_bf16_autocast_on_cuda(sciml):
    proc = sciml("train", *on_cuda(TINY_NS), "trainer.amp=true", timeout=600)
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "navier_stokes-fno")
    proc = sciml("eval", f"run={run}", "device=cuda", timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "eval.json").read_text())
    # bf16 in the pointwise layers: learning, if less far than the float32 CPU test (0.7x)
    assert result["metrics"]["rel_l2"] < result["baselines"]["persistence_rel_l2"]


def test_a_cuda_run_resumes_to_the_same_step_count(sciml):
    proc = sciml("train", *on_cuda(TINY_FNO), "optim.steps=20", timeout=600)
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "burgers-fno")
    proc = sciml("train", *on_cuda(TINY_FNO), f"resume={run}", "optim.steps=40", timeout=600)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 40 and json.loads((run / "run.json").read_text())["resumed_from_step"] == 20


_CT = ["problem=ct", "problem.size=32", "problem.n_val=4", "problem.n_test=4", "problem.baseline_iterations=200",
       "model.batch_size=4", "optim=adam_cosine", "optim.steps=20", "trainer.val_every=10"]
#: one short training of each paradigm beside the FNO: (model directory, overrides)
PARADIGMS = {
    "pinn": ("heat-pinn", [*TINY, "model.derivatives=taylor"]),
    "drm": ("poisson-drm", ["model=drm", "problem=poisson", "problem.solution=steady_heat", "model.network=mlp",
                            "model.width=20", "model.depth=3", "model.hard_constraints=true", "model.n_interior=1000",
                            "optim=adam_cosine", "optim.steps=100", "trainer.val_every=50", "trainer.dtype=float64",
                            "problem.resolution=65"]),
    "neural_ode": ("lotka_volterra-neural_ode", ["experiment=node_lotka_volterra", "optim.steps=40",
                                                 "optim.lbfgs_steps=3", "trainer.val_every=20"]),
    "ude": ("lotka_volterra-ude", ["experiment=ude_lotka_volterra", "optim.steps=40", "optim.refit_steps=3",
                                   "trainer.val_every=20"]),
    "hybrid": ("burgers-hybrid", [*TINY_HYBRID, "optim.steps=60", "trainer.val_every=30"]),
    "lgd": ("ct-lgd", ["model=lgd", *_CT, "model.width=16"]),
    "lpd": ("ct-lpd", ["model=lpd", *_CT]),
    "tv_learned": ("ct-tv_learned", ["model=tv_learned", *_CT, "model.iterations=20"]),
}


@pytest.mark.parametrize("name", sorted(PARADIGMS))
def test_every_paradigm_trains_on_cuda_and_scores_the_same_on_the_cpu(sciml, name):
    """Each model's step, validation and evaluation run on CUDA (nothing left on the CPU), and
    the checkpoint scores the same on either device: only round-off differs."""
    directory, overrides = PARADIGMS[name]
    proc = sciml("train", *on_cuda([*overrides, *QUIET]), timeout=600)
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(sciml.cwd / "outputs" / "train" / directory)
    assert json.loads((run / "run.json").read_text())["device"] == "cuda"
    scores = {}
    for device in ("cuda", "cpu"):
        proc = sciml("eval", f"run={run}", f"device={device}", timeout=600)
        assert proc.returncode == 0, proc.stderr
        result = json.loads((run / "eval.json").read_text())
        assert result["device"].startswith(device)
        scores[device] = {k: v for k, v in result["metrics"].items()
                          if isinstance(v, float) and not k.startswith("seconds")}
    assert scores["cuda"] and scores["cuda"].keys() == scores["cpu"].keys()
    for key, value in scores["cuda"].items():
        assert value == pytest.approx(scores["cpu"][key], rel=1e-3, abs=1e-6), key
