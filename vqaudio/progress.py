"""Rich progress bars for the command line (library code reports progress through callbacks)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

console = Console(stderr=True)


class _RateColumn(TransferSpeedColumn):
    """Items per second (the transfer-speed column says bytes/s; this says samples/s or files/s)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task):  # type: ignore[override]
        from rich.text import Text

        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {self.unit}/s" if speed else f"? {self.unit}/s", style="progress.data.speed")


def _bar(unit: str) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@contextmanager
def progress_bar(description: str, total: int | None, unit: str) -> Iterator[Callable[..., None]]:
    """Yield `update(done)`; shows done/total, rate in `unit`/s, elapsed and time left.

    The bar appears at the first update, so an error found before any work prints only itself."""
    progress = _bar(unit)
    task = None

    def update(done: int, new_total: int | None = None) -> None:
        nonlocal task
        if task is None:
            progress.start()
            task = progress.add_task(description, total=new_total or total)
        progress.update(task, completed=done, total=new_total or total)

    try:
        yield update
    finally:
        if task is not None:
            progress.stop()


@contextmanager
def preparation_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """Yield `update(done, total)` for work whose total is known only when it starts."""
    with progress_bar(description, None, "files") as update:
        yield update


class StepBar:
    """The training bar: steps done of the total, time left, and the latest figures."""

    def __init__(self, progress: Progress, task: Any) -> None:
        self._progress = progress
        self._task = task

    def update(self, completed: int | None = None, summary: str | None = None, description: str | None = None) -> None:
        fields: dict[str, Any] = {}
        if completed is not None:
            fields["completed"] = completed
        if summary is not None:
            fields["summary"] = summary
        if description is not None:
            fields["description"] = description
        self._progress.update(self._task, **fields)


@contextmanager
def step_bar(total: int, completed: int, console: Console, enabled: bool = True) -> Iterator[StepBar]:
    """A bar for `total` training steps starting at `completed`; nothing is drawn when not `enabled`."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[summary]}"),
        console=console,
        disable=not enabled,
        transient=False,
    )
    with progress:
        yield StepBar(progress, progress.add_task("train", total=total, completed=completed, summary=""))


@contextmanager
def count_bar(description: str, total: int, console: Console, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A bar of `total` units of long work (a sweep's trials) on `console`; yields `update(done)`.
    Lines printed on the same console while it runs appear above it."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda done: progress.update(task, completed=done)
