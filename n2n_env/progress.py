"""Progress reporting for long loops: a tqdm bar, one plain line per step, or nothing.

``progress=True`` draws a tqdm bar on stderr; ``progress="lines"`` prints one line per
finished step (epoch or search iteration) instead, a heartbeat for logs and for
``--no-progress``, where a bar's carriage returns are noise but total silence for many
minutes looks like a hang; ``progress=False`` prints nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from tqdm.auto import tqdm

Progress = bool | Literal["lines"]


def check(progress: Any) -> Progress:
    """``progress`` if it is True, False or "lines"; a ValueError otherwise."""
    if isinstance(progress, bool) or (isinstance(progress, str) and progress == "lines"):
        return progress  # type: ignore[return-value]
    raise ValueError(f"progress must be True, False or 'lines', got {progress!r}")


class Heartbeat:
    """The part of tqdm's interface the loops use, printing one line per step."""

    def __init__(self, iterable: Iterable[Any] | None, total: int, initial: int, desc: str,
                 unit: str) -> None:
        self.iterable, self.total, self.n = iterable, total, initial
        self.desc, self.unit = desc, unit
        self.postfix: dict[str, Any] = {}
        self.started = time.perf_counter()

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        for item in self.iterable:
            yield item
            self.update(1)

    def set_postfix(self, **values: Any) -> None:
        """Values for the next :meth:`update`'s line (unlike tqdm, nothing is printed now):
        set a step's values before the update that finishes it, as a loop over the bar
        does when it sets them in its body."""
        self.postfix = values

    def update(self, count: int = 1) -> None:
        self.n += count
        extra = "".join(f", {key} {value}" for key, value in self.postfix.items())
        print(f"{self.desc}: {self.unit} {self.n}/{self.total}{extra} "
              f"({time.perf_counter() - self.started:.1f} s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Nothing to clean up (tqdm's interface)."""


def progress_bar(progress: Progress, iterable: Iterable[Any] | None = None, *, total: int,
                 desc: str, unit: str, initial: int = 0) -> Any:
    """A tqdm bar, a :class:`Heartbeat` or a disabled bar, by ``progress``."""
    if isinstance(progress, str):
        return Heartbeat(iterable, total, initial, desc, unit)
    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit,
                disable=not progress, dynamic_ncols=True)
