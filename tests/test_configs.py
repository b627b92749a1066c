"""Every option of every config group composes and passes the checks; pairs fit by views."""

from __future__ import annotations

import pytest
from conftest import generated_problems
from omegaconf import OmegaConf

from sciml_cli import config
from sciml_cli.commands import _fitting_problems, check_compatible, compose
from sciml_cli.errors import ConfigError
from sciml_cli.problems.base import (
    DifferentiableSolver,
    EnergyFunctional,
    InverseProblem,
    OperatorData,
    PhysicsResidual,
    Problem,
    Trajectories,
)
from sciml_cli.problems.burgers import Burgers

GROUPS = ("model", "problem", "optim", "trainer", "experiment")


def options():
    return [(g, o) for g in GROUPS for o in config.group_options(g)]


@pytest.mark.parametrize("group, option", options())
def test_every_option_composes_and_checks(group, option):
    cfg, choices = compose("train", [f"{group}={option}"])
    config.check(cfg)
    assert choices[group] == option
    target = OmegaConf.select(cfg, f"{group}._target_") if group != "experiment" else None
    if target:
        config.import_target(target, group)


@pytest.mark.parametrize("problem", generated_problems())
def test_every_problem_composes_for_solve_and_keys_its_data_by_every_argument(problem):
    cfg, _ = compose("solve", [f"problem={problem}"])
    config.check(cfg)
    instance = config.instantiate(cfg.problem)
    assert isinstance(instance, Problem)
    key = instance.cache_key(split="train")
    # derived, not listed: every constructor argument is in the key unless declared exempt
    assert set(key) == {"problem", "split", *instance.arguments} - instance.cache_exempt
    assert key["split"] == "train" and key["problem"].endswith(type(instance).__qualname__)


def test_a_new_numeric_argument_changes_the_cache_key():
    a, b = Burgers(dt=0.005), Burgers(dt=0.004)
    assert a.cache_key() != b.cache_key()
    assert Burgers(nu=None).cache_key() == Burgers(nu=0.1).cache_key()  # keyed by the resolved value
    assert Burgers(resolution=256).cache_key() == Burgers(resolution=512).cache_key()  # subsampled after


def test_views_follow_the_instance_config():
    assert Burgers(setup="raissi").views() == (PhysicsResidual,)
    assert Burgers(setup="fno").views() == (OperatorData, DifferentiableSolver)


@pytest.mark.parametrize("model", config.group_options("model"))
@pytest.mark.parametrize("problem", generated_problems())
def test_model_problem_pairs_fit_exactly_when_every_view_is_offered(model, problem):
    # the UDE's default model.sindy_phase names the phase `refit`, which optim=ude has
    cfg, _ = compose("train", [f"model={model}", f"problem={problem}", *(["optim=ude"] if model == "ude" else [])])
    model_cls = config.import_target(cfg.model._target_, "model")
    views = config.instantiate(cfg.problem).views()
    if all(v in views for v in model_cls.requires):
        check_compatible(cfg)
    else:
        with pytest.raises(ConfigError, match="Problems that fit") as info:
            check_compatible(cfg)
        assert str(info.value).startswith("problem: ")


def test_problems_that_fit_are_derived_from_the_configs_including_their_setups():
    cfg, _ = compose("train", [])
    assert _fitting_problems(cfg, (PhysicsResidual,)) == ["burgers problem.setup=raissi", "heat", "poisson"]
    assert _fitting_problems(cfg, (EnergyFunctional,)) == ["poisson"]
    assert _fitting_problems(cfg, (OperatorData,)) == ["burgers", "heat2d", "navier_stokes"]
    assert _fitting_problems(cfg, (Trajectories,)) == ["lotka_volterra"]
    assert _fitting_problems(cfg, (InverseProblem,)) == ["ct"]
    assert _fitting_problems(cfg, (DifferentiableSolver,)) == ["burgers", "navier_stokes"]
    assert _fitting_problems(cfg, (PhysicsResidual, OperatorData)) == []  # all views required


def test_incompatible_pair_fails_before_any_work_naming_the_problems_that_fit(sciml):
    proc = sciml("train", "model=pinn", "problem=burgers")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "PINN needs the physics residual view; this Burgers offers operator data" in proc.stderr
    assert "(valid: burgers problem.setup=raissi, heat, poisson)" in proc.stderr
    assert not (sciml.cwd / "outputs").exists()
    proc = sciml("train", "model=pinn", "problem=burgers", "problem.setup=raissi", "--cfg", "job")
    assert proc.returncode == 0


def test_foreign_targets_are_refused():
    cfg = OmegaConf.create({"model": {"_target_": "subprocess.run", "args": ["true"]}})
    with pytest.raises(ConfigError, match="outside the classes sciml may build"):
        config.check(cfg)


@pytest.mark.parametrize("target", ["sciml_cli.rundir.write_json", "torch.nn.functional.relu",
                                    "sciml_cli.numerics.radon.RadonTransform", "torch.nn.init.zeros_"])
def test_only_registered_classes_are_built_never_a_function(target):
    with pytest.raises(ConfigError, match="is not a class sciml may build"):
        config.import_target(target, "model._target_")
