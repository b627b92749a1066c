"""Every option of every config group composes and passes the checks; pairs fit by views."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from sciml_cli import config
from sciml_cli.commands import check_compatible, compose
from sciml_cli.errors import ConfigError
from sciml_cli.problems.base import PhysicsResidual

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


@pytest.mark.parametrize("problem", config.group_options("problem"))
def test_every_problem_composes_for_solve(problem):
    cfg, _ = compose("solve", [f"problem={problem}"])
    config.check(cfg)
    instance = config.instantiate(cfg.problem)
    assert callable(instance.solve)


@pytest.mark.parametrize("model", config.group_options("model"))
@pytest.mark.parametrize("problem", config.group_options("problem"))
def test_model_problem_pairs_fit_exactly_when_the_view_is_offered(model, problem):
    cfg, _ = compose("train", [f"model={model}", f"problem={problem}"])
    model_cls = config.import_target(cfg.model._target_, "model")
    problem_cls = config.import_target(cfg.problem._target_, "problem")
    if issubclass(problem_cls, model_cls.view):
        check_compatible(cfg)
    else:
        with pytest.raises(ConfigError, match="problems that do") as info:
            check_compatible(cfg)
        assert str(info.value).startswith("problem: ")


def test_incompatible_pair_fails_before_any_work_naming_the_problems_that_fit(sciml):
    offering = [p for p in config.group_options("problem")
                if issubclass(config.import_target(OmegaConf.load(config.config_dir() / "problem" / f"{p}.yaml")._target_, p),
                              PhysicsResidual)]
    proc = sciml("train", "model=pinn", "problem=ct")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "does not offer the physics residual view" in proc.stderr
    assert f"(valid: {', '.join(offering)})" in proc.stderr
    assert not (sciml.cwd / "outputs").exists()


def test_foreign_targets_are_refused():
    cfg = OmegaConf.create({"model": {"_target_": "subprocess.run", "args": ["true"]}})
    with pytest.raises(ConfigError, match="outside the classes sciml may build"):
        config.check(cfg)
