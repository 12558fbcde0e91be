"""What every answer carries, and what every request must pass before anything else.

Every response says ``X-Content-Type-Options: nosniff`` (a browser must not guess
HTML out of a blob or a manifest) and a Content-Security-Policy that allows nothing
(no script, no frame, no fetch: the registry serves data, never pages). A
Content-Length that is not a plain number is refused with a JSON 400 here, before a
handler could read it as "no body".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from .context import REQUEST_ID_ADDED, REQUEST_ID_HEADER, request_id
from .errors import RegistryError

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'; sandbox"),
)
_REPLACED = frozenset(name.lower() for name, _ in SECURITY_HEADERS)
_DIGITS = re.compile(r"[0-9]{1,19}")


def answer(
    error: RegistryError, environ: dict[str, Any], start_response: Callable[..., Any]
) -> Iterable[bytes]:
    """Answer with the spec's JSON error body, as the registry app itself would."""
    response = error.response(environ.get("REQUEST_METHOD", "GET"))
    if REQUEST_ID_ADDED not in environ:
        response.headers.add(REQUEST_ID_HEADER, request_id(environ))
    result: Iterable[bytes] = response(environ, start_response)
    return result


class SecurityHeaders:
    """The outermost layer: security headers on every answer, Content-Length checked."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            kept = [(name, value) for name, value in headers if name.lower() not in _REPLACED]
            return start_response(status, kept + list(SECURITY_HEADERS), exc_info)

        length = environ.get("CONTENT_LENGTH", "").strip()
        if length and not _DIGITS.fullmatch(length):
            error = RegistryError(
                "SIZE_INVALID", 400, "invalid Content-Length", "expected a number of bytes"
            )
            return answer(error, environ, start)
        return self.app(environ, start)
