"""Notifications: the Go registry's webhook events, sent after the answer.

Manifest pushes and deletes, blob deletes and cross-repository mounts (and, with
S3BLOBS_NOTIFY_PULLS, manifest and blob pulls) become events in distribution's
envelope (``application/vnd.docker.distribution.events.v1+json``: ``{"events":
[...]}``, each with ``id``, ``timestamp``, ``action``, ``target``, ``request``,
``actor`` and ``source``), POSTed to every endpoint of S3BLOBS_NOTIFY_URLS.

An event is built from the finished request (an observer of the request log) and
put on each endpoint's bounded queue; the endpoint's own thread sends what has
queued up, with a timeout and retries with backoff. A full queue, or a batch still
refused after its retries, is dropped and counted (``s3blobs_events_dropped_total``):
a dead or slow receiver never slows or fails a request, and costs bounded memory.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..paths import is_valid_tag
from ..storage import S3BlobStorage
from .metrics import EVENTS_DROPPED, EVENTS_SENT
from .requestlog import METHOD, QUERY, ROUTE, STATUS, USER, Exchange
from .settings import EVERY_ENDPOINT, OperationsSettings

EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
log = logging.getLogger(__name__)


class Notifier:
    """Turns finished requests into events and hands them to every endpoint."""

    def __init__(
        self,
        urls: tuple[str, ...],
        headers: Mapping[str, Mapping[str, str]] | None = None,
        *,
        pulls: bool = False,
        storage: S3BlobStorage | None = None,
        **endpoint_options: Any,
    ) -> None:
        headers = headers or {}
        self.pulls = pulls
        self.storage = storage
        self.endpoints = [
            Endpoint(
                url,
                {**headers.get(EVERY_ENDPOINT, {}), **headers.get(url, {})},
                resolve=self.with_size,
                **endpoint_options,
            )
            for url in urls
        ]
        self.instance_id = str(uuid.uuid4())
        self.hostname = socket.gethostname()

    @classmethod
    def from_settings(cls, settings: OperationsSettings, storage: S3BlobStorage) -> Notifier | None:
        if not settings.notify_urls:
            return None
        return cls(
            settings.notify_urls,
            settings.notify_headers,
            pulls=settings.notify_pulls,
            storage=storage,
        )

    def observe(self, exchange: Exchange) -> None:
        """Called once a request is answered: queue its event, if it makes one."""
        event = self.event_for(exchange)
        if event is not None:
            for endpoint in self.endpoints:
                endpoint.offer(event)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (for at most ``timeout`` seconds), then stop."""
        deadline = time.monotonic() + timeout
        for endpoint in self.endpoints:
            endpoint.close(max(0.0, deadline - time.monotonic()))

    # What happened ---------------------------------------------------------------------

    def event_for(self, exchange: Exchange) -> dict[str, Any] | None:
        summary = exchange.finished
        route, method, status = summary[ROUTE], summary[METHOD], summary[STATUS]
        params = exchange.params
        name = params.get("name", "")
        if route == "manifest":
            reference = params["reference"]
            if method == "PUT" and status == 201:
                digest = exchange.header("Docker-Content-Digest") or ""
                media_type = str(exchange.environ.get("CONTENT_TYPE", "")).split(";")[0].strip()
                target = self._descriptor(media_type, exchange.bytes_in, digest)
                return self._event("push", exchange, name, target, "manifests", reference)
            if method == "DELETE" and status == 202:
                return self._event("delete", exchange, name, {}, "manifests", reference)
            if method == "GET" and status == 200 and self.pulls:
                digest = exchange.header("Docker-Content-Digest") or ""
                media_type = (exchange.header("Content-Type") or "").split(";")[0]
                target = self._descriptor(media_type, exchange.bytes_out, digest)
                return self._event("pull", exchange, name, target, "manifests", reference)
        elif route == "blob":
            digest = params["digest"]
            if method == "DELETE" and status == 202:
                return self._event("delete", exchange, name, {}, "blobs", digest)
            if method == "GET" and status in (200, 206, 307) and self.pulls:
                # The answer may be a redirect (no length): the stat is made by the
                # sending thread, from the descriptor cache when there is one.
                target = self._descriptor(exchange.header("Content-Type") or "", None, digest)
                return self._event("pull", exchange, name, target, "blobs", digest)
        elif route == "uploads" and method == "POST" and status == 201:
            query = dict(parse_qsl(summary[QUERY]))
            if "mount" in query and "from" in query:
                target = {"digest": query["mount"], "fromRepository": query["from"]}
                return self._event("mount", exchange, name, target, "blobs", query["mount"])
        return None

    @staticmethod
    def _descriptor(media_type: str, size: int | None, digest: str) -> dict[str, Any]:
        target: dict[str, Any] = {"mediaType": media_type, "digest": digest}
        if size is not None:
            target["size"] = target["length"] = size
        return target

    def _event(
        self,
        action: str,
        exchange: Exchange,
        name: str,
        target: dict[str, Any],
        kind: str,
        reference: str,
    ) -> dict[str, Any]:
        environ = exchange.environ
        host = str(environ.get("HTTP_HOST") or environ.get("SERVER_NAME", ""))
        target = dict(target, repository=name)
        if is_valid_tag(reference) and kind == "manifests":
            target["tag"] = reference
        else:
            target.setdefault("digest", reference)
        if target.get("digest") and action != "delete":
            scheme = environ.get("wsgi.url_scheme", "http")
            target["url"] = f"{scheme}://{host}/v2/{name}/{kind}/{target['digest']}"
        summary = exchange.finished
        actor = {"name": summary[USER]} if summary[USER] != "-" else {}
        event = {
            "id": str(uuid.uuid4()),
            "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            "action": action,
            "target": target,
            "request": {
                "id": exchange.id,
                "addr": str(environ.get("REMOTE_ADDR", "")),
                "host": host,
                "method": summary[METHOD],
                "useragent": str(environ.get("HTTP_USER_AGENT", "")),
            },
            "actor": actor,
            "source": {
                "addr": f"{self.hostname}:{environ.get('SERVER_PORT', '')}",
                "instanceID": self.instance_id,
            },
        }
        return event

    def with_size(self, event: dict[str, Any]) -> dict[str, Any]:
        """``event`` with its blob's size (and media type) from the descriptor, which
        the answer did not carry (a redirect, a mount); as it was if that fails.
        Called by the sending threads, never while a request waits."""
        target = event["target"]
        if self.storage is None or "size" in target or target.get("tag"):
            return event
        try:
            descriptor = self.storage.repository(target["repository"]).stat(target["digest"])
        except Exception:  # the event goes out without a size rather than not at all
            return event
        media_type = target.get("mediaType") or descriptor.media_type
        sized = {**target, "mediaType": media_type, "size": descriptor.size}
        sized["length"] = descriptor.size
        return {**event, "target": sized}


def _needs_size(event: dict[str, Any]) -> bool:
    return event["action"] in ("pull", "mount") and "size" not in event["target"]


class Endpoint:
    """One receiver: its own bounded queue and sending thread, so a slow receiver
    delays only its own events."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        resolve: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        queue_size: int = 1000,
        timeout: float = 5.0,
        attempts: int = 4,
        backoff: float = 0.5,
        max_batch: int = 100,
    ) -> None:
        self.url = url
        parts = urlsplit(url)
        # The metric label and the log name only the host: a path may hold a token.
        self.name = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        self.headers = {**headers, "Content-Type": EVENTS_MEDIA_TYPE}
        self.timeout, self.attempts, self.backoff = timeout, attempts, backoff
        self.max_batch = max_batch
        self.resolve = resolve
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._sent = EVENTS_SENT.labels(self.name)
        self._queue_full = EVENTS_DROPPED.labels(self.name, "queue_full")
        self._undeliverable = EVENTS_DROPPED.labels(self.name, "undeliverable")

    def offer(self, event: dict[str, Any]) -> None:
        """Queue ``event``, or drop it at once if the queue is full: never wait."""
        self._ensure_thread()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._queue_full.inc()

    def _ensure_thread(self) -> None:
        # Started on first use, and again in a forked worker (threads do not survive
        # a fork: gunicorn --preload builds the app before forking).
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._thread = threading.Thread(
                        target=self._run, name=f"s3blobs-events-{self.name}", daemon=True
                    )
                    self._thread.start()
                    self._pid = os.getpid()

    def close(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None and self._pid == os.getpid():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if self.resolve is not None:
                batch = [self.resolve(event) if _needs_size(event) else event for event in batch]
            self._deliver(batch)

    def _deliver(self, events: list[dict[str, Any]]) -> None:
        body = json.dumps({"events": events}).encode()
        request = urllib.request.Request(self.url, body, self.headers, method="POST")
        problem = ""
        for attempt in range(self.attempts):
            # Backoff doubles each time; a close() cuts the wait short.
            if attempt and self._stop.wait(min(self.backoff * 2 ** (attempt - 1), 30.0)):
                break
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    response.read()
                self._sent.inc(len(events))
                return
            except urllib.error.HTTPError as exc:
                problem = f"answered {exc.code}"
            except (OSError, ValueError) as exc:
                problem = type(exc).__name__
        self._undeliverable.inc(len(events))
        log.warning(
            "events: %s: dropped %d events after %d attempts (%s)",
            self.name,
            len(events),
            self.attempts,
            problem or "stopping",
        )
