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

Where the access line goes is decided once a batch, not once a request: the logger's
level per request (as ``logger.info`` would), the handlers that would receive it once
(:func:`access_sink`), until the handler that takes the lines writes them (at most its
``max_delay`` later), which has it decided again. A handler added to the access
logger's way meanwhile gets the lines of the next batch on.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import parse_qsl, quote

from .auth.wsgi import IDENTITY
from .context import REQUEST_ID_ADDED, REQUEST_ID_HEADER, request_id
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
    answered, :meth:`finish` sums it up (``summary``). It is
    also the answer on its way to the server (one object a request): its
    start_response notes the status and adds the request id, its body is counted as it
    is sent, and close() finishes it."""

    __slots__ = (
        "_observers",
        "_start_response",
        "body",
        "bytes_in",
        "bytes_out",
        "environ",
        "headers",
        "id",
        "s3_requests",
        "started",
        "status",
        "summary",
    )

    def __init__(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any] | None = None,
        observers: tuple[Observer, ...] = (),
    ) -> None:
        # RequestLog gives the server's start_response and its observers; a test may
        # make one of its own and finish() it.
        self.environ = environ
        self.id = request_id(environ)
        self.started = time.perf_counter()
        self.status = 0
        self.headers: Sequence[tuple[str, str]] = ()
        self.bytes_in = 0
        self.bytes_out = 0
        self.s3_requests = 0
        self.body: Iterable[bytes] = ()
        self.summary: Summary | None = None
        self._start_response = start_response or _not_served
        self._observers = observers

    def finish(self) -> Summary:
        """The answer is sent: note how long it took, who asked (authentication has run)
        and the route, and sum it up."""
        environ = self.environ
        name = getattr(environ.get(IDENTITY), "name", None)
        matched = match_route(environ)  # matched by routing already, kept in the environ
        path = environ.get("PATH_INFO", "") or "/"
        if matched is not None:
            route = matched.route.name
        else:
            route = "healthz" if path == HEALTH_PATH else "unknown"
        summary = self.summary = (
            time.time(),
            self.id,
            environ["REQUEST_METHOD"],
            path,
            environ.get("QUERY_STRING", ""),
            self.status,
            self.bytes_in,
            self.bytes_out,
            time.perf_counter() - self.started,
            self.s3_requests,
            str(name) if name else "-",
            route,
        )
        return summary

    @property
    def finished(self) -> Summary:
        """The summary, once finish() has made it (the observers get it so)."""
        assert self.summary is not None, "not finished"
        return self.summary

    @property
    def params(self) -> Mapping[str, str]:
        """What the route's pattern matched."""
        matched = match_route(self.environ)
        return matched.params if matched is not None else _NO_PARAMS

    def header(self, name: str) -> str | None:
        """A response header, or None."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    # The answer, as the server sees it ----------------------------------------------

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        self.status = STATUS_CODE[status]
        self.headers = headers
        headers.append((REQUEST_ID_HEADER, self.id))  # the layers inside leave it to us
        return self._start_response(status, headers, exc_info)

    def __iter__(self) -> Iterator[bytes]:
        # map, not a generator: no frame of ours to make and finish for a body that has
        # nothing to send (a HEAD's), and a call per chunk for one that has.
        return map(self._counted, self.body)

    def _counted(self, chunk: bytes) -> bytes:
        self.bytes_out += len(chunk)
        return chunk

    def close(self) -> None:
        """The server is done with the answer: whatever it had to send is sent (for a
        HEAD, the headers go out only after the last iteration). Close the app's body,
        then (once) finish: write the access line and tell the observers. The exchange
        is current until then (see RequestLog), so what they log carries its id."""
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            if self.summary is None:
                summary = self.finish()
                if ACCESS_LOG.isEnabledFor(logging.INFO):
                    _sink(summary)
                for observe in self._observers:
                    try:
                        observe(self)
                    except Exception:
                        # Watching the registry must never break it.
                        log.exception("observer %r failed", observe)
            # Cleared, not reset to what was current before: a thread serves one request
            # at a time, so that could only be an answer its server never closed, and
            # it would be current again for good. Only if it is this one: a server that
            # closed it from another thread must not clear the request served there.
            if _current.get() is self:
                _current.set(None)


class _NumberText(dict[int, str]):
    """str(n), looked up: formatting a number costs some ten times as much, and an
    access line has five. Filled with the small ones, most of what is logged; any other
    is made when asked for."""

    def __missing__(self, number: int) -> str:
        return str(number)


NUMBER_TEXT = _NumberText((number, str(number)) for number in range(1000))
DIGITS = "0123456789"


class _StatusCode(dict[str, int]):
    """The code of a WSGI status line (``"404 NOT FOUND"``: 404), looked up: an app
    answers with a few lines, over and over, and parsing one costs five times as much.
    Remembered up to a bound (a status line is the app's, not the client's)."""

    def __missing__(self, status: str) -> int:
        code = int(status[:3])
        if len(self) < 256:
            self[status] = code
        return code


STATUS_CODE = _StatusCode()


def access_message(summary: Summary, logged: str | None = None) -> str:
    """The access line's message: ``GET /v2/ 200 in=0 out=2 0.4ms s3=0 user=-``, the
    duration in milliseconds rounded to a tenth, half up (``logged``: the logged path,
    when the caller has it already). TextFormatter.format_access_lines writes it too,
    inline (a call a line less); a test holds the two equal."""
    _, _, method, path, query, status, bytes_in, bytes_out, duration, s3_requests, user, _ = summary
    if logged is None:
        logged = logged_path(path, query)
    tenths = int(duration * 10000.0 + 0.5)  # of a millisecond
    return (
        f"{method} {logged} {NUMBER_TEXT[status]} in={NUMBER_TEXT[bytes_in]} "
        f"out={NUMBER_TEXT[bytes_out]} {NUMBER_TEXT[tenths // 10]}.{DIGITS[tenths % 10]}ms "
        f"s3={NUMBER_TEXT[s3_requests]} user={user}"
    )


def access_fields(summary: Summary, logged: str | None = None) -> dict[str, Any]:
    """The access line's fields, for a structured log (``logged``: as for access_message)."""
    return {
        "method": summary[METHOD],
        "path": logged_path(summary[PATH], summary[QUERY]) if logged is None else logged,
        "status": summary[STATUS],
        "bytes_in": summary[BYTES_IN],
        "bytes_out": summary[BYTES_OUT],
        "duration_seconds": round(summary[DURATION], 6),
        "s3_requests": summary[S3_REQUESTS],
        "user": summary[USER],
    }


# Remembered: a registry is asked for the same few paths over and over.
@functools.lru_cache(maxsize=4096)
def logged_path(path: str, query: str) -> str:
    """The path (percent-encoded again, so a decoded newline cannot forge a line)
    and the API's own query parameters; other values are REDACTED."""
    quoted = quote(path, safe=_PATH_SAFE)
    if not query:
        return quoted
    pairs = [
        f"{quote(key)}={quote(value, safe=':') if key in LOGGED_PARAMETERS else MASK}"
        for key, value in parse_qsl(query, keep_blank_values=True)
    ]
    return quoted + "?" + "&".join(pairs)


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
        exchange = Exchange(environ, start_response, self.observers)
        environ[REQUEST_ID_ADDED] = True  # by start_response
        if environ.get("CONTENT_LENGTH", "0") not in ("", "0") or environ.get(
            "HTTP_TRANSFER_ENCODING"
        ):
            environ["wsgi.input"] = _CountingInput(environ["wsgi.input"], exchange)
        # Current from here until the server closes the answer (Exchange.close clears
        # it): the app's code that runs as a streamed body is sent, and close(), are
        # served by the same thread, in the same context. Set once a request, not again
        # around each part.
        _current.set(exchange)
        try:
            exchange.body = self.app(environ, exchange.start_response)
        except BaseException:
            exchange.status = exchange.status or 500
            exchange.close()
            raise
        return exchange


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


def _not_served(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    raise RuntimeError("an Exchange made without RequestLog has no server to answer")


#: What takes a finished request's summary for its access line.
AccessSink = Callable[[Summary], object]


def _as_record(summary: Summary) -> None:
    """The access line as a record, for every handler on the access logger's way."""
    ACCESS_LOG.handle(access_record(summary))


def _deciding(summary: Summary) -> None:
    """The sink while none is decided: decides (access_sink), and passes this one on."""
    access_sink()(summary)


_sink: AccessSink = _deciding


def access_sink() -> AccessSink:
    """What takes the summaries of finished requests, until :func:`forget_access_sink`:
    when the access record would reach one handler only, unfiltered by its logger,
    what that handler's ``access_line_sink()`` gives, if it has one (install_logging's
    takes the summary itself, while it writes access lines unfiltered: a LogRecord and
    logging's dispatch through three loggers were most of what a line cost); else a
    record of each, for whoever listens."""
    global _sink
    handler_sink = getattr(_sole_handler(), "access_line_sink", None)
    sink = handler_sink() if handler_sink is not None else None
    _sink = sink if sink is not None else _as_record
    return _sink


def forget_access_sink() -> None:
    """Have the next access line decide its way again (access_sink): the handler that
    takes them calls this when it writes a batch, and install_logging when it
    installs or removes one."""
    global _sink
    _sink = _deciding


def _sole_handler() -> logging.Handler | None:
    """The handler an access record would reach, when it would reach that one only,
    unfiltered by its logger."""
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
