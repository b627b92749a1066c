"""Lotka–Volterra reference solver: against scipy's DOP853, the conserved quantity, the paper's setup."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.integrate import solve_ivp

from sciml_cli import config
from sciml_cli.problems.lotka_volterra import LotkaVolterra

PAPER_U0 = (0.44249296, 4.6280594)


@pytest.fixture(scope="module")
def problem() -> LotkaVolterra:
    return LotkaVolterra().to("cpu", torch.float64)


def _scipy(p: LotkaVolterra, u0: np.ndarray, t: np.ndarray) -> np.ndarray:
    def f(_, z):
        x, y = z
        return [p.alpha * x - p.beta * x * y, p.gamma * x * y - p.delta * y]

    r = solve_ivp(f, (t[0], t[-1]), u0, method="DOP853", t_eval=t, rtol=1e-13, atol=1e-13)
    assert r.success
    return r.y.T


def test_yaml_keys_are_the_constructor(problem):
    cfg = OmegaConf.load(config.CONFIG_DIR / "problem" / "lotka_volterra.yaml")
    built = config.instantiate(cfg)
    assert isinstance(built, LotkaVolterra)
    assert built.params == problem.params
    assert built.u0 == PAPER_U0


def test_paper_setup(problem):
    """Rackauckas et al. (2020): u0, t = 0:0.1:3, noise 5 % of each state's mean."""
    s = problem.solve()
    assert s.fields["u"].shape == s.fields["u_noisy"].shape == (1, 31, 2)
    assert s.fields["u"].dtype == torch.float64
    torch.testing.assert_close(s.grid["t"], torch.arange(31, dtype=torch.float64) * 0.1,
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(s.fields["u"][0, 0], torch.tensor(PAPER_U0, dtype=torch.float64))
    a = s.attrs
    assert (a["alpha"], a["beta"], a["gamma"], a["delta"]) == (1.3, 0.9, 0.8, 1.8)
    assert a["noise_level"] == 0.05 and a["rtol"] == a["atol"] == 1e-10


@pytest.mark.parametrize("n_samples", [1, 8])
def test_matches_scipy_dop853(problem, n_samples):
    """Max abs deviation from DOP853 at rtol = atol = 1e-13 below 2e-9 (states are O(1)-O(5))."""
    s = problem.solve(n_samples=n_samples, seed=3)
    u, t = s.fields["u"].numpy(), s.grid["t"].numpy()
    for i in range(n_samples):
        assert np.abs(_scipy(problem, u[i, 0], t) - u[i]).max() < 2e-9


@pytest.mark.parametrize("n_samples", [1, 16])
def test_invariant_conserved(problem, n_samples):
    """V = gamma x - delta ln x + beta y - alpha ln y drifts by less than 1e-8 relative."""
    s = problem.solve(n_samples=n_samples, seed=5)
    v = problem.invariant(s.fields["u"])  # [N, T]
    drift = ((v - v[:, :1]).abs() / v[:, :1].abs()).max().item()
    assert drift < 1e-8
    assert s.attrs["invariant_rel_drift"] == pytest.approx(drift)


def test_invariant_is_exact_for_the_rhs(problem):
    """grad V . f(u) = 0 identically, so the drift test checks the solver, not the formula."""
    u = (0.2 + 4 * torch.rand(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    u.requires_grad_(True)
    (grad,) = torch.autograd.grad(problem.invariant(u).sum(), u)
    assert ((grad * problem.rhs(0.0, u)).sum(-1).abs().max() < 1e-13)


def test_known_and_learned_terms_split_the_rhs(problem):
    u = torch.tensor([[2.0, 3.0], [0.5, 0.25]], dtype=torch.float64)
    x, y = u[:, 0], u[:, 1]
    torch.testing.assert_close(problem.linear_terms(u), torch.stack([1.3 * x, -1.8 * y], -1))
    torch.testing.assert_close(problem.interaction_terms(u), torch.stack([-0.9 * x * y, 0.8 * x * y], -1))
    torch.testing.assert_close(problem.rhs(0.0, u), problem.linear_terms(u) + problem.interaction_terms(u))


def test_batch_members_equal_their_own_solve(problem):
    """A trajectory does not depend on the others it is batched with (max-norm error control)."""
    batch = problem.solve(n_samples=8, seed=11).fields["u"]
    alone, _ = problem.integrate(batch[5:6, 0], problem.times())
    assert (alone - batch[5:6]).abs().max().item() < 2e-9


def test_resolution_sets_the_time_samples(problem):
    coarse = problem.solve(resolution=31).fields["u"]
    fine = problem.solve(resolution=61)
    assert fine.fields["u"].shape == (1, 61, 2)
    assert (fine.fields["u"][:, ::2] - coarse).abs().max().item() < 2e-9


def test_random_initial_states_seeded_and_in_the_box(problem):
    a = problem.solve(n_samples=32, seed=7).fields
    b = problem.solve(n_samples=32, seed=7).fields
    c = problem.solve(n_samples=32, seed=8).fields
    assert torch.equal(a["u"], b["u"]) and torch.equal(a["u_noisy"], b["u_noisy"])
    assert not torch.equal(a["u"][:, 0], c["u"][:, 0])
    u0 = a["u"][:, 0]
    assert (u0 >= torch.tensor(problem.u0_low)).all() and (u0 <= torch.tensor(problem.u0_high)).all()


def test_noise_is_five_percent_of_each_state_mean(problem):
    """Standardised noise over 256 x 31 x 2 draws: mean within 0.04 (5 sigma), std within 0.03 of 1."""
    s = problem.solve(n_samples=256, seed=2)
    u = s.fields["u"]
    z = (s.fields["u_noisy"] - u) / (0.05 * u.mean(dim=1, keepdim=True))
    assert abs(z.mean().item()) < 0.04
    assert abs(z.std().item() - 1) < 0.03
    quiet = LotkaVolterra(noise=0.0).solve(n_samples=2, seed=2).fields
    assert torch.equal(quiet["u"], quiet["u_noisy"])


def test_float32_raises_tolerances_and_stays_close(problem):
    ref = problem.solve(n_samples=4, seed=1).fields["u"]
    s = LotkaVolterra().to("cpu", torch.float32).solve(n_samples=4, seed=1)
    assert s.fields["u"].dtype == torch.float32
    assert s.attrs["rtol"] == pytest.approx(100 * torch.finfo(torch.float32).eps)
    assert (s.fields["u"].double() - ref).abs().max().item() < 1e-4


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [({"resolution": 1}, "resolution"), ({"n_samples": 0}, "n_samples")],
)
def test_bad_solve_arguments_name_themselves(problem, kwargs, arg):
    with pytest.raises(ValueError, match=f"^{arg}: "):
        problem.solve(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [({"u0": [-1.0, 1.0]}, "u0"), ({"u0_low": [1.0]}, "u0_low"),
     ({"u0_low": [3.0, 3.0], "u0_high": [2.0, 4.0]}, "u0_high"), ({"n_times": 1}, "n_times")],
)
def test_bad_constructor_arguments_name_themselves(kwargs, arg):
    with pytest.raises(ValueError, match=f"^{arg}: "):
        LotkaVolterra(**kwargs)
