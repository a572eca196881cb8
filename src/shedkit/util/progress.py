"""The one progress bar: rich, on stderr, with elapsed time and ETA; a no-op when disabled.

    with progress_bar(len(rows), "scoring", enabled=progress) as advance:
        for batch in batches:
            ...
            advance(len(batch))

    for chunk in track(chunks, "hashing", total=n_chunks, enabled=progress):
        ...
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


@contextmanager
def progress_bar(total: float | None, description: str, enabled: bool = True,
                 transient: bool = False) -> Iterator[Callable[[float], None]]:
    """Yield ``advance(n)``; the bar redraws on each call (no refresh thread competing with
    the model). ``total=None`` shows an indeterminate bar; ``transient`` erases it at the end."""
    if not enabled:
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=Console(stderr=True), auto_refresh=False, transient=transient,
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.update(task, advance=n, refresh=True)


def track(items: Iterable[T], description: str, total: float | None = None, enabled: bool = True,
          transient: bool = True) -> Iterator[T]:
    """Yield ``items``, advancing a bar by one per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(total, description, enabled=enabled, transient=transient) as advance:
        for item in items:
            yield item
            advance(1)
