"""The contract between a method, its problem, the trainer and the commands.

A *method* (PINN, Deep Ritz, FNO, ...) is a :class:`Model`: it names the problem views it requires, builds
its network from ``sciml_cli.nn``, and owns its objective, its data and its evaluation. Nothing
outside the method knows its call convention:

- the trainer calls :meth:`Model.batch` (and :meth:`Model.shard` to keep a rank's share in
  data-parallel training), :meth:`Model.loss` (named, unweighted terms among
  :attr:`Model.loss_terms`, weighted by :attr:`Model.loss_weights` and summed), :meth:`Model.evaluate` and :meth:`Model.scalars`,
  and :meth:`Model.start_phase` before each optimiser phase (a method in stages, such as the
  UDE that replaces its networks by a recovered equation, or the hybrid whose first phase trains
  on single steps, changes stage there; ``sciml train`` checks the phases a model's settings name,
  :meth:`Model.named_phases`, against ``optim`` before any work); the optimiser of a phase
  gets the parameters that require gradients then; a Gauss-Newton type optimiser (``optim=lm``)
  also gets :meth:`Model.least_squares`, the loss as a sum of squared residuals,
  from the models that offer it (:attr:`Model.least_squares_unmet` is ``None``);
- ``sciml eval`` calls :meth:`Model.evaluate` and :meth:`Model.figures`, after checking
  ``resolution=`` against :meth:`Model.evaluation_grid` (a model built for one grid); ``sciml
  train`` also draws :meth:`Model.figures` of its last validation;
- ``sciml solve ckpt=`` calls :meth:`Model.surrogate` to predict what the reference solver
  computed on fresh instances.

Methods that learn one solution field ``u(x)`` (PINN, Deep Ritz) share
:class:`sciml_cli.models.field.FieldModel`: the exact-boundary transform, grid prediction, the
metrics (H1 error where the problem knows its solution), eval figures and the solver stand-in.
The learned iterative reconstructions (learned gradient descent, learned primal-dual, TV with
learned weights) share :class:`sciml_cli.models.unrolled.Unrolled`: phantoms drawn on the fly,
the loss, and scoring against the classical reconstructions. The hybrid solver-in-the-loop
model (:class:`sciml_cli.models.hybrid.Hybrid`) puts its network inside the problem's coarse
step and stands in for the reference solver in ``solve ckpt=`` by rolling out on the coarse grid.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor, nn

from ..constraints import NonNegativeFloat
from ..errors import ConfigError
from ..problems.base import Evaluation, Problem, Solution


class Model(nn.Module):
    """A learnable method that owns its objective.

    The trainer never looks at the model's type. Constructors take the built ``problem`` first
    (so layers can be sized from what the problem declares, without generating data), then the
    YAML keys of ``configs/model/<name>.yaml``.
    """

    #: the problem views this model needs, all of them (classes from ``problems.base``)
    requires: ClassVar[tuple[type, ...]]

    @classmethod
    def unmet(cls, problem: Problem) -> str | None:
        """What this model needs from a problem instance beyond its views (e.g. the UDE: known
        terms), as a phrase following the model's name ("needs ..."), or ``None`` when
        ``problem`` has it. Checked with the views, so
        the problems that fit are found the same way."""
        return None

    #: the names :meth:`loss` may return; ``loss_weights`` may weight only these
    loss_terms: ClassVar[tuple[str, ...]]

    def __init__(self, loss_weights: dict[str, NonNegativeFloat] | None = None) -> None:
        super().__init__()
        terms = getattr(type(self), "loss_terms", None)
        unknown = [name for name in loss_weights or {} if terms is not None and name not in terms]
        if unknown:  # a misspelled weight would otherwise weight nothing, silently
            raise ConfigError(f"model.loss_weights.{unknown[0]}", f"{type(self).__name__} has no loss term "
                                                                  f"{unknown[0]!r}", terms, given=unknown[0])
        self.loss_weights = dict(loss_weights or {})

    @abstractmethod
    def batch(self, problem: Problem, step: int, seed: int) -> dict[str, Tensor]:
        """The training data of ``step``: a pure function of ``(step, seed)`` and of the
        model's state (which the checkpoint carries), so resumed runs see exactly the batches
        an uninterrupted run would have seen."""

    @abstractmethod
    def loss(self, problem: Problem, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Named, unweighted scalar loss terms."""

    @abstractmethod
    def evaluate(self, problem: Problem, resolution: int | None = None, split: str = "test") -> Evaluation:
        """Prediction against the problem's reference, with metrics (the problem's
        ``val_metric`` among them). The trainer validates on ``split="val"``; ``sciml eval``
        scores ``"test"``. Models whose reference is exact may ignore ``split``."""

    def evaluation_grid(self, problem: Problem) -> int | None:
        """The one ``resolution`` :meth:`evaluate` takes (a model built for its grid: the hybrid's
        coarse grid, an unrolled scheme's image size), or None when it takes any the problem
        offers; ``sciml eval`` checks ``resolution=`` against it before any work."""
        return None

    def shard(self, batch: dict[str, Tensor], rank: int, world: int) -> dict[str, Tensor]:
        """This process's share of :meth:`batch` in data-parallel training (``trainer.devices``):
        every tensor split along its first axis into ``world`` interleaved parts, scalars kept.
        Methods whose batch holds entries that are not per sample (a grid, a whole trajectory)
        override it. The loss of a share must be a mean, so that the average of the ranks'
        gradients is the gradient on the whole batch."""
        return {k: v[rank::world] if v.dim() > 0 else v for k, v in batch.items()}

    @property
    def least_squares_unmet(self) -> str | None:
        """Why this model does not offer :meth:`least_squares` (a phrase), or ``None`` when it
        does. Checked before a run that needs it starts. Default: not offered."""
        return "this method does not provide it"

    def least_squares(self, problem: Problem, batch: dict[str, Tensor]
                      ) -> list[tuple[str, Callable[..., Tensor], tuple[Any, ...]]]:
        """The loss terms of :meth:`loss` on ``batch`` as sums of squares: blocks
        ``(term, f, inputs)``, the term being the sum of ``|f(params, *sample)|^2`` over the
        samples of its blocks. ``f`` takes the tuple of trainable parameters (in the order of
        ``parameters()``) and one sample of each of ``inputs`` (indexed along their first axis;
        nested tuples and dicts allowed) and returns that sample's residuals ``[k]``. Pointwise,
        so ``vmap(jacrev(f))`` gives the Jacobian for Gauss-Newton steps; the trainer applies
        :attr:`loss_weights`."""
        raise NotImplementedError(f"{type(self).__name__}: {self.least_squares_unmet}")

    def start_phase(self, problem: Problem, name: str) -> None:
        """Called before the optimiser phase ``name`` starts, also when a run resumes into it.
        Must be deterministic and idempotent (a resumed run calls it again on the restored
        weights). Default: nothing."""

    def named_phases(self) -> dict[str, str]:
        """The optimiser phases this model's settings name, by config key (e.g.
        ``{"model.onestep_phase": "onestep"}``): ``sciml train`` refuses a name the ``optim`` has
        no phase for, before any work. Default: none."""
        return {}

    def scalars(self) -> dict[str, float]:
        """Values logged with the loss terms at every log step (e.g. learned coefficients)."""
        return {}

    def figures(self, problem: Problem, evaluation: Evaluation, title: str) -> dict[str, Any]:
        """Matplotlib figures of an evaluation, by name (``sciml eval`` writes each as
        ``plots/eval_<checkpoint>[_<name>].png``, ``sciml train`` those of its last validation as
        ``plots/prediction[_<name>].png``; the empty name is the main figure). Default:
        reference, prediction and error side by side."""
        from .. import plotting

        return {"": plotting.comparison_figure(evaluation.grid, evaluation.prediction, evaluation.reference,
                                               title=title)}

    def surrogate(self, problem: Problem, solution: Solution, batch_size: int | None = None
                  ) -> tuple[Callable[[], Tensor], Tensor, dict[str, Any]]:
        """``(predict, reference, facts)`` for comparing the model with the reference solver on
        ``solution`` (fresh instances from ``problem.solve``): ``predict()`` returns the model's
        prediction of ``reference`` (same shape, samples first) and is what gets timed;
        ``facts`` are plain values recorded with the comparison (e.g. the batch size used)."""
        raise NotImplementedError(f"{type(self).__name__} cannot stand in for {type(problem).__name__}'s solver")

    def surrogate_resolution(self, problem: Problem) -> int | None:
        """The resolution at which to run the reference solver for :meth:`surrogate`."""
        return getattr(problem, "resolution", None)
