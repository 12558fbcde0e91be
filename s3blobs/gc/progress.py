"""Progress of a garbage collection on a terminal (tqdm, on standard error); nothing
when standard error is not a terminal, so logs and ``--json`` output stay clean."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from tqdm import tqdm


class Progress:
    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def phase(
        self, name: str, unit: str = "objects", total: int | None = None, enabled: bool = True
    ) -> Phase:
        return Phase(self.enabled and enabled, name, unit, total)


class Phase:
    """One bar: ``update(n)`` as work is done, ``note(marked=..., ...)`` for figures
    beside it. tqdm's own lock makes both safe from several threads."""

    def __init__(self, enabled: bool, name: str, unit: str, total: int | None) -> None:
        self._bar: Any = (
            tqdm(desc=name, unit=f" {unit}", total=total, file=sys.stderr, leave=True)
            if enabled
            else None
        )

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def note(self, **figures: int) -> None:
        if self._bar is not None:
            self._bar.set_postfix(figures, refresh=False)

    def __enter__(self) -> Phase:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.close()
