"""HTTP/1.1 on the wire for the fault proxy: requests read whole (Content-Length or
chunked transfer encoding), forwarded upstream with a Content-Length, answers written
back, connections reset; and the S3 operation a path-style request names."""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import uuid
from typing import IO
from urllib.parse import unquote

SOCKET_TIMEOUT = 60.0
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "expect", "te", "trailer", "upgrade"}
)
_ERRORS = {
    "500": (500, "Internal Server Error", "InternalError", "We encountered an internal error."),
    "503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
}


class Request:
    """A request's line and headers, as read."""

    def __init__(self, method: str, target: str, headers: list[tuple[str, str]]) -> None:
        self.method = method
        self.target = target
        self.headers = headers

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


Answer = tuple[int, str, list[tuple[str, str]], bytes]  # status, reason, headers, body


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


def read_head(rfile: IO[bytes]) -> Request | None:
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
    return Request(method.upper(), target, headers)


def read_body(rfile: IO[bytes], head: Request) -> bytes:
    if "chunked" in (head.header("transfer-encoding") or "").lower():
        chunks: list[bytes] = []
        while True:
            size = int(rfile.readline(1024).split(b";")[0].strip(), 16)
            if size == 0:
                while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(read_exactly(rfile, size))
            rfile.readline(16)
    length = int(head.header("content-length") or 0)
    return read_exactly(rfile, length)


def read_exactly(rfile: IO[bytes], size: int) -> bytes:
    data = rfile.read(size)
    if len(data) != size:
        raise ValueError("the body ended early")
    return data


def connect(address: tuple[str, int]) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(*address, timeout=SOCKET_TIMEOUT)


def forward(upstream: http.client.HTTPConnection, head: Request, body: bytes) -> Answer:
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


def error_response(fault: str) -> Answer:
    status, reason, code, message = _ERRORS[fault]
    request_id = uuid.uuid4().hex[:16].upper()
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{request_id}</RequestId></Error>"
    ).encode()
    headers = [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)]
    return status, reason, headers, body


def send_answer(sock: socket.socket, answer: Answer, method: str) -> None:
    status, reason, headers, body = answer
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
    sock.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body)


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a broken network would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
