"""Solver in the loop: the differentiable-solver view (restriction, coarse schemes, reference
trajectories) on burgers and navier_stokes, and the hybrid model that corrects the coarse
solver (zero network = the solver, gradients through the unrolled steps, bad input)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import TINY_HYBRID, only_run_dir

from sciml_cli.models.hybrid import Hybrid, _diverged_step, _rel_l2
from sciml_cli.numerics.spectral import restrict
from sciml_cli.problems.burgers import Burgers
from sciml_cli.problems.navier_stokes import NavierStokes

F64 = {"dtype": torch.float64}


def burgers(tmp_path, **kw) -> Burgers:
    args = {"setup": "fno", "nu": 0.003, "fine_resolution": 256, "dt": 0.0025, "coarse_resolution": 32,
            "coarse_dt": 0.01, "coarse_scheme": "fd2", "data_dir": str(tmp_path / "data"), **kw}
    return Burgers(**args).to("cpu", torch.float64)


def navier_stokes(tmp_path, **kw) -> NavierStokes:
    args = {"fine_resolution": 32, "resolution": 16, "dt": 0.05, "coarse_resolution": 16, "coarse_dt": 0.1,
            "t_end": 1.0, "data_dir": str(tmp_path / "data"), **kw}
    return NavierStokes(**args).to("cpu", torch.float64)


def small_hybrid(problem, **kw) -> Hybrid:
    torch.manual_seed(0)
    args = {"unroll": 3, "width": 8, "blocks": 1, "n_train": 4, "train_steps": 6, "n_val": 2, "val_steps": 5,
            "n_test": 2, "test_steps": 8, "batch_size": 3, **kw}
    return Hybrid(problem, **args).double()


# -- restriction -----------------------------------------------------------------------------------
def test_restriction_samples_band_limited_fields_and_is_a_projection():
    x, xc = torch.arange(64, **F64) / 64, torch.arange(16, **F64) / 16
    f = lambda x: 1 + torch.sin(2 * math.pi * 3 * x) + 0.5 * torch.cos(2 * math.pi * 7 * x)  # noqa: E731
    assert torch.allclose(restrict(f(x), 16), f(xc), atol=1e-13)
    X, Y = torch.meshgrid(x, x, indexing="ij")
    Xc, Yc = torch.meshgrid(xc, xc, indexing="ij")
    g = lambda X, Y: torch.sin(2 * math.pi * (3 * X - 7 * Y)) + torch.cos(2 * math.pi * (5 * X + 2 * Y))  # noqa: E731
    assert torch.allclose(restrict(g(X, Y), 16, 2), g(Xc, Yc), atol=1e-13)
    torch.manual_seed(0)
    r = torch.randn(3, 64, 64, **F64)
    once = restrict(r, 16, 2)
    assert torch.allclose(restrict(once, 16, 2), once, atol=1e-14)
    assert torch.allclose(once.mean((-2, -1)), r.mean((-2, -1)), atol=1e-15)
    # a mode at the coarse Nyquist frequency or above is removed, not aliased onto a low one
    assert restrict(torch.cos(2 * math.pi * 8 * x), 16).abs().max() < 1e-14
    assert restrict(torch.cos(2 * math.pi * 9 * x), 16).abs().max() < 1e-14


def test_restricted_steady_navier_stokes_flow_is_the_coarse_solvers_fixed_point(tmp_path):
    """w_s = f / (nu |k|^2), |k|^2 = 8 pi^2, is an exact steady state (its advection vanishes);
    restricted from the fine grid it is the coarse step's fixed point for both schemes."""
    for scheme in ("cn_euler", "cn_heun"):
        p = navier_stokes(tmp_path, coarse_scheme=scheme, viscosity=1e-2)
        w_fine = p.forcing(32, **F64)[None] / (p.viscosity * 8 * math.pi**2)
        w = p.restrict(w_fine)
        assert torch.allclose(w[0], p.forcing(16, **F64) / (p.viscosity * 8 * math.pi**2), atol=1e-14)
        after = w
        for _ in range(20):
            after = p.coarse_step(after, p.coarse_dt)
        assert (after - w).abs().max() < 1e-13 * w.abs().max()
        assert (p.coarse_step(w, 0.1) - w).abs().max() < 1e-14  # and not by luck of one step


def test_burgers_fd2_is_second_order_and_etdrk4_step_is_evolves_step(tmp_path):
    p = burgers(tmp_path, nu=0.02)
    x = torch.arange(512, **F64) / 512
    u0 = (0.5 * torch.sin(2 * math.pi * x) + 0.2 * torch.cos(4 * math.pi * x))[None]
    t, reference = 0.1, p.evolve(u0, 0.1, 1e-3)
    errors = []
    for n in (32, 64, 128):
        u, steps = p.restrict(u0, n), 40 * n // 32  # dt in proportion to h
        for _ in range(steps):
            u = p.step(u, t / steps, "fd2")
        errors.append(((u - p.restrict(reference, n)).norm() / p.restrict(reference, n).norm()).item())
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(1.9 < q < 2.1 for q in orders), (errors, orders)
    v = u0
    for _ in range(10):
        v = p.step(v, 0.005)
    assert torch.allclose(v, p.evolve(u0, 0.05, 0.005), atol=1e-14)


def test_reference_trajectories_are_the_restricted_fine_solution_and_cached(tmp_path):
    p = burgers(tmp_path)
    states = p.reference_trajectories("val", 3, 4)
    assert states.shape == (3, 5, 32) and states.dtype == torch.float64
    u = p.initial_states(3, p._solver_seed("val"))
    for _ in range(2 * 4):  # coarse_dt = 4 dt: two coarse steps
        u = p.reference_step(u, p.dt)
    assert torch.allclose(states[:, 2], p.restrict(u), atol=1e-13)
    assert len(list((tmp_path / "data").glob("burgers-solver-val-*.h5"))) == 1
    assert torch.equal(p.reference_trajectories("val", 3, 4), states)  # read back, same numbers
    assert not torch.equal(p.reference_trajectories("test", 3, 4)[:, 0], states[:, 0])  # unseen states


def test_spinup_starts_trajectories_from_the_integrated_state_and_keys_the_data(tmp_path):
    p = navier_stokes(tmp_path, spinup=0.1)
    states = p.reference_trajectories("val", 2, 1)
    w = p.initial_states(2, p._solver_seed("val"))
    for _ in range(2):  # spinup = 2 dt
        w = p.reference_step(w, p.dt)
    assert torch.allclose(states[:, 0], p.restrict(w), atol=1e-13)
    assert torch.allclose(p.solver_trajectories("val", 2, 1)[:, 0], states[:, 0], atol=1e-13)
    unspun = navier_stokes(tmp_path).reference_trajectories("val", 2, 1)
    assert not torch.allclose(unspun[:, 0], states[:, 0])  # another file, not a stale one
    assert len(list((tmp_path / "data").glob("navierstokes-solver-val-*.h5"))) == 2


def test_the_plain_solver_on_the_fine_grid_converges_to_the_reference(tmp_path):
    """At the coarse resolution the fd2 solver is visibly off; on finer grids (its step shrunk
    alike) the error falls at its order towards the reference."""
    p = burgers(tmp_path)
    reference = p.reference_trajectories("test", 4, 20)
    errors = [((p.solver_trajectories("test", 4, 20, n) - reference)[:, 1:].norm() / reference[:, 1:].norm()).item()
              for n in (32, 64, 128)]
    assert errors[0] > 1e-2 and errors[0] / errors[1] > 3 and errors[1] / errors[2] > 3, errors


# -- the hybrid model ------------------------------------------------------------------------------
@pytest.mark.parametrize("network", ["cnn", "fno", "stencil"])
@pytest.mark.parametrize("correct", ["state", "forcing"])
@pytest.mark.parametrize("which", ["burgers", "navier_stokes"])
def test_a_hybrid_with_a_zero_network_is_its_coarse_solver_exactly(tmp_path, which, correct, network):
    p = burgers(tmp_path) if which == "burgers" else navier_stokes(tmp_path)
    model = small_hybrid(p, correct=correct, network=network, modes=4)
    evaluation = model.evaluate(p, split="val")
    coarse = p.solver_trajectories("val", 2, 5)
    assert torch.equal(evaluation.prediction, coarse[:, 1:])
    assert evaluation.metrics["rel_l2"] == evaluation.metrics["rel_l2_coarse"] > 0


@pytest.mark.parametrize("n_dims, kernel, shape", [(1, 5, (12,)), (1, 7, (9,)), (2, 3, (6, 10)), (2, 5, (5, 7))])
def test_the_stencil_mlp_is_a_circular_convolution_a_relu_and_a_pointwise_layer(n_dims, kernel, shape):
    """The same function as torch's circular convolution, ReLU and 1 x 1 convolution with its
    weights, in values and gradients, on grids no larger than a few stencils."""
    import torch.nn.functional as F

    from sciml_cli.nn import StencilMLP

    torch.manual_seed(0)
    net = StencilMLP(n_dims, 2, 3, width=8, kernel=kernel, zero_last=False).double()
    x = torch.randn(4, 2, *shape, **F64, requires_grad=True)
    conv = F.conv1d if n_dims == 1 else F.conv2d

    def reference(x):
        hidden = torch.relu(conv(F.pad(x, (kernel // 2,) * 2 * n_dims, mode="circular"), net.hidden, net.hidden_bias))
        return conv(hidden, net.out.view(*net.out.shape, *[1] * n_dims), net.out_bias)

    y, expected = net(x), reference(x)
    assert y.shape == (4, 3, *shape) and (y - expected).abs().max() < 1e-14
    weights = torch.randn_like(y)
    mine = torch.autograd.grad((y * weights).sum(), [x, *net.parameters()])
    theirs = torch.autograd.grad((expected * weights).sum(), [x, *net.parameters()])
    assert all((a - b).abs().max() < 1e-12 for a, b in zip(mine, theirs))
    assert torch.equal(net.on_fields(list(x.unbind(1))), y)
    assert StencilMLP(n_dims, 2, 1, kernel=kernel)(x.detach().float()).abs().max() == 0  # zero_last


def test_a_rollout_that_blows_up_scores_inf_and_names_the_step_it_was_lost(tmp_path):
    """A diverged rollout must lose every comparison (``nan`` would make each one false) and the
    evaluation says from which step its error passed 100 %."""
    p = navier_stokes(tmp_path)
    model = small_hybrid(p)
    model.fit_scale(p)
    with torch.no_grad():
        for weight in model.parameters():
            weight.normal_()
        model.correction_scale.mul_(1e3)
    evaluation = model.evaluate(p, split="val")
    metrics, curve = evaluation.metrics, evaluation.details["curves"]["hybrid"]
    lost = next(i for i, e in enumerate(curve, 1) if e > 1)
    assert metrics["diverged_step_hybrid"] == lost
    assert metrics["rel_l2"] > 1 and metrics["improvement_over_coarse"] < 1
    assert "diverged_step_coarse" not in metrics and metrics["rel_l2_coarse"] < 0.1
    test = model.evaluate(p, split="test").metrics  # beside the solver on the 2x grid
    assert test["rel_l2_solver_2x"] < 0.1 and "diverged_step_hybrid" in test
    assert test["as_accurate_as"] == 1 and test["improvement_over_coarse"] < 1
    reference = torch.ones(2, 3, 4, 4, dtype=torch.float64)
    overflowed = reference.clone()
    overflowed[0, 2, 1, 1] = math.nan  # an inf - inf somewhere in an overflowing step
    errors = _rel_l2(overflowed, reference, 2)
    assert errors[0, 2] == math.inf and errors[0, :2].eq(0).all() and errors[1].eq(0).all()
    assert _diverged_step(errors.mean(0)) == 3 and _diverged_step(errors.mean(0)[:2]) is None


@pytest.mark.parametrize("correct", ["state", "forcing"])
@pytest.mark.parametrize("which", ["burgers", "navier_stokes"])
def test_gradients_through_the_unrolled_solver_match_finite_differences(tmp_path, which, correct):
    p = burgers(tmp_path) if which == "burgers" else navier_stokes(tmp_path)
    model = small_hybrid(p, network="cnn" if which == "burgers" else "fno", modes=4, correct=correct)
    model.fit_scale(p)
    for param in model.net.parameters():  # away from the zero start, so every path counts
        param.data.add_(0.3 * torch.randn_like(param))
    state = p.restrict(p.initial_states(2, 5))

    def rollout(s):
        return model.rollout(p, s, 3)[:, -1]

    assert torch.autograd.gradcheck(rollout, (state.clone().requires_grad_(),), eps=1e-6, atol=1e-7)
    # and through the weights: the loss of a batch against a central difference along a direction
    batch = model.batch(p, step=0, seed=0)
    loss = model.loss(p, batch)["rollout"]
    params = list(model.net.parameters())
    grads = torch.autograd.grad(loss, params)
    directions = [torch.randn_like(w) for w in params]
    h = 1e-5

    def shifted(sign):
        with torch.no_grad():
            for w, d in zip(params, directions):
                w.add_(sign * h * d)
            value = model.loss(p, batch)["rollout"].item()
            for w, d in zip(params, directions):
                w.sub_(sign * h * d)
        return value

    fd = (shifted(1) - shifted(-1)) / (2 * h)
    analytic = sum((g * d).sum() for g, d in zip(grads, directions)).item()
    assert analytic == pytest.approx(fd, rel=1e-5)


def test_detach_stops_the_gradient_between_steps_but_not_within_one(tmp_path):
    p = burgers(tmp_path)
    full, cut = small_hybrid(p), small_hybrid(p, detach=True)
    for model in (full, cut):
        model.fit_scale(p)
        with torch.no_grad():
            for param in model.net.parameters():
                param.copy_(torch.linspace(-0.2, 0.2, param.numel(), **F64).reshape(param.shape))
    batch = full.batch(p, step=1, seed=0)
    g_full = torch.autograd.grad(full.loss(p, batch)["rollout"], list(full.net.parameters()))
    g_cut = torch.autograd.grad(cut.loss(p, batch)["rollout"], list(cut.net.parameters()))
    assert torch.equal(full.loss(p, batch)["rollout"], cut.loss(p, batch)["rollout"])  # same forward
    assert not all(torch.allclose(a, b) for a, b in zip(g_full, g_cut))
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in g_cut)


def test_batches_are_a_pure_function_of_step_and_seed(tmp_path):
    p = burgers(tmp_path)
    model = small_hybrid(p)
    a, b = model.batch(p, 3, 0), model.batch(p, 3, 0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["initial"], model.batch(p, 4, 0)["initial"])
    data = p.reference_trajectories("train", 4, 6)
    assert a["targets"].shape == (3, 3, 32)
    # each target window continues its initial state along one training trajectory
    for i in range(3):
        hits = [(n, t) for n in range(4) for t in range(4) if torch.equal(data[n, t], a["initial"][i])]
        assert hits and torch.equal(data[hits[0][0], hits[0][1] + 1:hits[0][1] + 4], a["targets"][i])


def test_the_onestep_phase_draws_single_steps_and_other_phases_the_unroll(tmp_path):
    p = burgers(tmp_path)
    model = small_hybrid(p, onestep_phase="onestep")
    assert model.named_phases() == {"model.onestep_phase": "onestep"}
    assert small_hybrid(p).named_phases() == {}
    assert model.batch(p, 3, 0)["targets"].shape == (3, 3, 32)  # outside the trainer: the unroll
    model.start_phase(p, "onestep")
    one = model.batch(p, 3, 0)
    assert one["targets"].shape == (3, 1, 32)
    model.start_phase(p, "unrolled")
    assert model.batch(p, 3, 0)["targets"].shape == (3, 3, 32)
    # the loss follows the batch: on a single step it is the unroll-1 model's, bit for bit
    plain = small_hybrid(p, unroll=1)
    plain.load_state_dict(model.state_dict())
    assert torch.equal(model.loss(p, one)["rollout"], plain.loss(p, one)["rollout"])


# -- the command line ------------------------------------------------------------------------------


def test_hybrid_burgers_beats_the_coarse_solver_and_eval_compares_finer_grids(sciml):
    """A short training already beats the coarse solver it corrects on unseen initial
    conditions over 10x the training unroll; eval adds the plain solver on 2x and 4x grids and
    writes the error curves and the snapshots."""
    sciml("train", *TINY_HYBRID, check=True)
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "burgers-hybrid")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val/rel_l2"] < 0.5 * metrics["val/rel_l2_coarse"], metrics
    proc = sciml("eval", f"run={run}", "resolution=64")  # refused before any work: the model has one grid
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "sciml: config error: resolution: Hybrid evaluates on the grid it was built for (valid: 32)\n"
    assert not (run / "eval.json").exists()
    sciml("eval", f"run={run}", check=True)
    result = json.loads((run / "eval.json").read_text())["metrics"]
    assert result["rel_l2"] < 0.5 * result["rel_l2_coarse"]
    assert result["rel_l2_solver_4x"] < result["rel_l2_solver_2x"] < result["rel_l2_coarse"]
    assert 0.5 < result["max_abs_ratio"] < 1.5  # bounded over 80 steps, 10x the unroll of 8
    assert result["as_accurate_as"] in (1.0, 2.0, 4.0)
    from conftest import assert_figure

    assert_figure(run / "plots" / "eval_best.png")
    assert_figure(run / "plots" / "eval_best_snapshots.png")


def test_solve_with_a_hybrid_checkpoint_compares_it_with_the_plain_solvers(sciml):
    sciml("train", *TINY_HYBRID, "optim.steps=20", "trainer.val_every=20", "trainer.checkpoint_every=20", check=True)
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "burgers-hybrid")
    proc = sciml("solve", "problem=burgers", f"ckpt={run}", "n_samples=4", "repeats=1", "output=json", check=True)
    result = json.loads(proc.stdout)
    assert result["status"] == "finished"
    for factor in (1, 2, 4):
        assert result[f"solver_{factor}x_rel_l2"] > 0 and result[f"solver_{factor}x_s"] > 0
    assert result["hybrid_steps"] == 100  # t_end = 1 in steps of 0.01
    # 20 steps already correct the coarse solver (an untrained hybrid is that solver exactly)
    assert result["hybrid_rel_l2"] < result["solver_1x_rel_l2"]
    assert result["solver_4x_rel_l2"] < result["solver_2x_rel_l2"] < result["solver_1x_rel_l2"]
    equal = next(f for f in (1, 2, 4) if result[f"solver_{f}x_rel_l2"] <= result["hybrid_rel_l2"])
    assert result["equal_error_grid"] == equal



def test_init_starts_a_new_run_from_a_trained_models_weights(sciml):
    """``init=<run>`` (fine-tuning, e.g. an unrolled hybrid from a one-step one) loads the run's
    best weights and nothing else: with a learning rate too small to move them, the new run
    validates exactly as its source did, where a fresh model is the coarse solver; weights of
    another shape are a one-line error before any work."""
    short = ["optim.steps=20", "trainer.val_every=20", "trainer.checkpoint_every=20"]
    sciml("train", *TINY_HYBRID, "model.unroll=1", *short, check=True)
    source = only_run_dir(sciml.cwd / "outputs" / "train" / "burgers-hybrid")
    trained = json.loads((source / "metrics.json").read_text())["val/rel_l2"]
    frozen = ["optim.steps=1", "optim.lr=1e-30", "trainer.val_every=1", "output=json"]
    tuned = json.loads(sciml("train", *TINY_HYBRID, "model.unroll=4", f"init={source}", *frozen, check=True).stdout)
    fresh = json.loads(sciml("train", *TINY_HYBRID, "model.unroll=4", *frozen, check=True).stdout)
    assert tuned["metrics"]["val/rel_l2"] == pytest.approx(trained, rel=1e-6)
    assert fresh["metrics"]["val/rel_l2"] == pytest.approx(fresh["metrics"]["val/rel_l2_coarse"], rel=1e-6)
    assert fresh["metrics"]["val/rel_l2"] > 1.05 * trained
    info = json.loads((Path(tuned["run_dir"]) / "run.json").read_text())
    assert info["init_from"] == str((source / "checkpoints" / "best.pt").resolve())
    runs = sorted((sciml.cwd / "outputs" / "train" / "burgers-hybrid").iterdir())
    proc = sciml("train", *TINY_HYBRID, f"init={source}", "model.width=8")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("sciml: config error: init: the weights in") and "do not fit this model" in proc.stderr
    proc = sciml("train", *TINY_HYBRID, f"init={sciml.cwd / 'nowhere'}")
    assert proc.returncode == 2 and "init: no checkpoint at" in proc.stderr and "<run dir>" in proc.stderr
    assert sorted((sciml.cwd / "outputs" / "train" / "burgers-hybrid").iterdir()) == runs  # nothing written

def _logged(run: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return {e.step: e.value for e in events.Scalars(tag)}


def test_a_curriculum_trains_one_step_corrections_then_unrolls(sciml):
    """``optim=adam_curriculum`` with ``model.onestep_phase=onestep``: the first phase's logged
    losses are those of a model trained on single steps throughout (the same batches, the same
    weights); from the unrolled phase on they are the unroll's."""
    one_phase = {"optim=adam_cosine", "model.onestep_phase=null", "optim.lr=2e-3"}
    args = [*(a for a in TINY_HYBRID if a not in one_phase), "optim.onestep_steps=20", "optim.steps=20",
            "trainer.log_every=5", "trainer.val_every=40", "trainer.checkpoint_every=40"]
    sciml("train", *args, "model.onestep_phase=onestep", "paths.outputs=curriculum", check=True)
    sciml("train", *args, "model.onestep_phase=onestep", "model.unroll=1", "paths.outputs=onestep", check=True)
    runs = [only_run_dir(sciml.cwd / name / "train" / "burgers-hybrid") for name in ("curriculum", "onestep")]
    curriculum, onestep = (_logged(run, "loss/rollout") for run in runs)
    assert sorted(curriculum) == sorted(onestep) == [5, 10, 15, 20, 25, 30, 35, 40]
    assert all(curriculum[k] == onestep[k] for k in (5, 10, 15, 20))
    assert all(curriculum[k] > 2 * onestep[k] for k in (25, 30, 35, 40))  # errors grow over 8 steps
    log = (runs[0] / "train.log").read_text()
    assert "phase 1/2, onestep: steps 1 to 20" in log and "phase 2/2, unrolled: steps 21 to 40" in log


@pytest.mark.parametrize("args, needle", [
    (["problem=burgers", "model.onestep_phase=onestop", "optim=adam_curriculum"],
     "model.onestep_phase: 'onestop' is not one of the optim's phases; did you mean onestep? (valid: onestep, unrolled, null)"),
    (["problem=heat"], "Hybrid needs the differentiable solver view; this Heat offers physics residual. "
                       "Problems that fit (valid: burgers, navier_stokes)"),
    (["problem=burgers", "problem.coarse_resolution=48"], "problem.coarse_resolution: must be even and divide "
                                                          "fine_resolution=1024, got 48"),
    (["problem=burgers", "model.unroll=0"], "model.unroll: must be > 0, got 0"),
    (["problem=burgers", "problem.coarse_resolution=32", "model.network=stencil", "model.kernel=33"],
     "model.kernel: 33 points are wider than the coarse grid's 32"),
    (["problem=burgers", "model.unroll=80", "model.train_steps=60"], "model.unroll: 80 steps do not fit"),
    (["problem=burgers", "problem.coarse_dt=0.1", "problem.dt=0.005"], "above the coarse scheme's stability limit"),
    (["problem=navier_stokes", "problem.coarse_dt=0.125", "problem.dt=0.01"], "problem.coarse_dt: must be a whole"),
])
def test_bad_hybrid_configs_are_one_line_errors_before_any_work(sciml, args, needle):
    proc = sciml("train", "model=hybrid", *args)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert needle in proc.stderr
    assert not (sciml.cwd / "outputs").exists()
