"""The contract between a model, its problem and the trainer."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

from torch import Tensor, nn

from ..problems.base import Evaluation, Problem


class Model(nn.Module):
    """A learnable model that owns its objective.

    The trainer only calls :meth:`batch`, :meth:`loss` and :meth:`evaluate`, weights the named
    loss terms with :attr:`loss_weights` and sums them; it never looks at the model's type.
    """

    #: the problem view this model needs (a class from ``problems.base``)
    view: ClassVar[type]

    def __init__(self, loss_weights: dict[str, float] | None = None) -> None:
        super().__init__()
        self.loss_weights = dict(loss_weights or {})

    @abstractmethod
    def batch(self, problem: Problem, step: int, seed: int) -> dict[str, Tensor]:
        """The training data of ``step``; a pure function of ``(step, seed)`` so resumed runs
        see exactly the batches an uninterrupted run would have seen."""

    @abstractmethod
    def loss(self, problem: Problem, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Named, unweighted scalar loss terms."""

    @abstractmethod
    def evaluate(self, problem: Problem, resolution: int | None = None, split: str = "test") -> Evaluation:
        """Prediction against the problem's reference, with metrics. The trainer validates on
        ``split="val"``; ``sciml eval`` scores ``"test"``. Models whose reference is exact
        (e.g. a PINN against a closed-form solution) may ignore ``split``."""

    def extra_state(self) -> dict[str, Any]:
        """Plain values evaluation needs besides the weights (e.g. normalisation statistics)."""
        return {}
