"""Side work of a training run, listed by name under ``trainer.callbacks`` in the config."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..problems.base import Evaluation
    from .trainer import Trainer


class Callback:
    """Hooks the trainer calls; override the ones you need."""

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_log(self, trainer: Trainer, logs: dict[str, float]) -> None: ...
    def on_validation(self, trainer: Trainer, evaluation: Evaluation) -> None: ...
    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None: ...
    def close(self) -> None:
        """Release resources; called whether the run ended, failed or was interrupted."""


class RichProgress(Callback):
    """A progress bar (step, phase, loss, lr, it/s, ETA) and a final summary table."""

    def __init__(self, refresh_per_second: float = 4.0) -> None:
        self.refresh_per_second = refresh_per_second
        self.progress = None

    def on_fit_start(self, trainer: Trainer) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[speed]} it/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            refresh_per_second=self.refresh_per_second,
            transient=False,
        )
        self.task = self.progress.add_task(
            self._phase(trainer), total=trainer.total_steps, completed=trainer.step,
            loss="-", lr="-", speed="-",
        )
        self.progress.start()

    @staticmethod
    def _phase(trainer: Trainer) -> str:
        i = min(trainer.phase_index, len(trainer.phases) - 1)
        return f"{trainer.phases[i].name} ({i + 1}/{len(trainer.phases)})"

    def on_log(self, trainer: Trainer, logs: dict[str, float]) -> None:
        task = self.progress.tasks[self.task]
        speed = task.speed
        self.progress.update(
            self.task, completed=trainer.step, description=self._phase(trainer),
            loss=f"{logs['loss/total']:.3e}", lr=f"{logs['lr']:.1e}",
            speed=f"{speed:.1f}" if speed else "-",
        )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        from rich.table import Table

        from .. import output

        table = Table(title=f"run summary: {trainer.run_dir}", show_header=True)
        table.add_column("quantity")
        table.add_column("value", justify="right")
        for key, value in summary.items():
            table.add_row(key, f"{value:.4e}" if isinstance(value, float) and key != "wall_time_s" else str(value))
        output.console().print(table)


class TensorBoard(Callback):
    """Every loss term, lr, gradient norm, validation metrics and a prediction-vs-reference
    image under ``<run>/tb``; hyperparameters with the final metrics at the end."""

    def __init__(self, images: bool = True) -> None:
        self.images = images
        self.writer = None

    def on_fit_start(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a resumed run is about to write again
        self.writer = SummaryWriter(str(trainer.run_dir / "tb"), purge_step=trainer.step or None)

    def on_log(self, trainer: Trainer, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            self.writer.add_scalar(key, value, trainer.step)

    def on_validation(self, trainer: Trainer, evaluation: Evaluation) -> None:
        for key, value in evaluation.metrics.items():
            self.writer.add_scalar(f"val/{key}", value, trainer.step)
        if self.images:
            from .. import plotting

            fig = plotting.comparison_figure(evaluation.grid, evaluation.prediction, evaluation.reference,
                                             title=f"step {trainer.step}")
            self.writer.add_figure("val/prediction", fig, trainer.step, close=True)

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        exp, ssi, sei = hparams(trainer.hparams, metrics)
        with SummaryWriter(str(trainer.run_dir / "tb")) as w:
            w.file_writer.add_summary(exp)
            w.file_writer.add_summary(ssi)
            w.file_writer.add_summary(sei)
            for k, v in metrics.items():
                w.add_scalar(k, v, trainer.step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
