"""Notifications: the envelopes a receiver on 127.0.0.1 gets for a skopeo push and a
delete, and a dead or slow receiver that never slows or fails a request."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

from netutil import free_port
from obsutil import BufferedClient, Receiver, need, sample
from oci import MANIFEST, image_layout
from s3blobs import DescriptorCacheFactory, S3BlobStorage
from s3blobs.registry import make_app
from s3blobs.registry.events import EVENTS_MEDIA_TYPE, Notifier
from s3blobs.registry.settings import OperationsSettings

CONFIG = "application/vnd.oci.image.config.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.mark.e2e
def test_envelopes_of_a_skopeo_push_a_pull_and_a_delete(
    server_env: dict[str, str], receiver: Receiver, tmp_path: Path
) -> None:
    storage = S3BlobStorage.from_env(server_env)
    headers = {receiver.url: {"Authorization": "Bearer webhook-token"}, "*": {"X-Sent-By": "t"}}
    settings = OperationsSettings(
        notify_urls=(receiver.url,), notify_headers=headers, notify_pulls=True
    )
    server = make_server("127.0.0.1", 0, make_app(storage, operations=settings), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    registry = f"127.0.0.1:{server.port}"
    try:
        blobs = image_layout(tmp_path / "image", [2048])
        source, target = f"oci:{tmp_path / 'image'}:latest", f"docker://{registry}/ev/app:v1"
        subprocess.run(
            [
                need("skopeo"),
                "--insecure-policy",
                "copy",
                "--dest-tls-verify=false",
                source,
                target,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        [pushed] = receiver.wait_for(1)
        manifest = pushed["target"]["digest"]
        pulled = requests.get(
            f"http://{registry}/v2/ev/app/manifests/v1",
            headers={"Accept": MANIFEST, "User-Agent": "events-test"},
            timeout=10,
        )
        layer = json.loads(pulled.content)["layers"][0]
        requests.get(f"http://{registry}/v2/ev/app/blobs/{layer['digest']}", allow_redirects=False)
        deleted = requests.delete(f"http://{registry}/v2/ev/app/manifests/{manifest}", timeout=10)
        assert deleted.status_code == 202
        events = receiver.wait_for(4)
    finally:
        server.shutdown()

    assert len(events) == 4
    push, manifest_pull, blob_pull, delete = events
    assert push["action"] == "push"
    assert push["target"] == {
        "mediaType": MANIFEST,
        "digest": manifest,
        "size": len(blobs[manifest]),
        "length": len(blobs[manifest]),
        "repository": "ev/app",
        "tag": "v1",
        "url": f"http://{registry}/v2/ev/app/manifests/{manifest}",
    }
    assert push["request"]["method"] == "PUT" and "skopeo" in push["request"]["useragent"]
    assert push["request"]["host"] == registry and push["request"]["addr"] == "127.0.0.1"
    assert push["source"]["addr"].endswith(f":{server.port}") and push["source"]["instanceID"]
    assert push["actor"] == {}  # no authentication: nobody to name
    assert push["timestamp"].endswith("Z") and len({e["id"] for e in events}) == 4

    assert manifest_pull["action"] == "pull" and manifest_pull["target"]["tag"] == "v1"
    assert manifest_pull["request"]["id"] == pulled.headers["X-Request-Id"]
    assert manifest_pull["request"]["useragent"] == "events-test"
    assert blob_pull["action"] == "pull"
    # the answer was a redirect: the size comes from the blob's descriptor
    assert blob_pull["target"]["digest"] == layer["digest"]
    assert blob_pull["target"]["size"] == blob_pull["target"]["length"] == layer["size"]

    assert delete["action"] == "delete"
    assert delete["target"] == {"digest": manifest, "repository": "ev/app"}
    assert delete["request"]["id"] == deleted.headers["X-Request-Id"]

    sent_headers = receiver.posts[0][0]
    assert sent_headers["content-type"] == EVENTS_MEDIA_TYPE
    assert sent_headers["authorization"] == "Bearer webhook-token"
    assert sent_headers["x-sent-by"] == "t"


def push_manifests(client: BufferedClient, count: int) -> list[float]:
    """``count`` manifest pushes (each an event); returns how long each request took."""
    config = b"{}"
    client.post(
        "/v2/ev/fast/blobs/uploads/", query_string={"digest": digest_of(config)}, data=config
    )
    seconds = []
    for tag in range(count):
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": {"mediaType": CONFIG, "size": 2, "digest": digest_of(config)},
                "layers": [],
                "annotations": {"n": str(tag)},
            }
        ).encode()
        started = time.monotonic()
        response = client.put(
            f"/v2/ev/fast/manifests/t{tag}", data=manifest, headers={"Content-Type": MANIFEST}
        )
        seconds.append(time.monotonic() - started)
        assert response.status_code == 201
    return seconds


def dropped(endpoint: str) -> dict[str, float]:
    return {
        reason: sample("s3blobs_events_dropped_total", endpoint=endpoint, reason=reason)
        for reason in ("queue_full", "undeliverable")
    }


def test_a_dead_receiver_costs_requests_nothing_and_drops_are_counted(
    storage: S3BlobStorage,
) -> None:
    port = free_port()  # nothing listens there
    notifier = Notifier(
        (f"http://127.0.0.1:{port}/events",), queue_size=3, attempts=3, backoff=0.05, timeout=1
    )
    client = BufferedClient(make_app(storage, notifier=notifier))
    before = dropped(f"127.0.0.1:{port}")
    seconds = push_manifests(client, 12)
    notifier.close(timeout=5)
    after = dropped(f"127.0.0.1:{port}")
    lost = {reason: after[reason] - before[reason] for reason in after}
    assert lost["queue_full"] > 0 and lost["undeliverable"] > 0
    assert sum(lost.values()) == 12  # every event is accounted for
    assert sample("s3blobs_events_sent_total", endpoint=f"127.0.0.1:{port}") == 0
    assert max(seconds) < 0.5


def test_a_slow_receiver_never_slows_a_request(storage: S3BlobStorage) -> None:
    slow = Receiver(delay=3.0)
    try:
        notifier = Notifier((slow.url,), attempts=1, timeout=0.5, queue_size=100)
        client = BufferedClient(make_app(storage, notifier=notifier))
        name = slow.url.split("/")[2]
        before = dropped(name)["undeliverable"]
        seconds = push_manifests(client, 5)
        notifier.close(timeout=5)
        assert max(seconds) < 0.5  # the receiver holds each POST for 3 s
        assert dropped(name)["undeliverable"] - before >= 1  # timed out, counted
    finally:
        slow.close()


def test_notifications_from_the_environment(storage: S3BlobStorage, receiver: Receiver) -> None:
    settings = OperationsSettings.from_env({"S3BLOBS_NOTIFY_URLS": receiver.url})
    notifier = Notifier.from_settings(settings, storage)
    assert notifier is not None and [e.url for e in notifier.endpoints] == [receiver.url]
    assert Notifier.from_settings(OperationsSettings(), storage) is None
    storage_with_cache = S3BlobStorage(storage.config, DescriptorCacheFactory())
    client = BufferedClient(make_app(storage_with_cache, operations=settings))
    push_manifests(client, 2)
    events = receiver.wait_for(2)
    assert [event["target"]["tag"] for event in events] == ["t0", "t1"]
    assert {event["action"] for event in events} == {"push"}
