"""``GET /healthz``: 200 when S3 answered lately, 503 with the reason otherwise.

The answer is a cached HeadBucket: a flood of probes (a load balancer, an
orchestrator, a curious user) makes at most one S3 request per interval. The check
has its own client with short timeouts and no retries, so a dead S3 makes the probe
say so within seconds instead of after botocore's retries. The reason names the
kind of failure, never the endpoint or the bucket.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import boto3
import botocore.config
from botocore.exceptions import BotoCoreError, ClientError

from ..config import Config
from ..s3 import error_code
from .metrics import instrument_s3_client
from .routes import HEALTH_PATH


class HealthCheck:
    """Whether S3 answers, asked at most once per ``interval`` seconds."""

    def __init__(
        self, config: Config, interval: float = 5.0, timeout: float = 2.0, client: Any = None
    ) -> None:
        self.config = config
        self.interval = interval
        self.timeout = timeout
        self._client = client
        self._lock = threading.Condition()
        self._result: tuple[bool, str] | None = None
        self._checked_at = 0.0
        self._checking = False

    @property
    def client(self) -> Any:
        """Made on first use: a registry that is never probed never builds it."""
        with self._lock:
            if self._client is None:
                self._client = _probe_client(self.config, self.timeout)
                instrument_s3_client(self._client)
            return self._client

    def status(self) -> tuple[bool, str]:
        """(healthy, reason). One caller probes; the others get the last answer
        meanwhile, or wait for the very first one."""
        with self._lock:
            while True:
                if self._result is not None and self._age() < self.interval:
                    return self._result
                if not self._checking:
                    self._checking = True
                    break
                if self._result is not None:
                    return self._result
                self._lock.wait(self.timeout + 1)
        result: tuple[bool, str] | None = None
        try:
            result = self._probe()
        finally:
            with self._lock:
                if result is not None:
                    self._result, self._checked_at = result, time.monotonic()
                self._checking = False
                self._lock.notify_all()
        return result

    def _age(self) -> float:
        return time.monotonic() - self._checked_at

    def _probe(self) -> tuple[bool, str]:
        try:
            self.client.head_bucket(Bucket=self.config.bucket)
        except ClientError as exc:
            code = error_code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                return False, "the bucket does not exist"
            return False, f"S3 answered {code or 'an error'}"
        except BotoCoreError as exc:
            return False, f"S3 unreachable ({type(exc).__name__})"
        return True, "ok"


def _probe_client(config: Config, timeout: float) -> Any:
    client_config = botocore.config.Config(
        signature_version="s3v4",
        s3={"addressing_style": config.addressing_style},
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"total_max_attempts": 1},
        user_agent_extra="s3blobs-health",
    )
    return boto3.session.Session().client(
        "s3", region_name=config.region, endpoint_url=config.endpoint_url, config=client_config
    )


class HealthEndpoint:
    """WSGI layer answering GET/HEAD /healthz before the registry (no auth, no route)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], check: HealthCheck) -> None:
        self.app = app
        self.check = check

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        # Every request passes here: the path alone, then, tells the rest apart.
        if environ.get("PATH_INFO") != HEALTH_PATH:
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD"):
            return self.app(environ, start_response)
        healthy, reason = self.check.status()
        body = json.dumps(
            {"status": "ok"} if healthy else {"status": "unavailable", "reason": reason}
        ).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        if not healthy:
            headers.append(("Retry-After", str(max(1, round(self.check.interval)))))
        start_response("200 OK" if healthy else "503 Service Unavailable", headers)
        return [b"" if method == "HEAD" else body]
