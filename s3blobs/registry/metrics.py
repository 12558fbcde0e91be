"""Prometheus metrics: what the registry answered, what it asked S3, and what it holds.

HTTP figures come from each finished request (``RegistryMetrics.observe``, an
observer of :class:`~.requestlog.RequestLog`): the route, method and status say
when an upload started, committed, failed or was cancelled, a manifest was
pushed or pulled, a redirect was issued, or authentication failed. S3 figures come
from the botocore events the storage's client already emits, registered in
:func:`instrument_s3_client`: one count per HTTP attempt (retries included, as S3
counts them) by operation and outcome, and the latency of each call. The
descriptor cache counts its own hits, misses and evictions (``CacheStats``); they
are copied here as they grow.

Metrics are served on their own listener (``serve_metrics``; S3BLOBS_METRICS_ADDR),
never by the registry's port. With ``PROMETHEUS_MULTIPROC_DIR`` set (several
gunicorn workers) every process writes its figures there and the listener, held by
whichever process binds the address first, serves their sum. That is gunicorn's
master when its ``when_ready`` hook is :func:`gunicorn_when_ready`, so the listener
outlives worker restarts; without the hook, a worker holds it.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections import Counter as Tally
from collections import deque
from itertools import groupby
from operator import itemgetter
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server

from ..errors import ConfigError
from ..s3 import THROTTLED
from ..storage import S3BlobStorage
from .auth.wsgi import AUTH_FAILURE
from .metricfold import Folder, FoldFirst, drain, observe_all
from .requestlog import (
    BYTES_IN,
    BYTES_OUT,
    DURATION,
    METHOD,
    QUERY,
    ROUTE,
    STATUS,
    Exchange,
    Summary,
    current_exchange,
)
from .settings import OperationsSettings

log = logging.getLogger(__name__)

# Before the metrics are defined, so that a scrape of the default registry folds
# first: a registry collects its collectors in the order they were registered.
FOLDER = Folder()
REGISTRY.register(FoldFirst(FOLDER))

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

HTTP_REQUESTS = Counter(
    "s3blobs_http_requests", "HTTP requests answered", ["route", "method", "status"]
)
HTTP_DURATION = Histogram(
    "s3blobs_http_request_duration_seconds",
    "Time from a request's arrival to the last byte of its answer",
    ["route", "method"],
    buckets=_SECONDS,
)
RECEIVED_BYTES = Counter("s3blobs_http_received_bytes", "Request body bytes read", ["route"])
SENT_BYTES = Counter("s3blobs_http_sent_bytes", "Response body bytes sent", ["route"])
REDIRECTS = Counter("s3blobs_blob_redirects", "Blob GETs answered by a redirect to S3")
UPLOADS_STARTED = Counter("s3blobs_uploads_started", "Blob uploads started")
UPLOADS_COMMITTED = Counter("s3blobs_uploads_committed", "Blob uploads committed")
UPLOADS_FAILED = Counter(
    "s3blobs_uploads_failed", "Upload requests (POST with a body, PATCH, PUT) that failed"
)
UPLOADS_CANCELLED = Counter("s3blobs_uploads_cancelled", "Blob uploads cancelled by the client")
UPLOADS_OPEN = Gauge(
    "s3blobs_uploads_open",
    "Uploads started here and not yet committed or cancelled",
    multiprocess_mode="sum",  # started in one worker, finished in another
)
MANIFESTS_PUSHED = Counter("s3blobs_manifests_pushed", "Manifests stored")
MANIFESTS_PULLED = Counter("s3blobs_manifests_pulled", "Manifests served (GET)")
AUTH_FAILURES = Counter("s3blobs_auth_failures", "Requests refused a 401 or 403", ["reason"])
S3_REQUESTS = Counter(
    "s3blobs_s3_requests", "HTTP requests to S3, retries included", ["operation", "outcome"]
)
S3_DURATION = Histogram(
    "s3blobs_s3_request_duration_seconds",
    "Time an S3 call took, its retries included",
    ["operation"],
    buckets=_SECONDS,
)
CACHE_HITS = Counter("s3blobs_descriptor_cache_hits", "Descriptor cache hits")
CACHE_MISSES = Counter("s3blobs_descriptor_cache_misses", "Descriptor cache misses")
CACHE_EVICTIONS = Counter("s3blobs_descriptor_cache_evictions", "Descriptors evicted for room")
GC_RUNS = Counter("s3blobs_gc_runs", "Garbage collection runs", ["outcome"])
GC_DELETED_OBJECTS = Counter("s3blobs_gc_deleted_objects", "Objects deleted by gc", ["kind"])
GC_DELETED_BYTES = Counter("s3blobs_gc_deleted_bytes", "Bytes deleted by gc")
EVENTS_SENT = Counter("s3blobs_events_sent", "Notification events delivered", ["endpoint"])
EVENTS_DROPPED = Counter(
    "s3blobs_events_dropped", "Notification events given up on", ["endpoint", "reason"]
)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# The requests answered, folded in by _fold_http: each one's summary (requestlog.Summary),
# and why each 401 or 403 was refused.
_ANSWERED: deque[Summary] = deque()
_REFUSED: deque[str] = deque()
# Past this many unfolded requests (the folding thread starved), a request folds itself.
_MAX_PENDING = 100_000
# The cache statistics to copy, one export per CacheStats object (by id: kept alive here).
_CACHE_EXPORTS: dict[int, _CacheStatsExport] = {}


def fold_metrics() -> None:
    """Bring the metrics up to date with every request answered and S3 request made so
    far in this process. A scrape of this process's registry does it first by itself;
    otherwise it happens every second (in multiprocess mode, the other processes' scrape
    sees a worker's figures up to a second late)."""
    FOLDER.fold()


class RegistryMetrics:
    """The metrics of one registry app: instruments its storage's S3 client, and
    observes every finished request."""

    def __init__(self, storage: S3BlobStorage) -> None:
        instrument_s3_client(storage.client)
        stats = getattr(storage.descriptor_service_factory, "stats", None)
        if stats is not None:
            _CACHE_EXPORTS.setdefault(id(stats), _CacheStatsExport(stats))

    def observe(self, exchange: Exchange) -> None:
        """Note the request (folded into the metrics within a second, see metricfold)."""
        summary = exchange.summary
        assert summary is not None, "observed before it finished"
        _ANSWERED.append(summary)
        if exchange.status in (401, 403):
            _REFUSED.append(_auth_failure(exchange, exchange.status))
        if not FOLDER.running:
            FOLDER.ensure_running()
        if len(_ANSWERED) > _MAX_PENDING:
            FOLDER.fold()


def _fold_http() -> None:
    answered, refused = drain(_ANSWERED), drain(_REFUSED)
    # Grouped by kind in C (sorted, then grouped: no Python frame per request); a few
    # kinds repeat, and each kind's figures are summed in C too.
    answered.sort(key=_KIND)
    counts: Tally[Any] = Tally()  # metric (a counter, or the open uploads gauge): change
    for (route, method, status), grouped in groupby(answered, _KIND):
        kind = list(grouped)
        if method not in _METHODS:
            method = "OTHER"
        HTTP_REQUESTS.labels(route, method, str(status)).inc(len(kind))
        observe_all(HTTP_DURATION.labels(route, method), list(map(_DURATION, kind)))
        received, sent = sum(map(_BYTES_IN, kind)), sum(map(_BYTES_OUT, kind))
        if received:
            RECEIVED_BYTES.labels(route).inc(received)
        if sent:
            SENT_BYTES.labels(route).inc(sent)
        route_counts = _ROUTE_COUNTS.get(route)
        if route_counts is not None:
            route_counts(counts, method, status, kind)
    for reason in refused:
        counts[AUTH_FAILURES.labels(reason)] += 1
    for metric, change in counts.items():
        if change:
            metric.inc(change)


_KIND = itemgetter(ROUTE, METHOD, STATUS)
_DURATION = itemgetter(DURATION)
_BYTES_IN = itemgetter(BYTES_IN)
_BYTES_OUT = itemgetter(BYTES_OUT)


def _uploads(counts: Tally[Any], method: str, status: int, kind: list[Summary]) -> None:
    """POST .../blobs/uploads/: 202 opens an upload; ``?digest=`` is a whole upload."""
    if method != "POST":
        return
    if status == 202:
        counts[UPLOADS_STARTED] += len(kind)
        counts[UPLOADS_OPEN] += len(kind)
        return
    whole = sum("digest=" in summary[QUERY] for summary in kind)
    counts[UPLOADS_STARTED] += whole
    if status == 201:
        counts[UPLOADS_COMMITTED] += whole
    elif status >= 400:
        counts[UPLOADS_FAILED] += whole


def _upload(counts: Tally[Any], method: str, status: int, kind: list[Summary]) -> None:
    """PATCH, PUT and DELETE on an open upload."""
    if method == "PUT" and status == 201:
        counts[UPLOADS_COMMITTED] += len(kind)
        counts[UPLOADS_OPEN] -= len(kind)
    elif method in ("PUT", "PATCH") and status >= 400:
        counts[UPLOADS_FAILED] += len(kind)
    elif method == "DELETE" and status == 204:
        counts[UPLOADS_CANCELLED] += len(kind)
        counts[UPLOADS_OPEN] -= len(kind)


def _manifest(counts: Tally[Any], method: str, status: int, kind: list[Summary]) -> None:
    if method == "PUT" and status == 201:
        counts[MANIFESTS_PUSHED] += len(kind)
    elif method == "GET" and status == 200:
        counts[MANIFESTS_PULLED] += len(kind)


def _blob(counts: Tally[Any], method: str, status: int, kind: list[Summary]) -> None:
    if method == "GET" and status == 307:
        counts[REDIRECTS] += len(kind)


_ROUTE_COUNTS = {"uploads": _uploads, "upload": _upload, "manifest": _manifest, "blob": _blob}


def _auth_failure(exchange: Exchange, status: int) -> str:
    """Why a request was refused, in a few words (bounded: a label)."""
    environ = exchange.environ
    if status == 403:
        return "denied"  # who it is may not do this
    if AUTH_FAILURE in environ:
        return "rejected_credentials"  # a password or token that does not check out
    if "HTTP_AUTHORIZATION" in environ:
        return "insufficient_scope"  # a valid token without this access
    return "no_credentials"  # the challenge every client starts with


class _CacheStatsExport:
    """Adds what a CacheStats gained since the last fold to the cache counters."""

    def __init__(self, stats: Any) -> None:
        self._stats = stats
        self._seen = (0, 0, 0)

    def sync(self) -> None:  # by one fold at a time
        stats = self._stats
        hits, misses, evictions = stats.hits, stats.misses, getattr(stats, "evictions", 0)
        seen_hits, seen_misses, seen_evictions = self._seen
        self._seen = (hits, misses, evictions)
        if hits > seen_hits:
            CACHE_HITS.inc(hits - seen_hits)
        if misses > seen_misses:
            CACHE_MISSES.inc(misses - seen_misses)
        if evictions > seen_evictions:
            CACHE_EVICTIONS.inc(evictions - seen_evictions)


def _fold_caches() -> None:
    for export in list(_CACHE_EXPORTS.values()):
        export.sync()


# S3 ----------------------------------------------------------------------------------

_STARTED = "s3blobs_metrics_started"
# Each HTTP attempt: (operation, outcome); each call: (operation, seconds). Folded by _fold_s3.
_S3_ATTEMPTS: deque[tuple[str, str]] = deque()
_S3_CALLS: deque[tuple[str, float]] = deque()


def instrument_s3_client(client: Any) -> None:
    """Count every S3 request ``client`` makes (once per client, however often called)."""
    events = client.meta.events
    events.register("before-call.s3.*", _call_started, unique_id="s3blobs-metrics-call")
    events.register("response-received.s3.*", _attempt_answered, unique_id="s3blobs-metrics-try")
    events.register("after-call.s3.*", _call_ended, unique_id="s3blobs-metrics-done")
    events.register("after-call-error.s3.*", _call_ended, unique_id="s3blobs-metrics-error")


def _call_started(context: dict[str, Any], **_: Any) -> None:
    context[_STARTED] = time.perf_counter()


def _attempt_answered(
    event_name: str,
    response_dict: dict[str, Any] | None = None,
    parsed_response: dict[str, Any] | None = None,
    exception: Exception | None = None,
    **_: Any,
) -> None:
    """One HTTP attempt answered (or failed to be): what S3 itself would count."""
    outcome = s3_outcome(response_dict, parsed_response, exception)
    _S3_ATTEMPTS.append((event_name.rpartition(".")[2], outcome))
    if not FOLDER.running:
        FOLDER.ensure_running()
    exchange = current_exchange()
    if exchange is not None:
        exchange.s3_requests += 1


def _call_ended(event_name: str, context: dict[str, Any], **_: Any) -> None:
    started = context.get(_STARTED)
    if started is not None:
        _S3_CALLS.append((event_name.rpartition(".")[2], time.perf_counter() - started))


def _fold_s3() -> None:
    for (operation, outcome), count in Tally(drain(_S3_ATTEMPTS)).items():
        S3_REQUESTS.labels(operation, outcome).inc(count)
    calls: dict[str, list[float]] = {}
    for operation, seconds in drain(_S3_CALLS):
        calls.setdefault(operation, []).append(seconds)
    for operation, values in calls.items():
        observe_all(S3_DURATION.labels(operation), values)


FOLDER.add(_fold_http)
FOLDER.add(_fold_s3)
FOLDER.add(_fold_caches)


def _empty_after_fork() -> None:
    # What the parent gathered is the parent's to fold: a copy here would count twice.
    for pending in (_ANSWERED, _REFUSED, _S3_ATTEMPTS, _S3_CALLS):
        pending.clear()


os.register_at_fork(after_in_child=_empty_after_fork)


def s3_outcome(
    response: dict[str, Any] | None, parsed: dict[str, Any] | None, exception: Exception | None
) -> str:
    """ok, not_found, precondition_failed (the expected misses and races), or one of
    client_error, throttled, server_error, network_error (what an operator alerts on)."""
    if exception is not None or response is None:
        return "network_error"
    status = int(response.get("status_code", 0))
    if status < 400:
        return "ok"
    code = str(((parsed or {}).get("Error") or {}).get("Code", ""))
    if status == 429 or code in THROTTLED:
        return "throttled"
    if status >= 500:
        return "server_error"
    if status == 404:
        return "not_found"
    if status in (409, 412):
        return "precondition_failed"
    return "client_error"


# The listener -----------------------------------------------------------------------


class MetricsListener:
    """The HTTP server answering scrapes; ``port`` is where it listens."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server, self._thread = server, thread
        self.port: int = server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def serve_metrics(addr: tuple[str, int]) -> MetricsListener | None:
    """Serve the metrics on ``addr``. In multiprocess mode the address is shared by
    every worker: the first to bind serves all, and the others get None."""
    host, port = addr
    registry: Any = REGISTRY
    directory = multiprocess_dir()
    if directory is not None:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        registry.register(FoldFirst(FOLDER))  # this process's own figures, up to date
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    try:
        server, thread = _start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        if directory is not None and exc.errno == errno.EADDRINUSE:
            log.info("metrics: %s:%d is served by another process", host, port)
            return None
        hint = (
            " (several worker processes? set PROMETHEUS_MULTIPROC_DIR so they share it)"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        raise ConfigError(
            f"S3BLOBS_METRICS_ADDR={host}:{port}: cannot listen there: {exc.strerror}{hint}"
        ) from None
    listener = MetricsListener(server, thread)
    log.info("metrics on http://%s:%d/metrics", host, listener.port)
    return listener


def gunicorn_when_ready(server: Any) -> None:
    """gunicorn's ``when_ready`` hook: in multiprocess mode the master serves the
    metrics of every worker (the workers find the address taken and leave it).
    Otherwise it does nothing: the master has no figures of its own to serve."""
    addr = OperationsSettings.from_env().metrics_addr
    if addr is not None and multiprocess_dir() is not None:
        serve_metrics(addr)
