"""Each preset reaches the accuracy its YAML states, through the real commands.

Minutes each on a CPU, so marked ``slow``: ``python -m pytest -m slow tests/test_presets.py``.
The measured figures are in the README's table of presets."""

from __future__ import annotations

import json
import os

import pytest
from conftest import only_run_dir

#: preset, run directory, target (test rel-L2; pinn_heat: validation against the exact solution)
PRESETS = [
    ("pinn_heat", "heat-pinn", 1e-3),
    ("pinn_burgers_quick", "burgers-pinn", 5e-3),
    ("pinn_burgers", "burgers-pinn", 1e-4),
    ("fno_burgers_quick", "burgers-fno", 1e-2),
    ("fno_navier_stokes_small", "navier_stokes-fno", 1e-2),
    ("fno_heat2d", "heat2d-fno", 5e-3),
    ("drm_poisson_slit", "poisson-drm", 5e-3),
    ("pinn_poisson_slit", "poisson-pinn", 5e-3),
    ("drm_poisson_10d", "poisson-drm", 1e-2),
]


@pytest.mark.slow
@pytest.mark.parametrize("preset, run_name, target", PRESETS, ids=[p[0] for p in PRESETS])
def test_preset_reaches_its_stated_accuracy(sciml, preset, run_name, target):
    threads = {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}
    proc = sciml("train", f"experiment={preset}", "trainer.callbacks.progress=null", timeout=3600, env=threads)
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(sciml.cwd / "outputs" / "train" / run_name)
    if preset.startswith("fno"):
        proc = sciml("eval", f"run={run}", timeout=1200, env=threads)
        assert proc.returncode == 0, proc.stderr
        error = json.loads((run / "eval.json").read_text())["metrics"]["rel_l2"]
    else:
        error = json.loads((run / "metrics.json").read_text())["val/rel_l2"]
    assert error <= target


#: preset, extra overrides, run directory, target relative error of every learned coefficient
INVERSE = [
    ("pinn_burgers_inverse", [], "burgers-pinn", 1e-3),
    ("pinn_burgers_inverse", ["problem.noise=0.01"], "burgers-pinn", 5e-3),
    ("pinn_heat_inverse", [], "heat-pinn", 1e-3),
    ("pinn_heat_inverse", ["problem.noise=0.01"], "heat-pinn", 5e-3),
]


@pytest.mark.slow
@pytest.mark.parametrize("preset, extra, run_name, target", INVERSE,
                         ids=[f"{p[0]}{'-noisy' if p[1] else ''}" for p in INVERSE])
def test_inverse_preset_recovers_the_coefficients(sciml, preset, extra, run_name, target):
    threads = {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}
    proc = sciml("train", f"experiment={preset}", *extra, "trainer.callbacks.progress=null", timeout=3600, env=threads)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((only_run_dir(sciml.cwd / "outputs" / "train" / run_name) / "metrics.json").read_text())
    errors = {k: v for k, v in metrics.items() if k.startswith("val/coef_rel_err/")}
    assert errors and all(v <= target for v in errors.values()), errors
