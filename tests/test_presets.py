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
    ("pinn_poisson_lshape", "poisson-pinn", 1e-2),
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
    ("pinn_burgers_inverse_noisy", [], "burgers-pinn", 5e-3),
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


#: UDE presets: (preset, bound on the beta and gamma errors, bound on the extrapolation rel-L2).
#: Both must recover exactly the true terms (no spurious one). The course's bounds are the
#: issue's targets; on the UDE paper's setup those are beyond what its 31 noisy samples allow:
#: the maximum-likelihood fit of the true equation to the same noise draw (seed 0) is off by
#: beta 4.7 %, gamma 5.8 %, extrapolation 9.7 % (python scripts/bench_ude.py --presets
#: --overhead-steps 0 --floor 20), so the preset is held to that floor with a small margin.
UDE_PRESETS = [("ude_lotka_volterra_course", 0.05, 0.05), ("ude_lotka_volterra", 0.06, 0.10)]


@pytest.mark.slow
@pytest.mark.parametrize(("preset", "coef", "extrapolation"), UDE_PRESETS)
def test_ude_preset_recovers_the_equation(sciml, preset, coef, extrapolation):
    proc = sciml("train", f"experiment={preset}", "trainer.callbacks.progress=null", timeout=3600)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((only_run_dir(sciml.cwd / "outputs" / "train" / "lotka_volterra-ude") / "metrics.json").read_text())
    assert m["val/coef_rel_error/beta"] <= coef and m["val/coef_rel_error/gamma"] <= coef
    assert m["val/spurious_ratio"] == 0.0
    assert m["val/rel_l2_extrapolation"] <= extrapolation


@pytest.mark.slow
def test_node_preset_fits_below_the_noise(sciml):
    from sciml_cli.problems.lotka_volterra import LotkaVolterra

    proc = sciml("train", "experiment=node_lotka_volterra", "trainer.callbacks.progress=null", timeout=3600)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((only_run_dir(sciml.cwd / "outputs" / "train" / "lotka_volterra-neural_ode") / "metrics.json").read_text())
    assert m["val/rel_l2"] < LotkaVolterra().baselines()["noisy_data_rel_l2"]


#: learned CT presets: (preset, run directory, dB over FBP, dB over validation-tuned TV) on the
#: held-out random ellipses
def _train_and_eval(sciml, preset: str, run_name: str) -> dict:
    """``sciml train experiment=<preset>`` then ``sciml eval`` of its run on every core; the
    eval's JSON result."""
    threads = {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}
    proc = sciml("train", f"experiment={preset}", "trainer.callbacks.progress=null", timeout=3600, env=threads)
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(sciml.cwd / "outputs" / "train" / run_name)
    proc = sciml("eval", f"run={run}", "output=json", timeout=1800, env=threads)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


CT_PRESETS = [("lgd_ct_small", "ct-lgd", 6.0, 0.0), ("lpd_ct_small", "ct-lpd", None, 2.0),
              ("tv_learned_ct", "ct-tv_learned", None, 0.0)]


@pytest.mark.slow
@pytest.mark.parametrize("preset, run_name, over_fbp, over_tv", CT_PRESETS, ids=[p[0] for p in CT_PRESETS])
def test_ct_preset_beats_the_classical_reconstructions(sciml, preset, run_name, over_fbp, over_tv):
    result = _train_and_eval(sciml, preset, run_name)
    value, base = result["metrics"]["psnr"], result["baselines"]
    if over_fbp is not None:
        assert value >= base["fbp_psnr_ellipses"] + over_fbp
    assert value >= base["tv_psnr_ellipses"] + over_tv


HYBRID_PRESETS = [("hybrid_burgers", "burgers-hybrid"), ("hybrid_navier_stokes", "navier_stokes-hybrid")]


@pytest.mark.slow
@pytest.mark.parametrize("preset, run_name", HYBRID_PRESETS)
def test_hybrid_preset_beats_the_coarse_solver_four_times(sciml, preset, run_name):
    """On unseen initial conditions over 12x the training unroll: >= 4x below the coarse
    solver it corrects, no worse than the plain solver on the 2x grid, and bounded."""
    m = _train_and_eval(sciml, preset, run_name)["metrics"]
    assert m["rel_l2_coarse"] >= 4 * m["rel_l2"], m
    assert m["rel_l2"] <= m["rel_l2_solver_2x"], m
    assert m["max_abs_ratio"] < 2 and m["rel_l2_last_step"] < 1, m


@pytest.mark.slow
def test_low_viscosity_hybrid_stays_bounded_where_the_solver_and_the_one_step_model_diverge(sciml):
    """Um et al.'s case for unrolled training: at nu = 1e-4 the coarse solver (and the same
    solver on 2x and 4x grids) blows up within the 100-step test rollout; the correction trained
    on single steps diverges too, the one trained through 8 steps stays bounded."""
    threads = {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}
    root = sciml.cwd / "outputs" / "train" / "navier_stokes-hybrid"
    results = {}
    for unroll in (1, 8):
        before = set(root.glob("*")) if root.exists() else set()
        proc = sciml("train", "experiment=hybrid_navier_stokes_low_viscosity", f"model.unroll={unroll}",
                     "trainer.callbacks.progress=null", timeout=3600, env=threads)
        assert proc.returncode == 0, proc.stderr
        (run,) = set(root.glob("*")) - before
        proc = sciml("eval", f"run={run}", "output=json", timeout=1800, env=threads)
        assert proc.returncode == 0, proc.stderr
        results[unroll] = json.loads(proc.stdout)["metrics"]
    loop, one_step = results[8], results[1]
    assert "diverged_step_hybrid" not in loop and loop["rel_l2_last_step"] < 0.1, loop
    assert loop["rel_l2"] < one_step["rel_l2"], (loop, one_step)
    assert all(f"diverged_step_{m}" in loop for m in ("coarse", "solver_2x", "solver_4x")), loop
