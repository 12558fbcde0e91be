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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any, Final
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

#: A finished request, as its access line and the metrics read it (made by
#: Exchange.finish): (time.time() when it finished, request id, method, path as the
#: server decoded it, query string, status, bytes in, bytes out, duration in seconds, S3
#: requests, user, route). A plain tuple of str, int and float on purpose: the cyclic
#: garbage collector stops tracking such a tuple the first time it looks at it, so the
#: thousands waiting for their log batch or their fold cost it nothing. Kept as objects
#: (an Exchange, or even a NamedTuple) they stayed tracked and were promoted to the
#: oldest generation, and full collections of a worker's heap came with them.
Summary = tuple[float, str, str, str, str, int, int, int, float, int, str, str]
# Where each is in a Summary (Final: mypy then knows each one's type).
CREATED: Final = 0
REQUEST_ID: Final = 1
METHOD: Final = 2
PATH: Final = 3
QUERY: Final = 4
STATUS: Final = 5
BYTES_IN: Final = 6
BYTES_OUT: Final = 7
DURATION: Final = 8
S3_REQUESTS: Final = 9
USER: Final = 10
ROUTE: Final = 11

_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


class Exchange:
    """One request and its answer, as the operator sees it, while it is served; once
    answered, :meth:`finish` sums it up (``summary``)."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "duration",
        "environ",
        "headers",
        "id",
        "method",
        "params",
        "path",
        "query",
        "route",
        "s3_requests",
        "started",
        "status",
        "summary",
        "user",
    )

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.id = request_id(environ)
        self.method: str = environ.get("REQUEST_METHOD", "GET")
        self.path: str = environ.get("PATH_INFO", "") or "/"
        self.query: str = environ.get("QUERY_STRING", "")
        self.started = time.perf_counter()
        self.status = 0
        self.headers: Sequence[tuple[str, str]] = ()
        self.bytes_in = 0
        self.bytes_out = 0
        self.s3_requests = 0
        # Set by finish():
        self.duration = 0.0  # seconds
        self.user = "-"  # who authentication said this is; '-': anonymous
        self.route = "unknown"  # the API route's name ('blob', 'manifest', ...), 'healthz'
        self.params: Mapping[str, str] = _NO_PARAMS  # what the route's pattern matched
        self.summary: Summary | None = None

    def finish(self) -> Summary:
        """The answer is sent: note how long it took, who asked (authentication has run)
        and the route, and sum it up."""
        self.duration = time.perf_counter() - self.started
        environ = self.environ
        name = getattr(environ.get(IDENTITY), "name", None)
        if name:
            self.user = str(name)
        matched = match_route(environ)  # matched by routing already, kept in the environ
        if matched is not None:
            self.route, self.params = matched.route.name, matched.params
        elif self.path == HEALTH_PATH:
            self.route = "healthz"
        summary = self.summary = (
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
            self.route,
        )
        return summary

    def header(self, name: str) -> str | None:
        """A response header, or None."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


def access_message(summary: Summary, logged: str | None = None) -> str:
    """The access line's message: ``GET /v2/ 200 in=0 out=2 0.4ms s3=0 user=-``
    (``logged``: logged_path(summary), when the caller has it already)."""
    _, _, method, _, _, status, bytes_in, bytes_out, duration, s3_requests, user, _ = summary
    path = logged_path(summary) if logged is None else logged
    return (
        f"{method} {path} {status} in={bytes_in} out={bytes_out} "
        f"{duration * 1000:.1f}ms s3={s3_requests} user={user}"
    )


def access_fields(summary: Summary, logged: str | None = None) -> dict[str, Any]:
    """The access line's fields, for a structured log (``logged``: as for access_message)."""
    return {
        "method": summary[METHOD],
        "path": logged_path(summary) if logged is None else logged,
        "status": summary[STATUS],
        "bytes_in": summary[BYTES_IN],
        "bytes_out": summary[BYTES_OUT],
        "duration_seconds": round(summary[DURATION], 6),
        "s3_requests": summary[S3_REQUESTS],
        "user": summary[USER],
    }


def logged_path(summary: Summary) -> str:
    """The path (percent-encoded again, so a decoded newline cannot forge a line)
    and the API's own query parameters; other values are REDACTED."""
    path = _quoted_path(summary[PATH])
    query = summary[QUERY]
    if not query:
        return path
    pairs = [
        f"{quote(key)}={quote(value, safe=':') if key in LOGGED_PARAMETERS else MASK}"
        for key, value in parse_qsl(query, keep_blank_values=True)
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
        summary = exchange.finish()
        if ACCESS_LOG.isEnabledFor(logging.INFO):
            write = getattr(_sole_handler(), "write_access_line", None)
            if write is None or not write(summary):
                ACCESS_LOG.handle(access_record(summary))
        for observe in self.observers:
            try:
                observe(exchange)
            except Exception:
                # Watching the registry must never break it.
                log.exception("observer %r failed", observe)


def access_record(summary: Summary) -> logging.LogRecord:
    """The access line as a record: what .info() makes (at the time the request
    finished), without looking up the caller's frame (the access line has one caller)."""
    record = ACCESS_LOG.makeRecord(
        ACCESS_LOG.name,
        logging.INFO,
        __file__,
        0,
        access_message(summary),
        (),
        None,
        extra={"request_id": summary[REQUEST_ID], "access": summary},
    )
    created = summary[CREATED]
    record.created, record.msecs = created, msecs(created)
    return record


def msecs(created: float) -> float:
    """The milliseconds of a time, as a LogRecord computes them (``created % 1.0`` is
    ``created - int(created)`` exactly, with one int() less)."""
    return int(created % 1.0 * 1000) + 0.0


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
    # try/except, not contextlib.suppress: this runs once a streamed body, and suppress
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
        body = self.body
        if type(body) is list or type(body) is tuple:
            # Sending a list runs none of the app's code: counted at once, and iterated
            # by the server without a generator of ours in between.
            self._exchange.bytes_out += sum(map(len, body))
            return iter(body)
        return self._streamed(body)

    def _streamed(self, body: Iterable[bytes]) -> Iterator[bytes]:
        # The app's code runs as the body is produced: with the exchange current.
        exchange = self._exchange
        token = _current.set(exchange)
        try:
            for chunk in body:
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
            _current.reset(token)  # set in this frame: the same context


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
