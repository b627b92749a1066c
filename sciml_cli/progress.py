"""Progress bars for long numerical work: solver time loops and dataset generation.

A bar is drawn with rich on stderr, and only while the switch is on (:func:`enable`; ``sciml
solve`` sets it from its ``progress`` key) and stderr is a terminal. Otherwise
:func:`track_steps` hands back a bar whose ``advance`` does nothing, so a solver may call it
every time step. A drawn bar is updated at most every :data:`REFRESH_S` seconds, and appears
only once the work has run :data:`DELAY_S` seconds, so quick solves print nothing extra::

    from sciml_cli import progress

    with progress.track_steps(n_steps, "navier_stokes: time steps") as bar:
        for _ in range(n_steps):
            w_hat = step(w_hat)
            bar.advance()

Bars nest: one opened while another is open (a solver inside dataset generation) is a second
line of the same display, removed when it closes. If another rich live display is already
running on rich's global console (the training progress bar), the bars are drawn inside it
(rich >= 14 nests live displays) or, where rich cannot do that, not at all.

Nothing here imports torch, and rich is imported only when a bar is drawn.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

__all__ = ["DELAY_S", "REFRESH_S", "Bar", "enable", "enabled", "is_enabled", "track_steps"]

#: seconds of work before its bar appears (work that ends sooner prints nothing)
DELAY_S = 1.0
#: seconds between two updates of a drawn bar; ``advance`` in between only counts
REFRESH_S = 0.1

_NEVER = float("inf")
_enabled = True
_console: Console | None = None
_display: _Display | None = None


def enable(on: bool = True, console: Console | None = None) -> None:
    """Switch progress bars on or off for this process.

    ``console``: draw on this rich console (when it is a terminal, e.g. ``Console(file=buf,
    force_terminal=True)``) instead of on stderr (when stderr is a terminal).
    """
    global _enabled, _console
    _enabled, _console = bool(on), console


def is_enabled() -> bool:
    """Whether the switch is on (a bar is still only drawn on a terminal)."""
    return _enabled


@contextlib.contextmanager
def enabled(on: bool = True, console: Console | None = None) -> Iterator[None]:
    """:func:`enable` for the ``with`` block; the previous setting is restored after it."""
    previous = (_enabled, _console)
    enable(on, console)
    try:
        yield
    finally:
        enable(*previous)


class _NullBar:
    """The bar of work that is not shown: every method does nothing."""

    __slots__ = ()
    active = False

    def __enter__(self) -> _NullBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def advance(self, n: float = 1) -> None:
        pass


_NULL = _NullBar()


def track_steps(
    total: float | None, description: str, *, delay: float | None = None
) -> Bar | _NullBar:
    """A progress bar over ``total`` steps, for a ``with`` block; ``bar.advance(n)`` counts.

    Parameters
    ----------
    total
        Steps (or any amount, e.g. simulated time) the work takes; None: unknown (the bar
        pulses and shows the elapsed time).
    description
        The bar's label, e.g. ``"navier_stokes: time steps"``.
    delay
        Seconds after the outermost open bar began before the display appears (default
        :data:`DELAY_S`); 0 shows it at once.

    Returns
    -------
    Bar
        Or, when nothing will be drawn (switch off, not a terminal, or an earlier display that
        could not start), a bar whose methods do nothing. ``bar.active`` tells them apart, for
        callers that would spend work only to feed the bar.
    """
    if _display is not None:  # nested: join the open display (or stay quiet with it)
        return _NULL if _display.dead else Bar(total, description, delay)
    if not _enabled or not _is_terminal():
        return _NULL
    return Bar(total, description, delay)


def _is_terminal() -> bool:
    if _console is not None:
        return bool(_console.is_terminal)
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except ValueError:  # a closed stream
        return False


class Bar:
    """One line of the progress display; made by :func:`track_steps`, used in a ``with``."""

    active = True

    def __init__(self, total: float | None, description: str, delay: float | None = None) -> None:
        self.total, self.description = total, str(description)
        self.delay = DELAY_S if delay is None else float(delay)
        self.completed: float = 0
        self._task: TaskID | None = None
        self._due = _NEVER  # perf_counter time of the next update; until then advance only counts
        self._display: _Display | None = None

    def __enter__(self) -> Bar:
        global _display
        if _display is None:
            _display = _Display(_console)
        self._display = display = _display
        display.bars.append(self)
        if display.progress is not None:
            self._attach(display.progress)
        elif self.delay <= 0:
            display.show()
        else:
            self._due = display.start + self.delay
        return self

    def advance(self, n: float = 1) -> None:
        """Count ``n`` more steps done; redraws at most every :data:`REFRESH_S` seconds."""
        self.completed += n
        if time.perf_counter() >= self._due:
            self._update()

    def _update(self) -> None:
        display = self._display
        if display is None or display.dead:
            self._due = _NEVER
            return
        if display.progress is None:
            display.show()  # attaches every open bar, this one included
            if display.progress is None:
                return
        display.progress.update(self._task, completed=self.completed)
        self._due = time.perf_counter() + REFRESH_S

    def _attach(self, progress: Progress) -> None:
        self._task = progress.add_task(self.description, total=self.total, completed=self.completed)
        self._due = time.perf_counter() + REFRESH_S

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        global _display
        display, self._display, self._due = self._display, None, _NEVER
        if display is None:
            return
        if self in display.bars:
            display.bars.remove(self)
        progress = display.progress
        if progress is not None and self._task is not None:
            if display.bars:  # an inner bar: its line goes when its work is done
                progress.remove_task(self._task)
            elif exc_type is None and self.total is None:  # finished work of unknown size
                done = max(self.completed, 1)
                progress.update(self._task, total=done, completed=done)
            else:
                progress.update(self._task, completed=self.completed)
        if not display.bars:
            display.stop()
            if _display is display:
                _display = None


class _Display:
    """The rich display that the open bars share, started once the first is due."""

    def __init__(self, console: Console | None) -> None:
        self.console = console
        self.bars: list[Bar] = []
        self.start = time.perf_counter()
        self.progress: Progress | None = None
        self.dead = False  # could not start: every bar of it stays quiet

    def show(self) -> None:
        if self.progress is not None or self.dead:
            return
        from rich.console import Console
        from rich.errors import LiveError
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console, nested = self.console, False
        if console is None:
            import rich

            host = rich.get_console()
            # a live display (the training bar) runs on rich's console: starting on that
            # console nests in it (rich >= 14) or raises LiveError (older); another console
            # would draw over it
            if getattr(host, "_live_stack", None) or getattr(host, "_live", None) is not None:
                console, nested = host, True
            else:
                console = Console(stderr=True)
        progress = Progress(
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=5,
            transient=nested,  # inside another display, leave nothing behind in it
            # a redirected stdout must not be routed to the terminal through the bar
            redirect_stdout=_stdout_is_terminal(),
        )
        try:
            progress.start()
        except LiveError:
            self.dead = True
            return
        self.progress = progress
        for bar in self.bars:
            bar._attach(progress)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout is not None and sys.stdout.isatty()
    except ValueError:
        return False
