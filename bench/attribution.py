"""S3 requests by the HTTP request that caused them, for s3blobs served in this process.

The counting S3 server sees every request but not which registry request made it, and
skopeo sends several requests at once. In this process it can be known: a WSGI wrapper
marks the thread serving each request, a botocore hook counts each S3 call against the
request its thread is serving, and the writer's part-upload threads (a thread pool,
s3blobs.writer.ThreadPoolExecutor) are given the request that submitted the work. That
pool is swapped for a labelling subclass while ``attributing()`` is active: the only
change to s3blobs, and only in the benchmark's process.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from s3blobs import writer as writer_module

_serving = threading.local()  # .calls: the Counter of the request this thread serves


@dataclass
class Served:
    kind: str  # "PATCH", "HEAD blob", "POST mount"...
    status: str = ""
    calls: Counter[str] = field(default_factory=Counter)


def request_kind(method: str, path: str, query: str = "") -> str:
    """What an HTTP request to the registry is, in a few words."""
    if method == "PUT":
        return "PUT manifest" if "/manifests/" in path else "PUT blob"
    if method == "POST":
        return "POST mount" if "mount" in parse_qs(query) else "POST upload"
    if method in ("GET", "HEAD"):
        where = "manifest" if "/manifests/" in path else "blob" if "/blobs/" in path else "base"
        return f"{method} {where}"
    return method


class S3CallsByRequest:
    """Wraps a WSGI app; ``take()`` returns the requests served since the last call,
    each with the S3 calls (by operation) it made."""

    def __init__(self, app: Callable[..., Iterable[bytes]], client: Any) -> None:
        self.app = app
        self._served: list[Served] = []
        self._lock = threading.Lock()
        client.meta.events.register("before-call.s3.*", self._count)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        served = Served(
            request_kind(
                environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("QUERY_STRING", "")
            )
        )
        with self._lock:
            self._served.append(served)
        _serving.calls = served.calls  # stays until this thread serves its next request

        def starting(status: str, headers: Any, *args: Any) -> Any:
            served.status = status.split()[0]
            return start_response(status, headers, *args)

        return self.app(environ, starting)

    def _count(self, model: Any, **_: Any) -> None:
        calls = getattr(_serving, "calls", None)
        if calls is None:
            calls = self._unattributed()
        with self._lock:
            calls[model.name] += 1

    def _unattributed(self) -> Counter[str]:
        served = Served("(no request)")
        with self._lock:
            self._served.append(served)
        return served.calls

    def take(self) -> list[Served]:
        with self._lock:
            served, self._served = self._served, []
        return served


class _LabelledPool(ThreadPoolExecutor):
    """A pool whose work counts its S3 calls against the request that submitted it."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        calls = getattr(_serving, "calls", None)

        def labelled() -> Any:
            _serving.calls = calls
            try:
                return fn(*args, **kwargs)
            finally:
                _serving.calls = None

        return super().submit(labelled)


@contextlib.contextmanager
def attributing() -> Iterator[None]:
    original = writer_module.ThreadPoolExecutor  # type: ignore[attr-defined]
    writer_module.ThreadPoolExecutor = _LabelledPool  # type: ignore[attr-defined]
    try:
        yield
    finally:
        writer_module.ThreadPoolExecutor = original  # type: ignore[attr-defined]


def by_kind(served: list[Served]) -> dict[str, tuple[int, Counter[str]]]:
    """'HEAD blob -> 404': (how many such requests, their S3 calls together)."""
    kinds: dict[str, tuple[int, Counter[str]]] = {}
    for request in served:
        label = f"{request.kind} -> {request.status}" if request.status else request.kind
        count, calls = kinds.get(label, (0, Counter()))
        kinds[label] = (count + 1, calls + request.calls)
    return kinds
