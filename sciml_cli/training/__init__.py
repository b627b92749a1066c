"""The one training loop, its checkpoints and callbacks."""

from .trainer import Phase, Trainer

__all__ = ["Phase", "Trainer"]
