"""A registry client that retries the way real clients (containerd, skopeo, oras) do,
over real sockets, and an audit of every answer it got.

Retries, at most ``attempts`` per step, sleeping a few milliseconds between them:

- POST: on a 5xx, a 429 or a connection error, POST again;
- PATCH: GET the upload's status (retrying that GET too) and resend from the end of
  the returned ``Range``;
- PUT: PUT again (a PUT that carries bytes first asks the status, and sends only
  what the registry does not have); if the upload is then unknown, HEAD the blob:
  200 means the blob is there;
- a 404 BLOB_UPLOAD_UNKNOWN in the middle of an upload starts it over from POST.

The client never sends a wrong request, so every 4xx it gets (but one: a 416 that
the ``Range: 0-0`` of an upload holding 0 or 1 byte made unavoidable) is spurious.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

SOCKET_TIMEOUT = 60.0
MODES = ("monolithic", "post-put", "chunked", "streamed")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Exchange:
    """One request to the registry and what came back (status None: no answer)."""

    step: str
    method: str
    path: str
    status: int | None
    headers: dict[str, str]
    body: bytes
    error: str = ""
    excused: bool = False  # a 4xx the protocol made unavoidable (see the module doc)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def __str__(self) -> str:
        what = self.status if self.status is not None else self.error
        return f"{self.step}: {self.method} {self.path[:70]} -> {what} {self.body[:200]!r}"


@dataclass
class Push:
    """The outcome of one push: ``acknowledged`` once a 201 (or a HEAD 200) said so."""

    data: bytes
    mode: str
    digest: str
    acknowledged: bool = False
    restarts: int = 0
    failure: str = ""
    first_exchange: int = 0  # where its requests start in the client's exchanges


class GaveUp(Exception):
    """A step failed ``attempts`` times in a row."""


class UploadLost(Exception):
    """404 BLOB_UPLOAD_UNKNOWN mid-upload: the client starts over."""


@dataclass
class RetryingClient:
    base: str  # http://host:port of the registry
    name: str = "faults/app"
    attempts: int = 8
    pause: float = 0.003
    chunk: int = 3 * 1024 * 1024
    exchanges: list[Exchange] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)  # acknowledged bytes lost
    after_attempt: Callable[[Exchange], None] | None = None  # e.g. switch a fault off

    # One request ------------------------------------------------------------------------

    def request(
        self,
        step: str,
        method: str,
        path: str,
        body: bytes | Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Exchange:
        url = urlsplit(self.base if path.startswith("/") else path)
        target = path if path.startswith("/") else url.path + (f"?{url.query}" if url.query else "")
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=SOCKET_TIMEOUT)
        try:
            streamed = body is not None and not isinstance(body, bytes)
            conn.request(method, target, body=body, headers=headers or {}, encode_chunked=streamed)
            response = conn.getresponse()
            data = response.read()
            answer = {k.lower(): v for k, v in response.getheaders()}
            exchange = Exchange(step, method, target, response.status, answer, data)
        except (OSError, http.client.HTTPException) as exc:
            exchange = Exchange(step, method, target, None, {}, b"", f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()
        if not path.startswith("/"):
            return exchange  # not the registry (a presigned URL): not audited
        self.exchanges.append(exchange)
        if self.after_attempt is not None:
            self.after_attempt(exchange)
        return exchange

    # Whole pushes -----------------------------------------------------------------------

    def push(self, data: bytes, mode: str) -> Push:
        """Push ``data`` in ``mode`` (one of MODES), starting over on a lost upload."""
        result = Push(data, mode, digest_of(data), first_exchange=len(self.exchanges))
        for _ in range(3):
            try:
                self._push_once(result)
                result.acknowledged = True
                return result
            except UploadLost:
                result.restarts += 1
            except GaveUp as exc:
                result.failure = str(exc)
                return result
        result.failure = "the upload was lost three times"
        return result

    def _push_once(self, push: Push) -> None:
        if push.mode == "monolithic":
            self.post(push.data, push.digest)
            return
        location = self.post()
        if push.mode == "post-put":
            self.put(location, push.digest, push.data)
            return
        pos, location = 0, location
        while pos < len(push.data):
            whole = push.mode == "streamed"
            end = len(push.data) if whole else min(pos + self.chunk, len(push.data))
            pos, location = self.patch(location, push.data, pos, end, push.mode == "streamed")
        self.put(location, push.digest)

    # Steps ------------------------------------------------------------------------------

    def post(self, data: bytes | None = None, digest: str | None = None) -> str:
        """POST an upload (or, with ``digest``, the whole blob); returns its Location."""
        path = f"/v2/{self.name}/blobs/uploads/"
        if digest is not None:
            path += "?" + urlencode({"digest": digest})
        for _ in range(self.attempts):
            answer = self.request("POST", "POST", path, data or b"")
            if digest is not None and answer.status == 201:
                return ""
            if digest is None and answer.status == 202 and answer.header("location"):
                return str(answer.header("location"))
            self._after_failure(answer)
        raise GaveUp(f"POST failed {self.attempts} times")

    def patch(
        self, location: str, data: bytes, pos: int, end: int, streamed: bool = False
    ) -> tuple[int, str]:
        """Send ``data[pos:end]``; returns (the registry's new end, the next Location)."""
        acknowledged = pos
        for _ in range(self.attempts):
            chunk = data[pos:end]
            if streamed:
                answer = self.request("PATCH", "PATCH", location, _pieces(chunk), {})
            else:
                headers = {
                    "Content-Range": f"{pos}-{end - 1}",
                    "Content-Type": "application/octet-stream",
                }
                answer = self.request("PATCH", "PATCH", location, chunk, headers)
            if answer.status == 202 and answer.header("location"):
                return self._range_end(answer, end), str(answer.header("location"))
            if answer.status == 416 and pos == 0 and answer.header("range") == "0-0":
                answer.excused = True  # the upload held 1 byte, as "0-0" could mean
                pos = 1
                if pos >= end:
                    return pos, str(answer.header("location") or location)
                continue
            self._after_failure(answer)
            pos, location = self.status(location, acknowledged, end)
            if pos < acknowledged:
                self.regressions.append(f"{location}: held {pos} after {acknowledged} were acked")
            if pos >= end:
                return pos, location  # the failed PATCH had arrived after all
        raise GaveUp(f"PATCH failed {self.attempts} times")

    def status(self, location: str, acknowledged: int, end: int) -> tuple[int, str]:
        """GET the upload's status: (bytes the registry holds, its Location)."""
        for _ in range(self.attempts):
            answer = self.request("status", "GET", location)
            if answer.status == 204 and answer.header("range"):
                held = self._range_end(answer, acknowledged)
                return min(held, end), str(answer.header("location") or location)
            self._after_failure(answer)
        raise GaveUp(f"GET status failed {self.attempts} times")

    def put(self, location: str, digest: str, data: bytes | None = None) -> None:
        """The final PUT (carrying ``data`` whole for POST+PUT); 201 or its equivalent."""
        pos = 0
        for _ in range(self.attempts):
            body = data[pos:] if data is not None else b""
            headers = {"Content-Type": "application/octet-stream"}
            if body and pos:
                headers["Content-Range"] = f"{pos}-{len(data or b'') - 1}"
            sep = "&" if "?" in location else "?"
            answer = self.request("PUT", "PUT", f"{location}{sep}digest={digest}", body, headers)
            if answer.status == 201:
                return
            if answer.status == 404 and self.blob_exists(digest):
                return  # the first PUT committed; its answer was lost
            self._after_failure(answer)
            if data is not None and answer.status != 404:
                pos = self.status(location, pos, len(data))[0]
        raise GaveUp(f"PUT failed {self.attempts} times")

    def blob_exists(self, digest: str) -> bool:
        for _ in range(self.attempts):
            answer = self.request("HEAD", "HEAD", f"/v2/{self.name}/blobs/{digest}")
            if answer.status in (200, 404):
                return answer.status == 200
            self._after_failure(answer)
        raise GaveUp(f"HEAD failed {self.attempts} times")

    def get_blob(self, digest: str) -> bytes:
        """GET the blob, following the 307 to the presigned URL (no retries: faults off)."""
        answer = self.request("GET", "GET", f"/v2/{self.name}/blobs/{digest}")
        if answer.status == 307:
            answer = self.request("GET", "GET", str(answer.header("location")))
        if answer.status != 200:
            raise AssertionError(f"GET {digest} -> {answer}")
        return answer.body

    # Helpers ----------------------------------------------------------------------------

    def _after_failure(self, answer: Exchange) -> None:
        retryable = answer.status is None or answer.status >= 500 or answer.status == 429
        if answer.status == 404 and answer.step in ("PATCH", "status", "PUT"):
            raise UploadLost(str(answer))
        if not retryable:
            raise GaveUp(f"not retryable: {answer}")
        time.sleep(self.pause)

    @staticmethod
    def _range_end(answer: Exchange, fallback: int) -> int:
        """The byte count a ``Range: 0-<last>`` says the registry holds. "0-0" is 0 or 1
        byte: trust it as 1 only if the client already had 1 acknowledged."""
        raw = answer.header("range") or ""
        try:
            last = int(raw.split("-", 1)[1])
        except (IndexError, ValueError):
            return fallback
        if last == 0:
            return min(fallback, 1)
        return last + 1


def _pieces(data: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    """A body sent with Transfer-Encoding: chunked (no Content-Length)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def audit(exchanges: list[Exchange], secrets: list[str]) -> dict[str, list[str]]:
    """What the registry answered that it never should have, by kind."""
    found: dict[str, list[str]] = {
        "500": [],
        "non-JSON error": [],
        "5xx not 503 with Retry-After": [],
        "429 without Retry-After": [],
        "error without X-Request-Id": [],
        "spurious 4xx": [],
        "leaked internals": [],
    }
    for exchange in exchanges:
        status = exchange.status
        if status is None:
            continue  # a reset: the registry process died (kill tests) or closed on us
        if status == 500:
            found["500"].append(str(exchange))
        if status >= 400 and exchange.method != "HEAD" and not _is_json_error(exchange.body):
            found["non-JSON error"].append(str(exchange))
        if status >= 500 and (status != 503 or not exchange.header("retry-after")):
            found["5xx not 503 with Retry-After"].append(str(exchange))
        if status == 429 and not exchange.header("retry-after"):
            found["429 without Retry-After"].append(str(exchange))
        if (status >= 500 or status == 429) and not exchange.header("x-request-id"):
            found["error without X-Request-Id"].append(str(exchange))
        if 400 <= status < 500 and status != 429 and not exchange.excused:
            found["spurious 4xx"].append(str(exchange))
        leaked = [s for s in secrets if s and s.encode() in exchange.body]
        if leaked:
            found["leaked internals"].append(f"{exchange} names {leaked}")
    return {kind: items for kind, items in found.items() if items}


def _is_json_error(body: bytes) -> bool:
    try:
        errors = json.loads(body)["errors"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(errors, list) and all("code" in e for e in errors)
