"""Two registry processes (gunicorn, deploy/gunicorn.conf.py) sharing one bucket on a moto
server and one real redis-server: what one does, the other sees at once."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator

import boto3
import pytest
import requests

from conftest import PART
from faultcheck import check_bucket, direct_client
from s3blobs import S3BlobStorage
from servers import RedisServer, Registry, registries

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TIMEOUT = 30


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def env(moto_server: str, redis_server: RedisServer) -> dict[str, str]:
    bucket = f"replicas-{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    return {
        "S3BLOBS_BUCKET": bucket,
        "S3BLOBS_ENDPOINT_URL": moto_server,
        "S3BLOBS_REGION": "us-east-1",
        "S3BLOBS_ADDRESSING_STYLE": "path",
        "S3BLOBS_PART_SIZE": str(PART),
        "S3BLOBS_CACHE": redis_server.url,
    }


@pytest.fixture(scope="module")
def pair(env: dict[str, str]) -> Iterator[tuple[Registry, Registry]]:
    with registries(env, 2) as (one, two):
        yield one, two


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(registry: Registry, name: str, data: bytes) -> str:
    """POST, one PATCH, PUT: the way skopeo pushes."""
    base = registry.url
    started = requests.post(f"{base}/v2/{name}/blobs/uploads/", timeout=TIMEOUT)
    assert started.status_code == 202, started.text
    patched = requests.patch(base + started.headers["Location"], data=data, timeout=TIMEOUT)
    assert patched.status_code == 202, patched.text
    digest = digest_of(data)
    put = requests.put(
        base + patched.headers["Location"], params={"digest": digest}, timeout=TIMEOUT
    )
    assert put.status_code == 201, put.text
    return digest


def head(registry: Registry, name: str, digest: str) -> int:
    return requests.head(f"{registry.url}/v2/{name}/blobs/{digest}", timeout=TIMEOUT).status_code


def pull(registry: Registry, name: str, digest: str) -> requests.Response:
    """GET, following the 307 to the presigned S3 URL."""
    response = requests.get(f"{registry.url}/v2/{name}/blobs/{digest}", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response


def cached_descriptors(redis_server: RedisServer, name: str, digest: str) -> list[bytes]:
    return list(redis_server.client().scan_iter(match=f"s3blobs:*:d:*:{digest}:{name}"))


def test_push_through_one_pull_through_the_other(
    pair: tuple[Registry, Registry], redis_server: RedisServer
) -> None:
    one, two = pair
    layer = os.urandom(PART + 123_456)  # more than a part: its bytes live under data/
    config = b'{"architecture": "amd64", "os": "linux"}'
    layer_digest, config_digest = (
        push_blob(one, "team/app", layer),
        push_blob(one, "team/app", config),
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "size": len(config),
                "digest": config_digest,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "size": len(layer),
                    "digest": layer_digest,
                }
            ],
        }
    ).encode()
    put = requests.put(
        f"{one.url}/v2/team/app/manifests/v1",
        data=manifest,
        headers={"Content-Type": MANIFEST},
        timeout=TIMEOUT,
    )
    assert put.status_code == 201, put.text
    got = requests.get(f"{two.url}/v2/team/app/manifests/v1", timeout=TIMEOUT)
    assert got.status_code == 200 and got.content == manifest
    assert pull(two, "team/app", layer_digest).content == layer
    assert pull(two, "team/app", config_digest).content == config
    assert cached_descriptors(redis_server, "team/app", layer_digest)  # in the shared cache


def test_a_delete_through_one_is_404_through_the_other_at_once(
    pair: tuple[Registry, Registry], redis_server: RedisServer
) -> None:
    one, two = pair
    digest = push_blob(one, "team/gone", b"deleted soon")
    assert head(two, "team/gone", digest) == 200
    assert cached_descriptors(redis_server, "team/gone", digest)  # two answers from Redis...
    deleted = requests.delete(f"{one.url}/v2/team/gone/blobs/{digest}", timeout=TIMEOUT)
    assert deleted.status_code == 202
    assert head(two, "team/gone", digest) == 404  # ...and not after one's delete
    assert (
        requests.get(f"{two.url}/v2/team/gone/blobs/{digest}", timeout=TIMEOUT).status_code == 404
    )


def test_a_global_delete_and_a_sweep_then_a_push_again(
    pair: tuple[Registry, Registry], env: dict[str, str]
) -> None:
    one, two = pair
    layer = os.urandom(PART + 1)
    digest = push_blob(one, "gc/first", layer)
    push_blob(two, "gc/second", layer)
    first_location = requests.get(
        f"{two.url}/v2/gc/first/blobs/{digest}", allow_redirects=False, timeout=TIMEOUT
    ).headers["Location"]
    assert head(one, "gc/second", digest) == 200
    # The operator's side: the storage API on the same bucket and the same Redis.
    admin = S3BlobStorage.from_env(env)
    admin.blobs.delete(digest)
    s3 = direct_client(env["S3BLOBS_ENDPOINT_URL"])
    assert not check_bucket(s3, env["S3BLOBS_BUCKET"]).orphan_data  # delete took the data too
    for registry in (one, two):
        for name in ("gc/first", "gc/second"):
            assert head(registry, name, digest) == 404
    assert push_blob(two, "gc/first", layer) == digest  # new bytes, new data object
    assert not check_bucket(s3, env["S3BLOBS_BUCKET"]).orphan_data  # the new data is in use
    again = requests.get(
        f"{one.url}/v2/gc/first/blobs/{digest}", allow_redirects=False, timeout=TIMEOUT
    )
    assert again.status_code == 307
    assert again.headers["Location"].split("?")[0] != first_location.split("?")[0]
    assert pull(one, "gc/first", digest).content == layer
    assert pull(one, "gc/second", digest).content == layer  # its link outlived the blob


def test_redis_killed_and_restarted_mid_test(
    pair: tuple[Registry, Registry], redis_server: RedisServer
) -> None:
    one, two = pair
    before = push_blob(one, "team/outage", b"pushed before the outage")
    assert head(two, "team/outage", before) == 200
    redis_server.kill()
    started = time.monotonic()
    during = push_blob(two, "team/outage", b"pushed while Redis is down")
    for registry in (one, two):
        for digest in (before, during):
            assert head(registry, "team/outage", digest) == 200
    assert pull(one, "team/outage", during).content == b"pushed while Redis is down"
    deleted = requests.delete(f"{two.url}/v2/team/outage/blobs/{before}", timeout=TIMEOUT)
    assert deleted.status_code == 202
    assert head(one, "team/outage", before) == 404
    assert time.monotonic() - started < 15  # nothing waited long on the missing Redis
    redis_server.start()  # the same port, empty
    time.sleep(1.2)  # past the replicas' retry_after (1 s)
    inside = redis_server.client()
    for _ in range(3):  # each worker's first command after the outage resets its namespace
        assert head(one, "team/outage", during) == 200
        assert head(two, "team/outage", during) == 200
    hits = int(inside.info("stats")["keyspace_hits"])
    for registry in (one, two):
        assert head(registry, "team/outage", during) == 200
    assert int(inside.info("stats")["keyspace_hits"]) > hits  # the cache is used again
    assert cached_descriptors(redis_server, "team/outage", during)
    assert head(one, "team/outage", before) == 404
