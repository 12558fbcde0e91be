"""Progress bars on standard error, when it is a terminal; otherwise nothing."""

from __future__ import annotations

import sys
from typing import Any


def progress(total: int | None, description: str, initial: int = 0) -> Any:
    """A tqdm bar counting bytes (``update(n)``, ``close()``, a context manager); a
    disabled one, which draws nothing, when standard error is not a terminal."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=description,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        leave=False,
    )
