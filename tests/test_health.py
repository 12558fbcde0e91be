"""``/healthz``: 200 when S3 answers, 503 with a reason when it does not, and at most
one HeadBucket per interval however many probes arrive."""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any

from conftest import BUCKET
from netutil import free_port
from obsutil import BufferedClient, sample
from s3blobs import Config, S3BlobStorage
from s3blobs.registry import make_app
from s3blobs.registry.health import HealthCheck


def test_healthy_when_s3_answers(storage: S3BlobStorage) -> None:
    client = BufferedClient(make_app(storage))
    response = client.get("/healthz")
    assert response.status_code == 200
    assert json.loads(response.data) == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"
    assert client.head("/healthz").status_code == 200
    assert client.get("/v2/").data == b"{}"  # the API's base stays what the spec says


def test_unavailable_with_a_reason_when_s3_is_down() -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = Config(bucket="down-bucket", endpoint_url=dead, region="us-east-1")
    storage = S3BlobStorage(config, check_bucket=False)
    client = BufferedClient(make_app(storage, health=HealthCheck(config, timeout=1.0)))
    failed_before = sample(
        "s3blobs_s3_requests_total", operation="HeadBucket", outcome="network_error"
    )
    started = time.monotonic()
    response = client.get("/healthz")
    assert time.monotonic() - started < 5  # no botocore retries behind a probe
    assert response.status_code == 503
    body = json.loads(response.data)
    assert body["status"] == "unavailable"
    assert "unreachable" in body["reason"] and "EndpointConnectionError" in body["reason"]
    assert dead.rsplit(":", 1)[1] not in response.data.decode()  # no endpoint, no bucket
    assert "down-bucket" not in response.data.decode()
    assert int(response.headers["Retry-After"]) >= 1
    after = sample("s3blobs_s3_requests_total", operation="HeadBucket", outcome="network_error")
    assert after == failed_before + 1
    assert client.get("/v2/").status_code == 200  # /v2/ does not ask S3


def test_missing_bucket_is_named_as_such(s3: Any) -> None:
    check = HealthCheck(Config(bucket="no-such-bucket-here"))
    assert check.status() == (False, "the bucket does not exist")


def test_a_flood_of_probes_asks_s3_once_per_interval(s3: Any) -> None:
    check = HealthCheck(Config(bucket=BUCKET), interval=0.4)
    asked: list[float] = []
    check.client.meta.events.register(
        "before-call.s3.HeadBucket", lambda **_: asked.append(time.monotonic())
    )
    client = BufferedClient(make_app(S3BlobStorage(Config(bucket=BUCKET)), health=check))
    answers: list[int] = []
    started = time.monotonic()

    def probe() -> None:
        while time.monotonic() - started < 1.3:
            answers.append(client.get("/healthz").status_code)

    threads = [threading.Thread(target=probe) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    elapsed = time.monotonic() - started
    assert len(answers) > 50 and set(answers) == {200}
    assert 2 <= len(asked) <= int(elapsed / check.interval) + 1
    gaps = [later - earlier for earlier, later in itertools.pairwise(asked)]
    assert all(gap >= check.interval for gap in gaps)
