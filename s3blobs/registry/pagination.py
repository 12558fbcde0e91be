"""``n`` and ``last``: the pagination of ``tags/list`` and ``_catalog``, and its Link header.

``n`` must be a whole number; above MAX_PAGE it is capped (the spec lets a registry
return fewer than asked, with a Link to the rest). ``last`` must be a value the
listing could hold (a tag, a repository name), so nothing odd reaches an S3 request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

from .errors import RegistryError

MAX_PAGE = 10_000
_NUMBER = re.compile(r"[0-9]+")


def page_size(args: Mapping[str, str]) -> int | None:
    """``n``, or None when the client did not ask for a page."""
    raw = args.get("n")
    if raw is None:
        return None
    if not _NUMBER.fullmatch(raw):
        raise RegistryError(
            "PAGINATION_NUMBER_INVALID",
            400,
            "invalid number of results requested",
            f"n must be a whole number from 0 (at most {MAX_PAGE} are returned a page)",
        )
    # Compare by length first: no need to turn a thousand digits into an int.
    return MAX_PAGE if len(raw) > 6 else min(int(raw), MAX_PAGE)


def page_start(
    args: Mapping[str, str], valid: Callable[[str], bool], code: str, what: str
) -> str | None:
    """``last``, checked by ``valid``; None when absent or empty."""
    last = args.get("last")
    if not last:
        return None
    if not valid(last):
        raise RegistryError(code, 400, f"invalid {what} in last", last[:200])
    return last


def next_link(path: str, n: int | None, last: str) -> str:
    """The Link header to the page after ``last``."""
    query = urlencode({"n": n, "last": last} if n is not None else {"last": last})
    return f'<{path}?{query}>; rel="next"'
