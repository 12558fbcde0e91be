"""What the observability tests share: captured logs, metric samples, a webhook receiver."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import REGISTRY
from werkzeug.test import Client, TestResponse

from s3blobs.registry.logformat import QUIET_LIBRARIES, install_logging, uninstall_logging
from s3blobs.registry.settings import OperationsSettings


def need(tool: str) -> str:
    """The tool's path; a skip without it, or a failure where S3BLOBS_REQUIRE_TOOLS is set."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("S3BLOBS_REQUIRE_TOOLS"):
            pytest.fail(f"{tool} is required here (S3BLOBS_REQUIRE_TOOLS is set)")
        pytest.skip(f"{tool} is not installed")
    return path


class BufferedClient(Client):
    """A test client that reads every answer to its end, as a server does: the
    request log and its observers see each request finished."""

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


@contextlib.contextmanager
def captured_log(log_format: str = "text", level: int = logging.INFO) -> Iterator[io.StringIO]:
    """Everything logged meanwhile, as ``install_logging`` writes it; levels restored after."""
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in QUIET_LIBRARIES}
    saved_root = root.level
    stream = io.StringIO()
    handler = install_logging(OperationsSettings(log_format=log_format, log_level=level), stream)
    try:
        yield stream
    finally:
        uninstall_logging(handler)
        root.setLevel(saved_root)
        for name, value in saved.items():
            logging.getLogger(name).setLevel(value)


def sample(name: str, **labels: str) -> float:
    """One sample's value in this process's default registry (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def samples_by(name: str, label: str) -> dict[str, float]:
    """A counter's samples summed by one label, e.g. S3 requests by operation."""
    totals: dict[str, float] = {}
    for family in REGISTRY.collect():
        for found in family.samples:
            if found.name == name:
                key = found.labels[label]
                totals[key] = totals.get(key, 0.0) + found.value
    return totals


class Receiver:
    """A webhook endpoint on 127.0.0.1 that keeps what it is sent; it can answer late
    (``delay``) or with an error (``status``)."""

    def __init__(self, delay: float = 0.0, status: int = 200) -> None:
        self.posts: list[tuple[dict[str, str], Any]] = []  # (lower-cased headers, body)
        self.delay, self.status = delay, status
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(receiver.delay)
                with receiver._arrived:
                    headers = {key.lower(): value for key, value in self.headers.items()}
                    receiver.posts.append((headers, json.loads(body)))
                    receiver._arrived.notify_all()
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/events"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def events(self) -> list[dict[str, Any]]:
        with self._arrived:
            return [event for _, envelope in self.posts for event in envelope["events"]]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.events()) < count and time.monotonic() < deadline:
                self._arrived.wait(0.1)
        return self.events()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
