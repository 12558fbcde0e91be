"""The Redis cache provider against a real redis-server: the descriptor cache's contract,
shared data locations and manifests, O(1) global invalidation, namespaces, and what
happens when Redis fails, freezes, or misses an invalidation.

Two S3BlobStorage objects on one Redis stand for two replicas here (S3 is in-process
moto); tests/test_replicas.py does the same with registry processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from certs import make_server_certificate
from conftest import PART, S3Calls
from netutil import free_port
from s3blobs import BlobUnknown, Config, ConfigError, S3BlobStorage
from s3blobs.cache_backend import caches_from_config
from s3blobs.redis_cache import (
    RedisDescriptorCacheFactory,
    RedisLocationCache,
    RedisManifestCache,
)
from s3blobs.redis_client import RedisCache, namespace_for
from s3blobs.registry import RegistryApp
from servers import RedisServer
from servers import redis_server as running_redis

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(redis_process: RedisServer) -> RedisServer:
    """The module's redis-server, running and empty."""
    if redis_process.proc is None or redis_process.proc.poll() is not None:
        redis_process.start()
    redis_process.client().flushall()
    return redis_process


@dataclass
class Replica:
    storage: S3BlobStorage
    descriptors: RedisDescriptorCacheFactory
    cache: RedisCache

    def repo(self, name: str = "team/app") -> Any:
        return self.storage.repository(name)


def replica(config: Config, url: str, ttl: float = 60, retry_after: float = 0.2) -> Replica:
    """A storage with its descriptor and location caches on the Redis at ``url``."""
    cache = RedisCache(url, namespace_for(config), retry_after=retry_after)
    descriptors = RedisDescriptorCacheFactory(cache, ttl)
    storage = S3BlobStorage(config, descriptors, location_cache=RedisLocationCache(cache, ttl))
    return Replica(storage, descriptors, cache)


@pytest.fixture
def pair(config: Config, redis_server: RedisServer) -> tuple[Replica, Replica]:
    return replica(config, redis_server.url), replica(config, redis_server.url)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def command_calls(redis_server: RedisServer) -> int:
    """Commands Redis has run so far (scripts' own calls included)."""
    stats = redis_server.client().info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


# The contract, shared --------------------------------------------------------------


def test_one_replica_fills_the_cache_the_other_hits(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    descriptor = a.repo().put("x/y", b"shared blob")  # put fills the cache (set_descriptor)
    calls = S3Calls(b.storage.client)
    for _ in range(5):
        assert b.repo().stat(descriptor.digest) == descriptor
    assert calls.count == 0
    assert b.descriptors.stats.hits == 5 and b.descriptors.stats.misses == 0


def test_misses_are_not_cached(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    data = b"pushed later"
    calls = S3Calls(b.storage.client)
    for _ in range(2):
        with pytest.raises(BlobUnknown):
            b.repo().stat(digest_of(data))
    assert calls.ops == ["HeadObject"] * 2  # the link, absent, each time
    a.repo().put("x/y", data)
    assert b.repo().stat(digest_of(data)).size == len(data)


def test_repositories_are_apart(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    digest = a.repo("one").put("x/y", b"only in one").digest
    assert b.repo("one").stat(digest).size == 11
    with pytest.raises(BlobUnknown):
        b.repo("two").stat(digest)


def test_a_delete_in_one_replica_is_seen_by_the_other_at_once(
    pair: tuple[Replica, Replica],
) -> None:
    a, b = pair
    digest = a.repo("one").put("x/y", b"doomed").digest
    a.repo("two").put("x/y", b"doomed")
    for name in ("one", "two"):
        assert b.repo(name).stat(digest).size == 6
    assert b.storage.blobs.stat(digest).size == 6
    a.repo("one").delete(digest)
    with pytest.raises(BlobUnknown):
        b.repo("one").stat(digest)
    assert b.repo("two").stat(digest).size == 6  # a miss, then S3 says it is still there
    a.storage.blobs.delete(digest)
    with pytest.raises(BlobUnknown):
        b.repo("two").stat(digest)
    with pytest.raises(BlobUnknown):
        b.storage.blobs.stat(digest)


def test_a_global_delete_is_the_same_few_commands_for_1_or_40_repositories(
    config: Config, redis_server: RedisServer
) -> None:
    costs = []
    for repositories in (1, 40):
        a, b = replica(config, redis_server.url), replica(config, redis_server.url)
        data = f"cached in {repositories} repositories".encode()
        for i in range(repositories):
            digest = a.repo(f"r{i}").put("x/y", data).digest
            assert b.repo(f"r{i}").stat(digest).size == len(data)
        before = command_calls(redis_server)
        a.storage.blobs.delete(digest)
        costs.append(command_calls(redis_server) - before)
        calls = S3Calls(b.storage.client)
        for i in range(repositories):
            with pytest.raises(BlobUnknown):
                b.repo(f"r{i}").stat(digest)
        # every repository's entry was dropped: each stat asked S3 (link, then entry)
        assert calls.ops == ["HeadObject", "HeadObject"] * repositories
    assert costs[0] == costs[1] <= 12, costs  # INFO and script-internal calls included


def test_a_stat_that_raced_a_delete_stores_nothing(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    descriptor = a.repo().put("x/y", b"raced")
    a.descriptors.invalidate(descriptor.digest, "team/app")
    found, token = b.descriptors.lookup(descriptor.digest, "team/app")  # a miss, then S3...
    assert found is None
    a.descriptors.invalidate(descriptor.digest, "")  # ...while a delete goes by
    b.descriptors.put(descriptor.digest, "team/app", descriptor, token)
    assert b.descriptors.lookup(descriptor.digest, "team/app")[0] is None
    b.descriptors.put(descriptor.digest, "team/app", descriptor, None)  # set_descriptor
    assert b.descriptors.lookup(descriptor.digest, "team/app")[0] == descriptor


def test_entries_expire_with_the_ttl(config: Config, redis_server: RedisServer) -> None:
    short = replica(config, redis_server.url, ttl=0.3)
    digest = short.repo().put("x/y", b"short-lived").digest
    inside = redis_server.client()
    keys = inside.keys(namespace_for(config) + "d:*")
    assert keys and all(0 < inside.pttl(key) <= 300 for key in keys)
    time.sleep(0.4)
    calls = S3Calls(short.storage.client)
    assert short.repo().stat(digest).size == 11
    assert calls.ops == ["HeadObject", "HeadObject"]


def test_two_registries_share_a_redis_apart(config: Config, redis_server: RedisServer) -> None:
    one, two = (replica(replace(config, prefix=p), redis_server.url) for p in ("one", "two"))
    digest = one.repo().put("x/y", b"in registry one").digest
    assert one.repo().stat(digest).size == 15
    with pytest.raises(BlobUnknown):
        two.repo().stat(digest)
    keys = {key.decode() for key in redis_server.client().keys("*")}
    assert keys and all(
        key.startswith(("s3blobs:s3blobs-test/one:", "s3blobs:s3blobs-test/two:")) for key in keys
    )
    assert namespace_for(config) == "s3blobs:s3blobs-test:"


def test_data_locations_are_shared(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    data = b"p" * (PART + 1)  # past one part: its entry names a data object
    digest = a.repo().put("x/y", data).digest
    calls = S3Calls(b.storage.client)
    response = b.repo().serve_blob({"REQUEST_METHOD": "GET"}, digest)
    assert response.status_code == 307
    # Descriptor and data location both from Redis; only the link's age is asked (a
    # confirmation must know it, for gc: s3blobs.gc), once per process and link.
    assert calls.ops == ["HeadObject"]
    assert b.repo().serve_blob({"REQUEST_METHOD": "GET"}, digest).status_code == 307
    calls.reset()
    assert b.repo().get(digest) == data
    assert calls.ops == ["GetObject"]  # straight to the data object


def test_manifests_are_shared(config: Config, redis_server: RedisServer) -> None:
    a, b = (
        RegistryApp(r.storage, RedisManifestCache(r.cache))
        for r in (replica(config, redis_server.url), replica(config, redis_server.url))
    )
    config_blob = a.storage.repository("team/app").put(
        "application/vnd.oci.image.config.v1+json", b"{}"
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": config_blob.to_dict(),
            "layers": [],
        }
    ).encode()
    put = Client(a).put(
        "/v2/team/app/manifests/v1", data=manifest, headers={"Content-Type": MANIFEST}
    )
    assert put.status_code == 201, put.data
    calls = S3Calls(b.storage.client)
    got = Client(b).get("/v2/team/app/manifests/v1")
    assert got.status_code == 200 and got.data == manifest
    assert got.headers["Content-Type"] == MANIFEST
    # the tag and the revision link from S3 (never cached); the bytes from Redis
    assert sorted(calls.ops) == ["GetObject", "HeadObject"]


# When Redis fails -------------------------------------------------------------------


def test_redis_down_never_fails_a_request_and_is_used_again_once_back(
    pair: tuple[Replica, Replica], redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = pair
    kept = a.repo().put("x/y", b"kept").digest
    redis_server.kill()
    caplog.set_level(logging.WARNING, logger="s3blobs.redis_client")
    started = time.monotonic()
    for i in range(20):
        digest = a.repo().put("x/y", f"while down {i}".encode()).digest
        assert b.repo().stat(digest).size == len(f"while down {i}")
        assert b.repo().stat(kept).size == 4
    b.repo().delete(kept)
    with pytest.raises(BlobUnknown):
        a.repo().stat(kept)
    assert time.monotonic() - started < 10
    assert a.cache.stats.failures >= 1 and b.cache.stats.failures >= 1
    assert a.cache.stats.skipped + b.cache.stats.skipped > 0  # stood aside between tries
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert 1 <= len(warnings) <= 2  # one per replica, not one per request
    redis_server.start()  # same port, empty
    time.sleep(0.3)  # past retry_after
    with pytest.raises(BlobUnknown):
        b.repo().stat(kept)
    assert b.cache.stats.epoch_resets == 1  # for the delete it made while Redis was down
    digest = a.repo().put("x/y", b"after").digest
    hits = b.descriptors.stats.hits
    calls = S3Calls(b.storage.client)
    assert b.repo().stat(digest).size == 5
    assert b.descriptors.stats.hits == hits + 1 and calls.count == 0
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_a_frozen_redis_costs_a_timeout_not_a_failure(
    pair: tuple[Replica, Replica], redis_server: RedisServer
) -> None:
    a, b = pair
    digest = a.repo().put("x/y", b"frozen").digest
    redis_server.freeze()
    try:
        started = time.monotonic()
        assert b.repo().stat(digest).size == 6  # S3 answers
        assert time.monotonic() - started < 1.0  # a timeout or two of 20 ms, and S3
        assert b.cache.stats.failures >= 1
    finally:
        redis_server.thaw()
    time.sleep(0.3)
    b.repo().stat(digest)
    hits = b.descriptors.stats.hits
    b.repo().stat(digest)
    assert b.descriptors.stats.hits == hits + 1


def test_an_invalidation_redis_refused_drops_the_whole_namespace(
    pair: tuple[Replica, Replica], redis_server: RedisServer
) -> None:
    a, b = pair
    digest = a.repo().put("x/y", b"stale?").digest
    other = a.repo().put("x/y", b"other").digest
    assert b.repo().stat(digest).size == 6
    inside = redis_server.client()
    inside.config_set("maxmemory", 1)  # Redis full: writes refused, reads still served
    try:
        a.repo().delete(digest)  # deleted in S3; the invalidation is refused
    finally:
        inside.config_set("maxmemory", 0)
    assert a.cache.stats.missed_invalidations == 1
    # Until the replica that missed it reaches Redis again, the others can be stale...
    assert b.repo().stat(digest).size == 6
    time.sleep(0.3)
    a.repo().stat(other)  # ...and then it drops every entry first
    assert a.cache.stats.epoch_resets == 1
    with pytest.raises(BlobUnknown):
        b.repo().stat(digest)
    assert b.repo().stat(other).size == 5


# Configuration ----------------------------------------------------------------------


def test_s3blobs_cache_selects_the_backend(s3: Any, redis_server: RedisServer) -> None:
    base = {"S3BLOBS_BUCKET": "s3blobs-test"}
    memory = S3BlobStorage.from_env(base)
    assert type(memory.descriptor_service_factory).__name__ == "DescriptorCacheFactory"
    shared = S3BlobStorage.from_env({**base, "S3BLOBS_CACHE": redis_server.url})
    assert isinstance(shared.descriptor_service_factory, RedisDescriptorCacheFactory)
    digest = shared.repository("a").put("x/y", b"via env").digest
    assert redis_server.client().keys("s3blobs:s3blobs-test:d:*")
    assert S3BlobStorage.from_env(base).repository("a").stat(digest).size == 7
    off = Config.from_env({**base, "S3BLOBS_CACHE": redis_server.url, "S3BLOBS_CACHE_SIZE": "0"})
    assert caches_from_config(off).descriptors is None


@pytest.mark.parametrize(
    "value",
    [
        "redis://127.0.0.1:6379/0",
        "redis://:s3cret@redis.internal:6380/2",
        "rediss://user:s3cret@redis.example.com:6380/0?socket_timeout=0.01",
        "redis://[::1]:6379",
    ],
)
def test_redis_urls_are_accepted(value: str) -> None:
    config = Config.from_env({"S3BLOBS_BUCKET": "b-1", "S3BLOBS_CACHE": value})
    assert config.cache == value
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(
    "value",
    ["redis", "http://:s3cret@host", "redis://:s3cret@host:port", "redis://", "memcached://x"],
)
def test_a_bad_cache_names_the_variable_and_hides_the_password(value: str) -> None:
    with pytest.raises(ConfigError) as error:
        Config.from_env({"S3BLOBS_BUCKET": "b-1", "S3BLOBS_CACHE": value})
    assert "S3BLOBS_CACHE" in str(error.value)
    assert "s3cret" not in str(error.value)


def test_rediss_with_a_password(
    config: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TLS to Redis (the server's certificate checked against the test's authority)
    and a password in the URL, which is never shown."""
    tls = make_server_certificate(tmp_path / "tls")
    caplog.set_level(logging.DEBUG)
    with running_redis(tmp_path / "redis", tls=tls, password="s3cret") as server:
        assert server.url.startswith("rediss://:s3cret@")
        a, b = replica(config, server.url), replica(config, server.url)
        digest = a.repo().put("x/y", b"over TLS").digest
        calls = S3Calls(b.storage.client)
        assert b.repo().stat(digest).size == 8 and calls.count == 0  # from Redis
        assert server.client().keys(namespace_for(config) + "d:*")
        assert a.cache.stats.failures == b.cache.stats.failures == 0
        assert a.cache.url.startswith("rediss://:***@")
        wrong = replica(config, server.url.replace("s3cret", "not-it"))
        assert wrong.repo().stat(digest).size == 8  # S3 answers
        assert wrong.cache.stats.failures >= 1
    assert "s3cret" not in caplog.text and "not-it" not in caplog.text


@pytest.mark.parametrize("query", ["socket_timeout=soon", "no_such_option=1"])
def test_a_bad_redis_option_fails_at_start_up(config: Config, query: str) -> None:
    shared = replace(config, cache=f"redis://:s3cret@127.0.0.1:6379/0?{query}", cache_size=10)
    with pytest.raises(ConfigError, match="S3BLOBS_CACHE") as error:
        caches_from_config(shared)
    assert "s3cret" not in str(error.value)


def test_a_password_is_never_logged(config: Config, caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"  # nothing listens there
    caplog.set_level(logging.DEBUG)
    down = replica(config, url)
    digest = down.repo().put("x/y", b"no redis").digest
    assert down.repo().stat(digest).size == 8
    assert down.cache.stats.failures >= 1
    assert "unavailable" in caplog.text and ":***@" in caplog.text
    assert "s3cret" not in caplog.text
    assert "s3cret" not in repr(down.cache.url)
