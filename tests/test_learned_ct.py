"""Learned reconstruction on CT: the inverse-problem view (transmission model, training pairs,
fixed images, validation-tuned baselines) and the unrolled models (lgd, tv_learned, lpd)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import only_run_dir

from sciml_cli.models.lgd import LGD
from sciml_cli.models.lpd import LPD
from sciml_cli.models.tv_learned import TVLearned
from sciml_cli.numerics.image_metrics import psnr
from sciml_cli.problems.ct import _TUNE_GRID, Ct

#: a CT problem of a few seconds: 32 x 32, few fixed images, short baselines
SMALL = {"size": 32, "n_val": 4, "n_test": 4, "baseline_iterations": 200}
SMALL_ARGS = [f"problem.{k}={v}" for k, v in SMALL.items()]


def small(**kw) -> Ct:
    torch.manual_seed(0)  # the networks' initial weights, in the tests that build one
    return Ct(**{**SMALL, **kw}).to("cpu", torch.float64)


# -- the view --------------------------------------------------------------------------------------
def test_transmission_gradient_matches_autograd_and_finite_differences():
    """D(a) = (2 / I0) sum(I0 exp(-A a) + b A a): the analytic gradient equals autograd's, and
    a central difference along a random direction to 1e-6 relative."""
    p = small(forward_model="transmission", photons=1e4)
    images, counts = p.training_pairs(2, seed=3)
    torch.manual_seed(0)
    a = (images + 0.05 * torch.randn_like(images)).requires_grad_()
    (auto,) = torch.autograd.grad(p.data_fidelity(a, counts).sum(), a)
    grad = p.data_fidelity_gradient(a.detach(), counts)
    assert torch.allclose(grad, auto, rtol=1e-10, atol=1e-12)
    v = torch.randn_like(images)
    h = 1e-4  # truncation h^2 and rounding eps / h both far below the tolerance
    fd = (p.data_fidelity(a.detach() + h * v, counts) - p.data_fidelity(a.detach() - h * v, counts)) / (2 * h)
    assert torch.allclose(fd, (grad * v).sum(dim=(-2, -1)), rtol=1e-6)


def test_transmission_counts_are_poisson_and_their_log_is_the_sinogram():
    p = small(forward_model="transmission", photons=1e4)
    images, counts = p.training_pairs(8, seed=0)
    rate = 1e4 * torch.exp(-p.forward(images))
    assert torch.equal(counts, counts.round()) and counts.min() >= 0
    z = (counts - rate) / rate.sqrt()  # standardised: mean 0, variance 1 for Poisson counts
    assert abs(z.mean().item()) < 0.02 and abs(z.var().item() - 1) < 0.05
    rel = (p.linearised(counts) - p.forward(images)).norm() / p.forward(images).norm()
    assert 1e-3 < rel.item() < 0.05  # noisy, but the line integrals


def test_training_pairs_are_a_pure_function_of_the_seed_and_differ_from_the_fixed_images():
    p = small()
    a1, b1 = p.training_pairs(3, seed=7)
    a2, b2 = p.training_pairs(3, seed=7)
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert not torch.equal(p.training_pairs(3, seed=8)[0], a1)
    val, test = p.image_sets("val"), p.image_sets("test")
    assert set(val) == {"ellipses"} and set(test) == {"ellipses", "shepp_logan"}
    assert val["ellipses"].images.shape == (4, 32, 32) and test["shepp_logan"].images.shape == (1, 32, 32)
    assert not torch.equal(val["ellipses"].images, test["ellipses"].images)
    with pytest.raises(ValueError, match="draws the val images"):
        p.training_pairs(1, seed=10**9 + 1)  # the validation images' seed


def test_every_run_seed_and_step_draws_its_own_phantoms_never_the_held_out_ones():
    """Training seeds are distinct across (trainer.seed, step), small seeds keep the figures
    measured with them, and a large trainer.seed (a sweep's 100, 12345) trains without drawing
    the validation or test images (seed 100, step 1 was the validation seed)."""
    from sciml_cli.models.unrolled import SEED_STRIDE, training_seed

    assert training_seed(3, 17) == 3 * SEED_STRIDE + 17
    pairs = [(s, t) for s in (0, 1, 99, 100, 101, 200, 12345, 2**31) for t in (0, 1, 2, SEED_STRIDE - 1)]
    seeds = [training_seed(s, t) for s, t in pairs]
    assert len(set(seeds)) == len(pairs) and not {10**9 + 1, 10**9 + 2} & set(seeds)
    assert all(0 <= v < 2**63 for v in seeds)
    p = small()
    images, _ = p.training_pairs(2, seed=training_seed(100, 1))
    assert not torch.equal(images, p.image_sets("val")["ellipses"].images[:2])
    with pytest.raises(ValueError, match="steps"):
        training_seed(0, SEED_STRIDE)


def test_baseline_lambdas_are_the_best_on_the_validation_images():
    """The tuned lambda beats every other value of the grid on the validation images, and the
    test images play no part (changing them leaves the choice alone)."""
    p = small()
    weights = p.tuned_weights()
    val = p.image_sets("val")["ellipses"]
    scale = 2 * p.opnorm() ** 2
    start = p.initial(val.data)
    for kind, grid in _TUNE_GRID.items():
        score = {lam * scale: psnr(p.reconstruct(val.data, 200, start, reg_weight=lam * scale, kind=kind),
                                   val.images).mean().item() for lam in grid}
        assert weights[kind] == max(score, key=score.get)
    other = Ct(**{**SMALL, "n_test": 2}).to("cpu", torch.float64)
    assert other.tuned_weights() == weights
    base = p.baselines()
    assert base["tv_psnr_ellipses"] > base["fbp_psnr_ellipses"] + 2  # TV beats FBP on ellipses


# -- the models ------------------------------------------------------------------------------------
def test_lgd_with_a_zero_network_and_fixed_lambda_is_plain_gradient_descent():
    p = small()
    model = LGD(p, iterations=12, share_weights=False).double()  # the last layers start at zero
    _, data = p.training_pairs(2, seed=1)
    with torch.no_grad():
        got = model.reconstruct(p, data)
    expected = p.reconstruct(data, 12, initial=p.initial(data))
    assert torch.allclose(got, expected, rtol=0, atol=1e-14)
    # and the network is what changes it: one perturbed weight moves the result
    with torch.no_grad():
        model.nets[3].layers[-1].bias[0] = 1e-3
        assert (model.reconstruct(p, data) - expected).abs().max() > 1e-4


def test_tv_learned_at_its_start_is_gradient_descent_and_learning_its_steps_helps():
    p = small()
    model = TVLearned(p, iterations=20, acceleration="none").double()
    _, data = p.training_pairs(2, seed=1)
    with torch.no_grad():
        assert torch.allclose(model.reconstruct(p, data), p.reconstruct(data, 20, initial=p.initial(data)),
                              rtol=0, atol=1e-14)
    opt = torch.optim.Adam(model.parameters(), lr=5e-2)
    before = model.evaluate(p, split="val").metrics["psnr"]
    for step in range(15):
        loss = model.loss(p, model.batch(p, step, 0))["mse"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    # on the held-out validation images: 30.8 dB (20 plain steps) to 32.4, past the tuned
    # Tikhonov reconstruction (31.8; FBP 28.2), lambda learned from 1e-3 to 2.1e-3 (measured)
    val = p.image_sets("val")["ellipses"]
    tikhonov = psnr(p.classical(val)["tikhonov"].images, val.images).mean().item()
    assert before < tikhonov < model.evaluate(p, split="val").metrics["psnr"]
    assert model.learned()["reg_weight"] > 1.5 * p.reg_weight


def test_accelerated_tv_learned_at_its_start_is_nesterov_and_beats_gradient_descent():
    """Untrained, the accelerated scheme is Nesterov's method with the momenta k / (k + 3)
    (written out here), and 30 of its steps reach a lower objective and a higher PSNR than 30
    steps of plain gradient descent."""
    p = small()
    model = TVLearned(p, iterations=30).double()
    images, data = p.training_pairs(2, seed=1)
    beta = model.momenta().detach()
    assert beta[0] == pytest.approx(1e-3) and beta[7] == pytest.approx(7 / 10)
    tau = p.step_size()
    a = y = p.initial(data)
    for k in range(30):
        step = y - tau * (p.data_fidelity_gradient(y, data) + p.reg_weight * p.regulariser_gradient(y))
        y, a = step + beta[k] * (step - a), step
    with torch.no_grad():
        got = model.reconstruct(p, data)
    assert torch.allclose(got, a, rtol=0, atol=1e-13)
    plain = p.reconstruct(data, 30, initial=p.initial(data))
    assert (p.objective(got, data) < p.objective(plain, data)).all()
    assert (psnr(got, images) > psnr(plain, images)).all()
    assert len(model.learned()["momentum"]) == 30


def test_the_cnn_computes_the_same_function_on_channels_last_images(monkeypatch):
    """On the CPU ``ConvNet`` convolves channels-last images (faster there): the values and
    weight gradients are those of the channels-first layout, to float32 rounding."""
    from sciml_cli.nn import ConvNet

    torch.manual_seed(0)
    net = ConvNet(8, 6)
    x = torch.randn(4, 8, 32, 32)
    results = {}
    for channels_last in (False, True):
        monkeypatch.setattr(ConvNet, "channels_last_on_cpu", channels_last)
        net.zero_grad()
        y = net(x)
        y.square().sum().backward()
        assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
        results[channels_last] = (y.detach(), [p.grad.clone() for p in net.parameters()])
    (y0, g0), (y1, g1) = results[False], results[True]
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-6)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("preset", ["lgd_ct_small", "lpd_ct_small"])
def test_mixed_precision_trains_the_learned_schemes(tmp_path, preset):
    """``trainer.amp=true`` on the CPU: the networks in bfloat16, the Radon transform in float32
    (it once failed: no bfloat16 sparse product); the first loss is the float32 one to 1 %."""
    from conftest import fit

    from sciml_cli.training import checkpoint

    short = [f"experiment={preset}", "optim.steps=3", "trainer.val_every=3", "trainer.checkpoint_every=3",
             "trainer.log_every=1", "model.batch_size=2"]
    losses = {}
    for amp in ("false", "true"):
        summary, _ = fit([*short, f"trainer.amp={amp}"], tmp_path / amp)
        assert math.isfinite(summary["val/psnr"])
        losses[amp] = checkpoint.load(tmp_path / amp / "checkpoints" / "last.pt")["history"]
    assert all(math.isfinite(v) for _, v in losses["true"])
    assert losses["true"][0][1] == pytest.approx(losses["false"][0][1], rel=1e-2)


def test_lpd_gradients_reach_every_iteration():
    p = small()
    model = LPD(p, iterations=3, width=8).double()
    loss = model.loss(p, model.batch(p, 0, 0))["mse"]
    loss.backward()
    for net in (*model.primal, *model.dual):
        assert net.layers[0].weight.grad.abs().sum() > 0


def test_evaluation_is_refused_at_another_image_size():
    p = small()
    with pytest.raises(ValueError, match=r"built for 32 x 32 images \(supported: 32\)"):
        LGD(p).evaluate(p, resolution=64)


# -- through the command line ----------------------------------------------------------------------
def test_lgd_tiny_cpu_run_beats_the_classical_baselines(sciml):
    """60 steps on 32 x 32 images: on the held-out ellipses the learned scheme beats FBP and
    Tikhonov (its lambda tuned on the validation images); eval writes the comparison figure."""
    proc = sciml("train", "model=lgd", "problem=ct", *SMALL_ARGS, "model.batch_size=4", "model.width=16",
                 "optim=adam_cosine", "optim.lr=2e-3", "optim.steps=60", "trainer.val_every=20",
                 "trainer.log_every=10", "trainer.device=cpu", "trainer.callbacks.progress=null",
                 "trainer.callbacks.tensorboard=null", "output=json", check=True)
    train = json.loads(proc.stdout)
    assert train["metrics"]["val_direction"] == "maximize"
    # best.pt follows the direction: the best validation PSNR is the highest one seen
    run = only_run_dir(sciml.cwd / "outputs" / "train" / "ct-lgd")
    assert train["metrics"]["best/psnr"] >= train["metrics"]["val/psnr"]
    proc = sciml("eval", f"run={run}", "resolution=64")  # the operator is built for 32 x 32
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "sciml: config error: resolution: LGD evaluates on the grid it was built for (valid: 32)\n"
    proc = sciml("eval", f"run={run}", "output=json", check=True)
    result = json.loads(proc.stdout)
    base, metrics = result["baselines"], result["metrics"]
    assert metrics["psnr"] > base["fbp_psnr_ellipses"] + 1.0
    assert metrics["psnr"] > base["tikhonov_psnr_ellipses"]
    assert "psnr_shepp_logan" in metrics and result["details"]["learned"]["reg_weight"] > 0
    import matplotlib.image
    import numpy as np

    figure = matplotlib.image.imread(run / "plots" / "eval_best.png")
    assert figure.shape[1] > 4 * figure.shape[0] / 2  # five panels in a row
    assert len(np.unique((figure[..., 0] * 255).round())) > 64  # grey levels of images, not a blank


def test_lgd_on_a_problem_without_the_view_names_ct(sciml):
    proc = sciml("train", "model=lgd", "problem=heat")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "inverse problem view" in proc.stderr and "(valid: ct)" in proc.stderr


@pytest.mark.parametrize("override, key", [
    ("problem.photons=0", "problem.photons"),
    ("problem.noise_percent=-1", "problem.noise_percent"),
    ("problem.n_angles=0", "problem.n_angles"),
    ("model.iterations=0", "model.iterations"),
])
def test_bad_ct_settings_are_one_line_errors(sciml, override, key):
    proc = sciml("train", "model=lgd", "problem=ct", override)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"sciml: config error: {key}")
    assert not (sciml.cwd / "outputs").exists()


def test_lgd_and_lpd_learn_from_photon_counts_too():
    """On transmission data the schemes see the Poisson likelihood's gradient (LGD) or the log
    data (LPD). Adam on fresh phantoms raises the PSNR on the held-out validation images above a
    classical reconstruction's: LGD's (60 steps) above the tuned Tikhonov's, from below; LPD's,
    which starts from zero (10 dB), above FBP's (300 steps: 29.7 dB against 28.1, measured)."""
    p = small(forward_model="transmission")
    val = p.image_sets("val")["ellipses"]
    classical = p.classical(val)
    tikhonov, fbp = (psnr(classical[k].images, val.images).mean().item() for k in ("tikhonov", "fbp"))
    for make_model, steps, lr in ((lambda: LGD(p, width=8), 60, 1e-3),
                                  (lambda: LPD(p, iterations=3, width=8), 300, 3e-3)):
        torch.manual_seed(0)  # the weights, whatever ran before
        model = make_model().double()
        before = model.evaluate(p, split="val").metrics["psnr"]
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for step in range(steps):
            loss = model.loss(p, model.batch(p, step, seed=0))["mse"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        after = model.evaluate(p, split="val").metrics["psnr"]
        if isinstance(model, LGD):
            assert before < tikhonov < after, (before, tikhonov, after)
        else:
            assert before < fbp < after, (before, fbp, after)
