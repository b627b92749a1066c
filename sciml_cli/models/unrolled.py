"""What the learned iterative reconstructions share (learned gradient descent, learned
primal-dual, TV with learned weights): training on phantoms drawn on the fly, the loss, scoring
on the problem's fixed images against the classical reconstructions, and the figures.

A method is a fixed number of unrolled iterations that maps a measurement to an image
(:meth:`Unrolled.reconstruct`); it is trained end to end on the mean squared error to the phantom
(Adler & Öktem 2017, 2018), with new random-ellipse phantoms at every step (a pure function of
the seed and the step, so a resumed run sees the same pairs).
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from ..constraints import NonNegativeFloat, PositiveInt
from ..numerics.image_metrics import psnr
from ..problems.base import Evaluation, InverseProblem
from .base import Model

#: training seeds: ``seed * SEED_STRIDE + step`` for ``trainer.seed < 100`` (below the CT
#: problem's image-set seeds, 1e9 + 1 and 1e9 + 2), and past them, from ``SEED_OFFSET``, for larger
#: seeds: distinct for every (seed, step), never a validation or test image set
SEED_STRIDE = 10_000_000
SEED_OFFSET = 1 << 40


def training_seed(seed: int, step: int) -> int:
    """The phantom seed of training step ``step`` of a run seeded ``seed``."""
    if not 0 <= step < SEED_STRIDE:
        raise ValueError(f"step: the phantom seeds support up to {SEED_STRIDE} steps")
    value = int(seed) * SEED_STRIDE + int(step)
    return value if value < 10**9 else SEED_OFFSET + value


class Unrolled(Model):
    """Base of the unrolled reconstructions.

    Parameters
    ----------
    problem
        Supplies the operator, the objective's gradients and the images (inverse-problem view).
    batch_size
        Phantoms per training step.
    loss_weights
        Weight of the ``mse`` term.
    """

    requires = (InverseProblem,)
    loss_terms = ("mse",)

    def __init__(self, problem: InverseProblem, batch_size: PositiveInt = 8,
                 loss_weights: dict[str, NonNegativeFloat] | None = None) -> None:
        super().__init__(loss_weights=loss_weights)
        self.batch_size = int(batch_size)
        self.size = int(problem.size)

    @abstractmethod
    def reconstruct(self, problem: InverseProblem, data: Tensor) -> Tensor:
        """Images ``[N, S, S]`` from measurements ``[N, ...]``."""

    def _learn_weights(self, problem: InverseProblem, reg_weight: float | None, step_scale: float = 1.0,
                       learn_reg_weight: bool = True, learn_steps: bool = True) -> None:
        """``lambda`` (from ``reg_weight``, else the problem's) and one step per iteration (from
        ``step_scale / L``) as parameters in log space, ``log_reg_weight`` and ``log_steps``."""
        lam = float(problem.reg_weight if reg_weight is None else reg_weight)
        if lam <= 0:
            raise ValueError("reg_weight: the learned lambda starts from a positive value "
                             "(the problem's reg_weight is 0; set model.reg_weight)")
        self.log_reg_weight = nn.Parameter(log_tensor(lam), requires_grad=learn_reg_weight)
        self.log_steps = nn.Parameter(log_tensor(step_scale * problem.step_size(reg_weight=lam), self.iterations),
                                      requires_grad=learn_steps)

    def learned(self) -> dict[str, Any]:
        """The learned scalars of the scheme (regularisation weight, step sizes), plain values."""
        if not hasattr(self, "log_steps"):
            return {}
        steps = self.log_steps.detach().exp().cpu().tolist()
        return {"reg_weight": math.exp(self.log_reg_weight.item()), "step_first": steps[0], "step_last": steps[-1],
                "steps": [round(s, 6) for s in steps]}

    def scalars(self) -> dict[str, float]:
        return {k: v for k, v in self.learned().items() if isinstance(v, float)}

    # -- training ----------------------------------------------------------------------------------
    def batch(self, problem: InverseProblem, step: int, seed: int) -> dict[str, Tensor]:
        images, data = problem.training_pairs(self.batch_size, seed=training_seed(seed, step))
        return {"images": images, "data": data}

    def loss(self, problem: InverseProblem, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        recon = self.reconstruct(problem, batch["data"])
        return {"mse": (recon - batch["images"]).pow(2).mean()}

    # -- evaluation --------------------------------------------------------------------------------
    def evaluation_grid(self, problem: InverseProblem) -> int:
        return self.size

    def evaluate(self, problem: InverseProblem, resolution: int | None = None, split: str = "test") -> Evaluation:
        """PSNR (dB, each image's own range), SSIM and relative L2 on the random-ellipse images of
        ``split`` (``psnr``: the validation metric), and on the Shepp–Logan head of the test
        split (``psnr_shepp_logan``, ...); seconds per reconstructed image."""
        if resolution not in (None, self.evaluation_grid(problem)):
            raise ValueError(f"resolution: the operator is built for {self.size} x {self.size} images "
                             f"(supported: {self.size})")
        metrics: dict[str, float] = {}
        recons: dict[str, Tensor] = {}
        sets = problem.image_sets(split)
        for name, image_set in sets.items():
            start = time.perf_counter()
            recon = self.reconstruct(problem, image_set.data)
            if recon.device.type == "cuda":
                torch.cuda.synchronize(recon.device)
            seconds = (time.perf_counter() - start) / image_set.images.shape[0]
            recons[name] = recon
            suffix = "" if name == "ellipses" else f"_{name}"
            scores = problem.metrics(recon, image_set.images)
            metrics.update({f"{k}{suffix}": v for k, v in scores.items()})
            metrics[f"seconds_per_image{suffix}"] = seconds
        ellipses = sets["ellipses"]
        per_image = psnr(recons["ellipses"].detach().double(), ellipses.images.double())
        details = {"split": split, "learned": self.learned(),
                   "images": {name: s.name for name, s in sets.items()},
                   "psnr_per_image": [round(v, 3) for v in per_image.tolist()]}
        grid = problem.image_grid().to(ellipses.images)
        return Evaluation(metrics, recons["ellipses"], ellipses.images, {"x": grid, "y": grid.clone()},
                          per_sample=_rel_l2(recons["ellipses"], ellipses.images), details=details)

    def figures(self, problem: InverseProblem, evaluation: Evaluation, title: str) -> dict[str, Any]:
        """Ground truth and reconstructions side by side with their PSNR: FBP and this method
        on the first image of each set; on the test split also Tikhonov and TV with their
        validation-chosen ``lambda`` (``sciml eval``)."""
        from .. import plotting

        split = evaluation.details.get("split", "test")
        figures = {}
        for name, image_set in problem.image_sets(split).items():
            truth = image_set.images[:1]
            panels: dict[str, Tensor] = {}
            if split == "test":
                one = type(image_set)(truth, image_set.data[:1], image_set.name)
                panels.update({k: rec.images for k, rec in problem.classical(one).items()})
            else:
                panels["fbp"] = problem.initial(image_set.data[:1])
            with torch.no_grad():
                panels[type(self).__name__] = self.reconstruct(problem, image_set.data[:1])
            scores = {k: psnr(v.detach().double(), truth.double()).item() for k, v in panels.items()}
            figures["" if name == "ellipses" else name] = plotting.reconstruction_figure(
                truth[0], {k: v[0] for k, v in panels.items()}, scores, title=f"{title}: {image_set.name}")
        return figures


def _rel_l2(prediction: Tensor, reference: Tensor) -> Tensor:
    diff = (prediction - reference).detach().flatten(1).double()
    return torch.linalg.vector_norm(diff, dim=1) / torch.linalg.vector_norm(reference.flatten(1).double(), dim=1)


def log_tensor(value: float, n: int | None = None, **factory: Any) -> Tensor:
    """``log(value)`` as a scalar or ``[n]`` tensor: positive parameters are learned in log space.
    Made in float64 (the trainer casts the model to its dtype), so nothing is lost before."""
    v = torch.tensor(math.log(value), dtype=torch.float64, **factory)
    return v if n is None else v.repeat(n)

