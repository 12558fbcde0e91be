"""Prometheus metrics: S3 counts equal S3's own, upload and cache counters, the
listener, and several gunicorn workers summed in multiprocess mode."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests

from authutil import write_htpasswd
from conftest import PART
from netutil import free_port, wait_for_port
from obsutil import BufferedClient, captured_log, sample, samples_by
from s3blobs import Config, ConfigError, DescriptorCacheFactory, S3BlobStorage
from s3blobs.registry import make_app
from s3blobs.registry.auth.acl import AclPolicy
from s3blobs.registry.auth.htpasswd import BasicAuthenticator, HtpasswdFile
from s3blobs.registry.auth.settings import SecuritySettings
from s3blobs.registry.metrics import serve_metrics

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def counting_s3() -> Iterator[str]:
    """bench/s3_counter.py: a moto server that counts what it is asked, by operation."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.s3_counter", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc, "counting moto server")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def server_counts(endpoint: str) -> Counter[str]:
    """What the counting server saw since the last call (it resets)."""
    request = urllib.request.Request(f"{endpoint}/__counts", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return Counter(json.load(response)["ops"])


def s3_requests_by_operation() -> Counter[str]:
    return Counter(samples_by("s3blobs_s3_requests_total", "operation"))


def push_image(client: BufferedClient, name: str) -> tuple[str, str]:
    """A small config (monolithic POST), a two-part layer (POST, PATCH, PATCH, PUT),
    and a manifest: the three ways a client uploads."""
    config = b'{"architecture": "amd64"}'
    response = client.post(
        f"/v2/{name}/blobs/uploads/", query_string={"digest": digest_of(config)}, data=config
    )
    assert response.status_code == 201
    layer = os.urandom(PART + 4096)
    location = client.post(f"/v2/{name}/blobs/uploads/").headers["Location"]
    for start, end in ((0, PART // 2), (PART // 2, len(layer))):
        response = client.patch(
            location,
            data=layer[start:end],
            headers={"Content-Range": f"{start}-{end - 1}"},
        )
        assert response.status_code == 202, response.data
        location = response.headers["Location"]
    assert client.put(location, query_string={"digest": digest_of(layer)}).status_code == 201
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "size": len(config),
                "digest": digest_of(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "size": len(layer),
                    "digest": digest_of(layer),
                }
            ],
        }
    ).encode()
    response = client.put(
        f"/v2/{name}/manifests/v1", data=manifest, headers={"Content-Type": MANIFEST}
    )
    assert response.status_code == 201, response.data
    return digest_of(layer), digest_of(manifest)


def test_s3_request_counters_equal_s3s_own_counts(counting_s3: str) -> None:
    bucket = f"metrics-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=counting_s3, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    config = Config(
        bucket=bucket,
        endpoint_url=counting_s3,
        region="us-east-1",
        addressing_style="path",
        part_size=PART,
    )
    storage = S3BlobStorage(config, DescriptorCacheFactory())
    client = BufferedClient(make_app(storage))
    server_counts(counting_s3)
    before = s3_requests_by_operation()

    layer, manifest = push_image(client, "metrics/app")
    assert client.get("/v2/metrics/app/manifests/v1").status_code == 200
    assert client.get(f"/v2/metrics/app/blobs/{layer}").status_code == 307
    assert client.head(f"/v2/metrics/app/blobs/{digest_of(b'absent')}").status_code == 404
    assert client.get("/v2/metrics/app/tags/list").status_code == 200
    cancelled = client.post("/v2/metrics/app/blobs/uploads/").headers["Location"]
    assert client.delete(cancelled).status_code == 204
    assert client.delete(f"/v2/metrics/app/manifests/{manifest}").status_code == 202

    counted = s3_requests_by_operation() - before
    seen = server_counts(counting_s3)
    assert counted == seen, (counted, seen)
    assert {"UploadPart", "CompleteMultipartUpload", "HeadObject", "PutObject"} <= set(seen)
    # the absent blob's HEAD is an expected miss, not an error
    assert sample("s3blobs_s3_requests_total", operation="HeadObject", outcome="not_found") >= 1


def test_the_log_line_counts_the_requests_s3_saw(counting_s3: str) -> None:
    bucket = f"metrics-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=counting_s3, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    config = Config(
        bucket=bucket, endpoint_url=counting_s3, region="us-east-1", addressing_style="path"
    )
    client = BufferedClient(make_app(S3BlobStorage(config)))
    blob = b"counted"
    server_counts(counting_s3)
    with captured_log() as log:
        response = client.post(
            "/v2/count/app/blobs/uploads/", query_string={"digest": digest_of(blob)}, data=blob
        )
        assert response.status_code == 201
    seen = sum(server_counts(counting_s3).values())
    [line] = [line for line in log.getvalue().splitlines() if "s3blobs.access" in line]
    assert f" s3={seen} " in line and seen >= 2


def sample_delta(before: dict[str, float]) -> dict[str, float]:
    return {name: sample(name) - value for name, value in before.items()}


UPLOAD_COUNTERS = [
    "s3blobs_uploads_started_total",
    "s3blobs_uploads_committed_total",
    "s3blobs_uploads_failed_total",
    "s3blobs_uploads_cancelled_total",
    "s3blobs_uploads_open",
    "s3blobs_manifests_pushed_total",
    "s3blobs_manifests_pulled_total",
    "s3blobs_blob_redirects_total",
]


def test_upload_and_manifest_counters(storage: S3BlobStorage) -> None:
    client = BufferedClient(make_app(storage))
    before = {name: sample(name) for name in UPLOAD_COUNTERS}
    layer, _ = push_image(client, "counters/app")
    # a PUT with the wrong digest fails and leaves its upload open
    location = client.post("/v2/counters/app/blobs/uploads/").headers["Location"]
    assert client.put(location, data=b"x", query_string={"digest": digest_of(b"y")}).status_code
    # a cancelled upload
    location = client.post("/v2/counters/app/blobs/uploads/").headers["Location"]
    assert client.delete(location).status_code == 204
    assert client.get("/v2/counters/app/manifests/v1").status_code == 200
    assert client.get(f"/v2/counters/app/blobs/{layer}").status_code == 307
    assert sample_delta(before) == {
        "s3blobs_uploads_started_total": 4,  # monolithic, chunked, failed, cancelled
        "s3blobs_uploads_committed_total": 2,
        "s3blobs_uploads_failed_total": 1,
        "s3blobs_uploads_cancelled_total": 1,
        "s3blobs_uploads_open": 1,  # the failed one, still resumable
        "s3blobs_manifests_pushed_total": 1,
        "s3blobs_manifests_pulled_total": 1,
        "s3blobs_blob_redirects_total": 1,
    }


def test_http_and_cache_counters(config: Config) -> None:
    storage = S3BlobStorage(config, DescriptorCacheFactory(maxsize=1))
    client = BufferedClient(make_app(storage))
    names = [
        "s3blobs_descriptor_cache_hits_total",
        "s3blobs_descriptor_cache_misses_total",
        "s3blobs_descriptor_cache_evictions_total",
    ]
    before = {name: sample(name) for name in names}
    sent_before = sample("s3blobs_http_sent_bytes_total", route="blob")
    requests_before = sample(
        "s3blobs_http_requests_total", route="blob", method="HEAD", status="200"
    )
    digests = []
    for data in (b"one", b"two"):
        digests.append(digest_of(data))
        client.post("/v2/c/app/blobs/uploads/", query_string={"digest": digests[-1]}, data=data)
    for digest in (digests[0], digests[0], digests[1]):  # a miss, a hit, a miss that evicts
        assert client.head(f"/v2/c/app/blobs/{digest}").status_code == 200
    stats = storage.descriptor_service_factory.stats
    delta = sample_delta(before)
    assert delta == {
        "s3blobs_descriptor_cache_hits_total": stats.hits,
        "s3blobs_descriptor_cache_misses_total": stats.misses,
        "s3blobs_descriptor_cache_evictions_total": stats.evictions,
    }
    assert stats.hits >= 1 and stats.evictions >= 1
    assert sample("s3blobs_http_requests_total", route="blob", method="HEAD", status="200") == (
        requests_before + 3
    )
    assert sample("s3blobs_http_sent_bytes_total", route="blob") == sent_before  # HEADs
    assert sample("s3blobs_http_request_duration_seconds_count", route="blob", method="HEAD") >= 3


def test_auth_failures_by_reason_and_the_user_in_the_log(
    storage: S3BlobStorage, tmp_path: Path
) -> None:
    (tmp_path / "acl.toml").write_text(
        '[[rule]]\nrepositories = ["ok/**"]\nusers = ["alice"]\nactions = ["pull"]\n'
    )
    passwords = HtpasswdFile(write_htpasswd(tmp_path / "htpasswd", {"alice": "alice-pw"}))
    security = SecuritySettings(
        "htpasswd", BasicAuthenticator(passwords), AclPolicy.load(tmp_path / "acl.toml")
    )
    client = BufferedClient(make_app(storage, security))

    def basic(password: str) -> dict[str, str]:
        token = base64.b64encode(f"alice:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    reasons = ["no_credentials", "rejected_credentials", "denied"]
    before = {r: sample("s3blobs_auth_failures_total", reason=r) for r in reasons}
    with captured_log() as log:
        assert client.get("/v2/ok/app/tags/list").status_code == 401
        assert client.get("/v2/ok/app/tags/list", headers=basic("n0t-her-pa55")).status_code == 401
        assert (
            client.delete(
                "/v2/ok/app/blobs/" + digest_of(b"x"), headers=basic("alice-pw")
            ).status_code
            == 403
        )
        assert client.get("/v2/ok/app/tags/list", headers=basic("alice-pw")).status_code == 404
    after = {r: sample("s3blobs_auth_failures_total", reason=r) for r in reasons}
    assert {r: after[r] - before[r] for r in reasons} == dict.fromkeys(reasons, 1)
    users = re.findall(r" user=(\S+)$", log.getvalue(), re.M)
    assert users == ["-", "-", "alice", "alice"]  # a refused password names nobody
    assert "alice-pw" not in log.getvalue() and "n0t-her-pa55" not in log.getvalue()


def test_the_listener_serves_the_metrics(storage: S3BlobStorage) -> None:
    listener = serve_metrics(("127.0.0.1", 0))
    assert listener is not None
    try:
        BufferedClient(make_app(storage)).get("/v2/").close()
        text = requests.get(f"http://127.0.0.1:{listener.port}/metrics", timeout=10).text
        # a second process on the same address, without multiprocess mode: a clear refusal
        with pytest.raises(ConfigError, match=r"S3BLOBS_METRICS_ADDR.*PROMETHEUS_MULTIPROC_DIR"):
            serve_metrics(("127.0.0.1", listener.port))
    finally:
        listener.close()
    assert re.search(r's3blobs_http_requests_total\{method="GET",route="base",status="200"\}', text)
    for name in ("s3blobs_s3_request_duration_seconds", "s3blobs_uploads_open"):
        assert f"# TYPE {name} " in text


@pytest.mark.slow
def test_gunicorn_workers_are_summed(server_env: dict[str, str], tmp_path: Path) -> None:
    """Two workers, each recycled after 10 requests: 30 requests are served by at least
    three processes, and the master's metrics listener reports all 30."""
    port, metrics_port = free_port(), free_port()
    multiproc = tmp_path / "metrics"
    multiproc.mkdir()
    hooks = tmp_path / "gunicorn.conf.py"
    hooks.write_text("from s3blobs.registry.metrics import gunicorn_when_ready as when_ready\n")
    env = {
        **os.environ,
        **server_env,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "S3BLOBS_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        f"--config={hooks}",
        "--workers=2",
        "--max-requests=10",
        f"--bind=127.0.0.1:{port}",
        "s3blobs.registry:create_app()",
    ]
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    try:
        wait_for_port(port, proc, "gunicorn")
        for _ in range(30):
            response = requests.get(f"http://127.0.0.1:{port}/v2/", timeout=10)
            assert response.status_code == 200
        # The live worker folds its figures into the shared files once a second: poll
        # (a recycled worker folded them as it exited).
        deadline = time.monotonic() + 10
        while True:
            text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
            served = re.search(
                r's3blobs_http_requests_total\{method="GET",route="base",status="200"\} (\S+)',
                text,
            )
            if (served and float(served.group(1)) >= 30) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert served is not None and float(served.group(1)) == 30
    writers = {path.name for path in multiproc.glob("counter_*.db")}
    assert len(writers) >= 4  # the master's, and one per worker process
