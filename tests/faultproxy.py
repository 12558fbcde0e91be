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
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import parse_qs, unquote, urlsplit

FAULTS = ("500", "503", "reset", "drop")
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "expect", "te", "trailer", "upgrade"}
)
_ERRORS = {
    "500": (500, "Internal Server Error", "InternalError", "We encountered an internal error."),
    "503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
}
_UPLOAD_ID = re.compile(rb"<UploadId>([^<]+)</UploadId>")
_XML_KEY = re.compile(rb"<Key>([^<]*)</Key>")
SOCKET_TIMEOUT = 60.0


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


def operation(method: str, path: str, query: dict[str, list[str]], copy: bool) -> tuple[str, str]:
    """(S3 operation, object key) of a path-style request."""
    bucket_and_key = unquote(path.lstrip("/")).split("/", 1)
    key = bucket_and_key[1] if len(bucket_and_key) == 2 else ""
    if not key:
        bucket_ops = {
            "HEAD": "HeadBucket",
            "PUT": "CreateBucket",
            "DELETE": "DeleteBucket",
        }
        if method == "GET":
            if "uploads" in query:
                return "ListMultipartUploads", key
            if "location" in query:
                return "GetBucketLocation", key
            if "lifecycle" in query:
                return "GetBucketLifecycleConfiguration", key
            return ("ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"), key
        if method == "POST" and "delete" in query:
            return "DeleteObjects", key
        return bucket_ops.get(method, f"{method}Bucket"), key
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload", key
        if "uploadId" in query:
            return "CompleteMultipartUpload", key
    elif method == "PUT":
        if "partNumber" in query and "uploadId" in query:
            return ("UploadPartCopy" if copy else "UploadPart"), key
        return ("CopyObject" if copy else "PutObject"), key
    elif method == "GET":
        return ("ListParts" if "uploadId" in query else "GetObject"), key
    elif method == "HEAD":
        return "HeadObject", key
    elif method == "DELETE":
        return ("AbortMultipartUpload" if "uploadId" in query else "DeleteObject"), key
    return f"{method}Object", key


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

    def _decide(self, record: Record) -> tuple[str | None, Rule | None]:
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


class _Request:
    def __init__(self, method: str, target: str, headers: list[tuple[str, str]]) -> None:
        self.method = method
        self.target = target
        self.headers = headers

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


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
                head = _read_head(rfile)
                if head is None:
                    return
                if (head.header("expect") or "").lower() == "100-continue":
                    self.request.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = _read_body(rfile, head)
                record = _record_of(head, body)
                fault, rule = proxy._decide(record)
                if rule and rule.hook and rule.when == "before":
                    rule.hook(record)
                if fault in ("500", "503"):
                    self._send(*_error_response(fault), head.method)
                    continue
                if fault == "reset":
                    return self._reset()
                upstream = upstream or _connect(proxy.upstream)
                try:
                    answer = _forward(upstream, head, body)
                except (OSError, http.client.HTTPException):
                    upstream.close()  # moto closed it: one fresh try
                    upstream = _connect(proxy.upstream)
                    answer = _forward(upstream, head, body)
                record.status = answer[0]
                if record.op == "CreateMultipartUpload":
                    found = _UPLOAD_ID.search(answer[3])
                    record.upload_id = found.group(1).decode() if found else ""
                if rule and rule.hook and rule.when == "after":
                    rule.hook(record)
                if fault == "drop":
                    return self._reset()
                self._send(*answer, head.method)
                if (head.header("connection") or "").lower() == "close":
                    return
        except (OSError, ValueError, http.client.HTTPException):
            return  # the client went away, or spoke nonsense: nothing to answer
        finally:
            if upstream is not None:
                upstream.close()
            rfile.close()

    def _send(
        self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes, method: str
    ) -> None:
        if method == "HEAD":
            body = b""  # a HEAD answer has no body, whatever its headers say
        lines = [f"HTTP/1.1 {status} {reason}"]
        for name, value in headers:
            lower = name.lower()
            if lower in _HOP_BY_HOP or (lower == "content-length" and method != "HEAD"):
                continue
            lines.append(f"{name}: {value}")
        if method != "HEAD" and status not in (204, 304):
            lines.append(f"Content-Length: {len(body)}")
        self.request.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body)

    def _reset(self) -> None:
        """Close with a TCP reset (SO_LINGER 0), as a broken network would."""
        with contextlib.suppress(OSError):
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.request.close()


def _read_head(rfile: IO[bytes]) -> _Request | None:
    line = rfile.readline(65537)
    while line in (b"\r\n", b"\n"):  # tolerate blank lines between requests
        line = rfile.readline(65537)
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers = []
    while True:
        raw = rfile.readline(65537)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    return _Request(method.upper(), target, headers)


def _read_body(rfile: IO[bytes], head: _Request) -> bytes:
    if "chunked" in (head.header("transfer-encoding") or "").lower():
        chunks: list[bytes] = []
        while True:
            size = int(rfile.readline(1024).split(b";")[0].strip(), 16)
            if size == 0:
                while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(_read_exactly(rfile, size))
            rfile.readline(16)
    length = int(head.header("content-length") or 0)
    return _read_exactly(rfile, length)


def _read_exactly(rfile: IO[bytes], size: int) -> bytes:
    data = rfile.read(size)
    if len(data) != size:
        raise ValueError("the body ended early")
    return data


def _record_of(head: _Request, body: bytes) -> Record:
    parts = urlsplit(head.target)
    query = parse_qs(parts.query, keep_blank_values=True)
    op, key = operation(
        head.method, parts.path, query, head.header("x-amz-copy-source") is not None
    )
    keys: tuple[str, ...] = ()
    if op == "DeleteObjects":
        keys = tuple(unquote(k.decode()) for k in _XML_KEY.findall(body))
    return Record(op, head.method, key, keys, upload_id=query.get("uploadId", [""])[0])


def _connect(address: tuple[str, int]) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(*address, timeout=SOCKET_TIMEOUT)


def _forward(
    upstream: http.client.HTTPConnection, head: _Request, body: bytes
) -> tuple[int, str, list[tuple[str, str]], bytes]:
    upstream.putrequest(head.method, head.target, skip_host=True, skip_accept_encoding=True)
    for name, value in head.headers:
        if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
            upstream.putheader(name, value)
    if body or head.method in ("PUT", "POST"):
        upstream.putheader("Content-Length", str(len(body)))
    upstream.endheaders(body)
    response = upstream.getresponse()
    data = response.read()
    if response.will_close:
        upstream.close()
    return response.status, response.reason, response.getheaders(), data


def _error_response(fault: str) -> tuple[int, str, list[tuple[str, str]], bytes]:
    status, reason, code, message = _ERRORS[fault]
    request_id = uuid.uuid4().hex[:16].upper()
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{request_id}</RequestId></Error>"
    ).encode()
    headers = [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)]
    return status, reason, headers, body


def describe(records: list[Record]) -> str:
    """A readable list of requests, for assertion messages."""
    return "; ".join(
        f"{r.op} {r.key or ','.join(r.keys)[:60]}" + (f" [{r.fault}]" if r.fault else "")
        for r in records
    )


def serve_proxy(upstream: str, **options: Any) -> FaultProxy:
    """A started proxy (the caller stops it)."""
    return FaultProxy(upstream, **options).start()
