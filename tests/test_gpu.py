"""The trainer's CUDA paths through the real command: bf16 autocast, torch.compile, resume.

Skipped without a CUDA device (``-m gpu`` selects them)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_FNO, TINY_NS, first_logged_loss, only_run_dir

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
    # learning, as on the CPU (test_fno_cli: 1.0 untrained, 0.15 after the 40 steps)
    assert metrics["val/rel_l2"] < 0.25 * first_logged_loss(run)
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
    assert on_gpu["metrics"]["rel_l2"] < 0.25 * first_logged_loss(run)


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
