"""The outermost layer: one record per request, one log line when it is answered.

:class:`RequestLog` gives each request its id (``context.request_id``), makes it
the *current* request for the thread serving it (a contextvar: every log line
written meanwhile carries the id, and every S3 request made for it is counted),
counts the bytes in and out, and once the server has sent the answer (it closes the
body, as every WSGI server must) writes the access line and hands the finished
:class:`Exchange` to its observers (metrics, events). That bookkeeping is done after
the answer went out, so no client waits for it.
Nothing here reads a header value into the log: the path is logged with only
the query parameters the registry API defines, so no token or signature a
client puts in a URL is ever written.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar, Token
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote

from .auth.wsgi import IDENTITY
from .context import REQUEST_ID_HEADER, request_id
from .routes import HEALTH_PATH, match_route

ACCESS_LOG = logging.getLogger("s3blobs.access")
log = logging.getLogger(__name__)

#: Query parameters of the registry API, logged as sent; any other value is replaced by MASK.
LOGGED_PARAMETERS = frozenset(
    {"digest", "mount", "from", "n", "last", "digest-algorithm", "artifactType"}
)

MASK = "REDACTED"
# What a registry path holds (names, tags, digests, upload ids) stays as it is.
_PATH_SAFE = "/:@+=,"

Observer = Callable[["Exchange"], None]


class Exchange:
    """One request and its answer, as the operator sees it."""

    __slots__ = (
        "_route",
        "bytes_in",
        "bytes_out",
        "duration",
        "environ",
        "headers",
        "id",
        "method",
        "params",
        "path",
        "s3_requests",
        "started",
        "status",
    )

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.id = request_id(environ)
        self.method: str = environ.get("REQUEST_METHOD", "GET")
        self.path: str = environ.get("PATH_INFO", "") or "/"
        self.started = time.perf_counter()
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.bytes_in = 0
        self.bytes_out = 0
        self.s3_requests = 0
        self.duration = 0.0
        self._route: str | None = None
        self.params: dict[str, str] = {}

    @property
    def route(self) -> str:
        """The API route's name ('blob', 'manifest', ...), 'healthz', or 'unknown'."""
        if self._route is None:
            # Matched once per request, by whichever layer asks first (routing does).
            matched = match_route(self.environ)
            if matched is not None:
                self._route, self.params = matched.route.name, matched.params
            else:
                self._route = "healthz" if self.path == HEALTH_PATH else "unknown"
        return self._route

    @property
    def query(self) -> str:
        return str(self.environ.get("QUERY_STRING", ""))

    @property
    def user(self) -> str:
        """Who authentication said this is, or '-' (anonymous, or no authentication)."""
        identity = self.environ.get(IDENTITY)
        name = getattr(identity, "name", None)
        return str(name) if name else "-"

    def header(self, name: str) -> str | None:
        """A response header, or None."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def access_entry(self) -> AccessEntry:
        """The access line's values, now (the request has finished)."""
        return AccessEntry(
            time.time(),
            self.id,
            self.method,
            self.path,
            self.query,
            self.status,
            self.bytes_in,
            self.bytes_out,
            self.duration,
            self.s3_requests,
            self.user,
        )


class AccessEntry(NamedTuple):
    """What a finished request's access line says: plain values, taken when it finished,
    so that the line can be formatted later (install_logging's handler formats a batch
    of them when it writes it, off the request's path)."""

    created: float  # time.time() when the request finished
    request_id: str
    method: str
    path: str  # PATH_INFO, as the server decoded it
    query: str
    status: int
    bytes_in: int
    bytes_out: int
    duration: float  # seconds
    s3_requests: int
    user: str

    def message(self, logged_path: str | None = None) -> str:
        """The access line's message: ``GET /v2/ 200 in=0 out=2 0.4ms s3=0 user=-``
        (``logged_path``: logged_path(), when the caller has it already)."""
        # Unpacked at once: reading a named field costs as much as the whole unpacking.
        _, _, method, _, _, status, bytes_in, bytes_out, duration, s3_requests, user = self
        path = self.logged_path() if logged_path is None else logged_path
        return (
            f"{method} {path} {status} in={bytes_in} out={bytes_out} "
            f"{duration * 1000:.1f}ms s3={s3_requests} user={user}"
        )

    def fields(self) -> dict[str, Any]:
        """The access line's fields, for a structured log."""
        return {
            "method": self.method,
            "path": self.logged_path(),
            "status": self.status,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "duration_seconds": round(self.duration, 6),
            "s3_requests": self.s3_requests,
            "user": self.user,
        }

    def logged_path(self) -> str:
        """The path (percent-encoded again, so a decoded newline cannot forge a line)
        and the API's own query parameters; other values are REDACTED."""
        path = _quoted_path(self.path)
        if not self.query:
            return path
        pairs = [
            f"{quote(key)}={quote(value, safe=':') if key in LOGGED_PARAMETERS else MASK}"
            for key, value in parse_qsl(self.query, keep_blank_values=True)
        ]
        return path + "?" + "&".join(pairs)


@functools.lru_cache(maxsize=1024)
def _quoted_path(path: str) -> str:
    # Remembered: a registry is asked for the same few paths over and over.
    return quote(path, safe=_PATH_SAFE)


_current: ContextVar[Exchange | None] = ContextVar("s3blobs_exchange", default=None)


def current_exchange() -> Exchange | None:
    """The request the calling thread is serving, if any."""
    return _current.get()


class RequestLog:
    """WSGI layer: request id, current-request context, byte counts, the access line."""

    def __init__(self, app: Any, observers: Sequence[Observer] = ()) -> None:
        self.app = app
        self.observers = tuple(observers)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        # The exchange is not put in the environ (nothing inside needs it: they read
        # current_exchange()): the environ holds no reference back to it, so a request
        # leaves no reference cycle, and its memory is freed at once, not by the
        # cyclic garbage collector.
        exchange = Exchange(environ)
        if environ.get("CONTENT_LENGTH", "0") not in ("", "0") or environ.get(
            "HTTP_TRANSFER_ENCODING"
        ):
            environ["wsgi.input"] = _CountingInput(environ["wsgi.input"], exchange)

        answer = _Answer(exchange, start_response, self.finish)
        token = _current.set(exchange)
        try:
            answer.body = self.app(environ, answer.start_response)
        except BaseException:
            exchange.status = exchange.status or 500
            self.finish(exchange)
            raise
        finally:
            _current.reset(token)  # set in this frame: the same context
        return answer

    def finish(self, exchange: Exchange) -> None:
        """The answer is sent (or abandoned): log it, then tell the observers. Called
        with the exchange current, so what they log carries its id."""
        exchange.duration = time.perf_counter() - exchange.started
        if ACCESS_LOG.isEnabledFor(logging.INFO):
            entry = exchange.access_entry()
            write = getattr(_sole_handler(), "write_access_line", None)
            if write is None or not write(entry):
                ACCESS_LOG.handle(access_record(entry))
        for observe in self.observers:
            try:
                observe(exchange)
            except Exception:
                # Watching the registry must never break it.
                log.exception("observer %r failed", observe)


def access_record(entry: AccessEntry) -> logging.LogRecord:
    """The access line as a record: what .info() makes (at the time the request
    finished), without looking up the caller's frame (the access line has one caller)."""
    record = ACCESS_LOG.makeRecord(
        ACCESS_LOG.name,
        logging.INFO,
        __file__,
        0,
        entry.message(),
        (),
        None,
        extra={"request_id": entry.request_id, "access": entry},
    )
    record.created, record.msecs = entry.created, msecs(entry.created)
    return record


def msecs(created: float) -> float:
    """The milliseconds of a time, as a LogRecord computes them."""
    return int((created - int(created)) * 1000) + 0.0


def _sole_handler() -> logging.Handler | None:
    """The handler an access record would reach, when it would reach that one only,
    unfiltered by its logger. Such a handler may write the line straight from the
    entry (``write_access_line``, install_logging's handler does): a LogRecord
    and logging's dispatch through three loggers were most of what a line cost. When
    anyone else listens (a handler added anywhere on the way), the record is made."""
    logger: logging.Logger | None = ACCESS_LOG
    if ACCESS_LOG.filters or ACCESS_LOG.disabled:
        return None
    found = None
    while logger is not None:
        for handler in logger.handlers:
            if found is not None:
                return None
            found = handler
        logger = logger.parent if logger.propagate else None
    return found


def _reset(token: Token[Exchange | None]) -> None:
    # try/except, not contextlib.suppress: this runs twice a request, and suppress
    # costs a context manager each time.
    try:  # noqa: SIM105
        _current.reset(token)
    except ValueError:  # a body closed from another context (by garbage collection)
        pass


class _Answer:
    """The app's answer on its way to the server: its start_response notes the status
    and adds the request id, its body is counted as it is sent (with the exchange
    current), and close() finishes the exchange, once. One object a request, where a
    closure and a body wrapper were two."""

    __slots__ = ("_exchange", "_finish", "_finished", "_start_response", "body")

    def __init__(
        self,
        exchange: Exchange,
        start_response: Callable[..., Any],
        finish: Callable[[Exchange], None],
    ) -> None:
        self._exchange = exchange
        self._start_response = start_response
        self._finish = finish
        self._finished = False
        self.body: Iterable[bytes] = ()

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        exchange = self._exchange
        exchange.status = int(status[:3])
        exchange.headers = headers
        # The layers inside spell the header as REQUEST_ID_HEADER does.
        for key, _ in headers:
            if key == REQUEST_ID_HEADER:
                break
        else:
            headers.append((REQUEST_ID_HEADER, exchange.id))
        return self._start_response(status, headers, exc_info)

    def __iter__(self) -> Iterator[bytes]:
        exchange = self._exchange
        token = _current.set(exchange)
        try:
            for chunk in self.body:
                exchange.bytes_out += len(chunk)
                yield chunk
        finally:
            _reset(token)

    def close(self) -> None:
        """The server is done with the answer: whatever it had to send is sent (for a
        HEAD, the headers go out only after the last iteration), so finish now."""
        token = _current.set(self._exchange)
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            if not self._finished:
                self._finished = True
                self._finish(self._exchange)
            _reset(token)


class _CountingInput:
    """``wsgi.input`` that counts the bytes the app reads."""

    __slots__ = ("_exchange", "_stream")

    def __init__(self, stream: Any, exchange: Exchange) -> None:
        self._stream = stream
        self._exchange = exchange

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._stream.read(size)
        self._exchange.bytes_in += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data: bytes = self._stream.readline(size)
        self._exchange.bytes_in += len(data)
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = self._stream.readlines(hint)
        self._exchange.bytes_in += sum(map(len, lines))
        return lines

    def readinto(self, buffer: Any) -> int:
        readinto = getattr(self._stream, "readinto", None)
        if readinto is None:
            data = self._stream.read(len(buffer))
            buffer[: len(data)] = data
            count = len(data)
        else:
            count = int(readinto(buffer) or 0)
        self._exchange.bytes_in += count
        return count

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
