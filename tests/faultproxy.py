"""An S3 fault proxy: HTTP/1.1 on 127.0.0.1 between boto3 and a moto server.

Point a client's ``endpoint_url`` (``S3BLOBS_ENDPOINT_URL``) at ``proxy.url``. Every
request is named by its S3 operation (from method, path and query), recorded, and
forwarded, unless a fault is chosen for it:

- ``"500"``: answer 500 InternalError with S3's XML error body (nothing forwarded);
- ``"503"``: answer 503 SlowDown (nothing forwarded);
- ``"reset"``: reset the client's connection before forwarding (the write never happened);
- ``"drop"``: forward, then reset the client's connection instead of answering
  (the write happened; the client never heard).

Faults come from a seeded ``random.Random`` (``rate`` per request; a fault lasts for a
burst of consecutive attempts of the same operation on the same key, so that some
outlast botocore's retries and reach the caller), or from targeted :class:`Rule`\\ s,
which may also call a hook before or after forwarding (to kill a process at a
precise point). ``proxy.enabled = False`` switches every fault and hook off.

Bodies are read whole (Content-Length or chunked transfer encoding; aws-chunked
content passes through untouched) and forwarded with a Content-Length.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from faultwire import (
    SOCKET_TIMEOUT,
    Request,
    connect,
    error_response,
    forward,
    operation,
    read_body,
    read_head,
    reset,
    send_answer,
)

FAULTS = ("500", "503", "reset", "drop")
_UPLOAD_ID = re.compile(rb"<UploadId>([^<]+)</UploadId>")
_XML_KEY = re.compile(rb"<Key>([^<]*)</Key>")


@dataclass
class Record:
    """One request as the proxy saw it."""

    op: str
    method: str
    key: str  # the object key ('' for bucket operations)
    keys: tuple[str, ...] = ()  # DeleteObjects: the keys in the body
    upload_id: str = ""  # from the query, or from CreateMultipartUpload's answer
    fault: str | None = None  # what the proxy did instead of a plain forward
    status: int | None = None  # the upstream status when forwarded
    at: float = field(default_factory=time.monotonic)

    def touches(self, pattern: re.Pattern[str]) -> bool:
        return any(pattern.search(key) for key in (self.key, *self.keys) if key)


@dataclass
class Rule:
    """A targeted fault: the ``count`` matching requests after ``skip`` of them.

    Matches requests of operation ``op`` (None: any) whose key (or one of a
    DeleteObjects' keys) matches the regex ``key`` (None: any). ``hook`` is called
    with the request's record ``when`` = "before" forwarding or "after" the upstream
    answer arrived; then ``fault`` (if any) applies: "500"/"503"/"reset" replace the
    forward, "drop" forwards and resets instead of answering. A tuple of faults is
    used in turn: ``("reset", "500")`` with ``count=5`` resets the first, and answers
    500 to the second, resets the third...
    """

    op: str | tuple[str, ...] | None = None  # one operation, or any of several
    key: str | None = None
    fault: str | tuple[str, ...] | None = None
    count: int = 1
    skip: int = 0
    hook: Callable[[Record], None] | None = None
    when: str = "before"
    seen: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        faults = (self.fault,) if isinstance(self.fault, str) else self.fault or ()
        for fault in faults:
            if fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}; expected one of {FAULTS}")
        self._faults = faults
        if self.when not in ("before", "after"):
            raise ValueError("when is 'before' or 'after'")
        self._pattern = re.compile(self.key) if self.key is not None else None

    def matches(self, record: Record) -> bool:
        ops = (self.op,) if isinstance(self.op, str) else self.op
        if ops is not None and record.op not in ops:
            return False
        return self._pattern is None or record.touches(self._pattern)

    def next_fault(self) -> str | None:
        """The fault of the firing that just happened (``fired`` counts it)."""
        return self._faults[(self.fired - 1) % len(self._faults)] if self._faults else None

    @property
    def spent(self) -> bool:
        return self.fired >= self.count


class FaultProxy:
    """``with FaultProxy(upstream_url, seed=1, rate=0.1) as proxy:`` ... ``proxy.url``."""

    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 0,
        rate: float = 0.0,
        kinds: tuple[str, ...] = FAULTS,
        burst: tuple[int, int] = (1, 1),
    ) -> None:
        for kind in kinds:
            if kind not in FAULTS:
                raise ValueError(f"unknown fault {kind!r}")
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.random = random.Random(seed)
        self.rate = rate
        self.kinds = kinds
        self.burst = burst
        self.enabled = True
        self.records: list[Record] = []
        self.rules: list[Rule] = []
        self._bursts: dict[tuple[str, str], tuple[str, int]] = {}
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # What tests configure and read --------------------------------------------------

    def add_rule(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self._lock:
            self.rules.clear()
            self._bursts.clear()

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """No faults and no hooks inside the block (setup and verification)."""
        before, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = before

    def mark(self) -> int:
        """A position in the record, for :meth:`since`."""
        with self._lock:
            return len(self.records)

    def since(self, mark: int) -> list[Record]:
        with self._lock:
            return list(self.records[mark:])

    def upload_ids(self) -> set[str]:
        with self._lock:
            return {r.upload_id for r in self.records if r.upload_id}

    def faults_by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._lock:
            for record in self.records:
                if record.fault:
                    counts[record.fault] = counts.get(record.fault, 0) + 1
        return counts

    # The decision for one request ------------------------------------------------------

    def decide(self, record: Record) -> tuple[str | None, Rule | None]:
        """Record a request; its fault (None: forward it) and the rule that chose it."""
        with self._lock:
            self.records.append(record)
            if not self.enabled:
                return None, None
            for rule in self.rules:
                if rule.spent or not rule.matches(record):
                    continue
                if rule.seen < rule.skip:
                    rule.seen += 1
                    continue
                rule.fired += 1
                record.fault = rule.next_fault()
                return record.fault, rule
            ident = (record.op, record.key)
            kind, left = self._bursts.pop(ident, (None, 0))
            if kind is None and self.rate and self.random.random() < self.rate:
                kind, left = self.random.choice(self.kinds), self.random.randint(*self.burst)
            if kind is not None and left > 1:
                self._bursts[ident] = (kind, left - 1)
            record.fault = kind
            return kind, None


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    proxy: FaultProxy


class _Handler(socketserver.BaseRequestHandler):
    """One client connection: requests in turn (keep-alive), one upstream connection."""

    request: socket.socket
    server: _Server

    def handle(self) -> None:
        proxy = self.server.proxy
        self.request.settimeout(SOCKET_TIMEOUT)
        rfile = self.request.makefile("rb")
        upstream: http.client.HTTPConnection | None = None
        try:
            while True:
                head = read_head(rfile)
                if head is None:
                    return
                if (head.header("expect") or "").lower() == "100-continue":
                    self.request.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = read_body(rfile, head)
                record = _record_of(head, body)
                fault, rule = proxy.decide(record)
                if rule and rule.hook and rule.when == "before":
                    rule.hook(record)
                if fault in ("500", "503"):
                    send_answer(self.request, error_response(fault), head.method)
                    continue
                if fault == "reset":
                    return reset(self.request)
                upstream = upstream or connect(proxy.upstream)
                try:
                    answer = forward(upstream, head, body)
                except (OSError, http.client.HTTPException):
                    upstream.close()  # moto closed it: one fresh try
                    upstream = connect(proxy.upstream)
                    answer = forward(upstream, head, body)
                record.status = answer[0]
                if record.op == "CreateMultipartUpload":
                    found = _UPLOAD_ID.search(answer[3])
                    record.upload_id = found.group(1).decode() if found else ""
                if rule and rule.hook and rule.when == "after":
                    rule.hook(record)
                if fault == "drop":
                    return reset(self.request)
                send_answer(self.request, answer, head.method)
                if (head.header("connection") or "").lower() == "close":
                    return
        except (OSError, ValueError, http.client.HTTPException):
            return  # the client went away, or spoke nonsense: nothing to answer
        finally:
            if upstream is not None:
                upstream.close()
            rfile.close()


def _record_of(head: Request, body: bytes) -> Record:
    parts = urlsplit(head.target)
    query = parse_qs(parts.query, keep_blank_values=True)
    op, key = operation(
        head.method, parts.path, query, head.header("x-amz-copy-source") is not None
    )
    keys: tuple[str, ...] = ()
    if op == "DeleteObjects":
        keys = tuple(unquote(k.decode()) for k in _XML_KEY.findall(body))
    return Record(op, head.method, key, keys, upload_id=query.get("uploadId", [""])[0])
