"""gc while pushes go on: two registry processes (storages with their own clients, caches
and copies of the fence) serve four client threads that push new images, push old
unreferenced content again, check blobs and skip their upload, mount, retag and
delete, while gc runs again and again with a one-second grace. Afterwards every
manifest that exists resolves and every blob it names reads back byte for byte, no
client was told a blob exists and then refused a manifest naming it, and the old
unreferenced blobs nobody touched are gone."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import boto3
from werkzeug.test import Client

from conftest import PART
from gcsupport import CONFIG, LAYER, MANIFEST, descriptor, digest_of
from s3blobs import Config, DescriptorCacheFactory, S3BlobStorage
from s3blobs.registry import RegistryApp

GRACE = 1.0  # S3BLOBS_GC_GRACE: links are refreshed when older than 0.5s
FENCE_TTL = 0.3  # how long each registry process keeps its copy of the fence
PUSHING = 6.0  # seconds the clients keep pushing
ALLOWED = {200, 201, 202, 204, 307, 404, 429}


def registry_process(env: dict[str, str]) -> S3BlobStorage:
    config = Config.from_env(env, cache_size=1000, cache_ttl=0.5, gc_grace=GRACE)
    storage = S3BlobStorage(config, DescriptorCacheFactory(maxsize=1000, ttl=config.cache_ttl))
    storage.fence.ttl = FENCE_TTL
    return storage


@dataclass
class World:
    """What the clients did, for the checks afterwards."""

    old: dict[str, bytes]  # unreferenced and old before the clients start
    homes: dict[str, str]  # old digest -> a repository linking it
    #: content clients push again: the old blobs, and those of manifests they deleted
    pool: dict[str, bytes] = field(default_factory=dict)
    accepted: dict[tuple[str, str], dict[str, bytes]] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    statuses: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, what: str, status: int) -> None:
        with self.lock:
            self.statuses.add(status)
            if status not in ALLOWED:
                self.failures.append(f"{what}: {status}")


class Pusher:
    def __init__(self, world: World, app: RegistryApp, seed: int) -> None:
        self.world, self.client, self.rng = world, Client(app), random.Random(seed)
        self.repository = f"live/{'ab'[seed % 2]}"
        self.mine: list[tuple[str, str]] = []

    def run(self, until: float) -> None:
        while time.time() < until:
            action = self.rng.choice(["new", "reuse", "reuse", "mount", "delete", "pull"])
            getattr(self, action)()

    # What clients do -------------------------------------------------------------------

    def new(self) -> None:
        self.push([os.urandom(self.rng.randint(1, 4000)) for _ in range(2)], [])

    def reuse(self) -> None:
        with self.world.lock:
            pool = sorted(self.world.pool)
        self.push([os.urandom(100)], self.rng.sample(pool, 2))

    def mount(self) -> None:
        with self.world.lock:
            digest = self.rng.choice(sorted(self.world.pool))
            home = self.world.homes[digest]
        self.touch(digest)
        answer = self.client.post(
            f"/v2/{self.repository}/blobs/uploads/",
            query_string={"mount": digest, "from": home},
        )
        self.world.note("mount", answer.status_code)
        if answer.status_code == 202:  # not mounted: cancel, the push below uploads
            self.client.delete(answer.headers["Location"])
        self.push([], [digest])

    def delete(self) -> None:
        if self.mine:
            repository, digest = self.mine.pop(self.rng.randrange(len(self.mine)))
            with self.world.lock:
                blobs = self.world.accepted.pop((repository, digest), {})
                self.world.pool.update(blobs)  # unreferenced, unless pushed elsewhere
                self.world.homes.update({blob: repository for blob in blobs})
            answer = self.client.delete(f"/v2/{repository}/manifests/{digest}")
            self.world.note("manifest delete", answer.status_code)

    def pull(self) -> None:
        with self.world.lock:
            digest = self.rng.choice(sorted(self.world.pool))
            home = self.world.homes[digest]
        self.touch(digest)
        self.world.note("blob GET", self.client.get(f"/v2/{home}/blobs/{digest}").status_code)

    # A push as a client does it: check each blob, upload what is missing, then the
    # manifest; retry what the registry asks to retry. --------------------------------

    def push(self, fresh: list[bytes], old: list[str]) -> None:
        with self.world.lock:
            contents = {digest_of(x): x for x in fresh} | {d: self.world.pool[d] for d in old}
        for digest in old:
            self.touch(digest)
        config = json.dumps({"n": self.rng.random()}).encode()
        contents[digest_of(config)] = config
        for _ in range(30):
            # When the registry last vouched for each blob: a HEAD answered 200, or an
            # upload answered 201. gc must not delete it within the grace after that.
            vouched = {d: time.time() for d in contents if self.exists(d)}
            for digest, data in contents.items():
                if digest not in vouched:
                    self.upload(data)
                    vouched[digest] = time.time()
            time.sleep(self.rng.uniform(0, 0.3))  # a client taking its time
            layers = [descriptor(LAYER, contents[d]) for d in contents if d != digest_of(config)]
            body = {
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": descriptor(CONFIG, config),
                "layers": layers,
            }
            tag = f"t{self.rng.randint(0, 3)}"
            raw = json.dumps(body).encode()
            for _ in range(30):
                answer = self.client.put(
                    f"/v2/{self.repository}/manifests/{tag}",
                    data=raw,
                    headers={"Content-Type": MANIFEST},
                )
                if answer.status_code != 400:  # judged below
                    self.world.note("manifest PUT", answer.status_code)
                if answer.status_code != 429:
                    break
                time.sleep(0.1)
            if answer.status_code == 201:
                digest = digest_of(raw)
                with self.world.lock:
                    self.world.accepted[(self.repository, digest)] = dict(contents)
                self.mine.append((self.repository, digest))
                return
            error = answer.get_json()["errors"][0]
            if answer.status_code == 400 and error["code"] == "MANIFEST_BLOB_UNKNOWN":
                # Allowed only for a blob the registry vouched for longer ago than the
                # grace (this client retried 429s, or took its time, for that long).
                for digest in set(error["detail"]):
                    if time.time() - vouched[digest] < GRACE:
                        self.world.failures.append(f"{digest}: vouched for, then unknown")
            elif answer.status_code != 429:
                self.world.failures.append(f"manifest PUT: {answer.status_code} {error}")
        self.world.failures.append("a push never succeeded")

    def exists(self, digest: str) -> bool:
        answer = self.client.head(f"/v2/{self.repository}/blobs/{digest}")
        self.world.note("blob HEAD", answer.status_code)
        return answer.status_code == 200

    def upload(self, data: bytes) -> None:
        for _ in range(50):
            answer = self.client.post(
                f"/v2/{self.repository}/blobs/uploads/",
                query_string={"digest": digest_of(data)},
                data=data,
            )
            self.world.note("upload", answer.status_code)
            if answer.status_code == 201:
                return
            time.sleep(0.1)
        self.world.failures.append("an upload never succeeded")

    def touch(self, digest: str) -> None:
        with self.world.lock:
            self.world.touched.add(digest)


def test_gc_while_clients_push(server_env: dict[str, str]) -> None:
    env = {**server_env, "S3BLOBS_GC_GRACE": str(GRACE), "S3BLOBS_CACHE_TTL": "0.5"}
    setup = registry_process(env)
    client = Client(RegistryApp(setup))
    rng = random.Random(7)
    old: dict[str, bytes] = {}
    homes: dict[str, str] = {}
    # Old and unreferenced: loose blobs (one stored in parts) and blobs of deleted
    # manifests, each linked into three repositories. Old and kept: tagged images.
    kept: dict[tuple[str, str], dict[str, bytes]] = {}
    for i in range(40):
        data = os.urandom(PART + 1) if i == 0 else os.urandom(rng.randint(1, 3000))
        repository = f"old/r{i % 4}"
        pushed = client.post(
            f"/v2/{repository}/blobs/uploads/", query_string={"digest": digest_of(data)}, data=data
        )
        assert pushed.status_code == 201
        old[digest_of(data)], homes[digest_of(data)] = data, repository
    for i in range(6):
        layer = os.urandom(500)
        config = json.dumps({"kept": i}).encode()
        for data in (layer, config):
            client.post(
                "/v2/old/kept/blobs/uploads/", query_string={"digest": digest_of(data)}, data=data
            )
        body = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": descriptor(CONFIG, config),
            "layers": [descriptor(LAYER, layer)],
        }
        raw = json.dumps(body).encode()
        answer = client.put(
            f"/v2/old/kept/manifests/v{i}", data=raw, headers={"Content-Type": MANIFEST}
        )
        assert answer.status_code == 201
        if i % 2:  # deleted: its blobs are unreferenced now
            assert client.delete(f"/v2/old/kept/manifests/{digest_of(raw)}").status_code == 202
            for data in (layer, config):
                old[digest_of(data)], homes[digest_of(data)] = data, "old/kept"
        else:
            kept[("old/kept", digest_of(raw))] = {
                digest_of(config): config,
                digest_of(layer): layer,
            }
    # Linked into the clients' repositories too (old links: a HEAD there answers 200).
    for digest, home in homes.items():
        for repository in ("live/a", "live/b"):
            mount = client.post(
                f"/v2/{repository}/blobs/uploads/", query_string={"mount": digest, "from": home}
            )
            assert mount.status_code == 201
    time.sleep(1.0 + 1.5 * GRACE + 0.3)  # all of it older than the grace, as gc reads it

    world = World(old=old, homes=dict(homes), accepted=dict(kept), pool=dict(old))
    apps = [RegistryApp(registry_process(env)), RegistryApp(registry_process(env))]
    until = time.time() + PUSHING
    threads = [
        threading.Thread(target=Pusher(world, apps[i % 2], seed=i).run, args=(until,))
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    collector = registry_process(env)
    reports = []
    while time.time() < until:
        reports.append(
            collector.collect_garbage(grace=GRACE, settle=FENCE_TTL + 0.1, progress=False)
        )
    for thread in threads:
        thread.join(timeout=60)
    reports.append(collector.collect_garbage(grace=GRACE, settle=FENCE_TTL + 0.1, progress=False))

    assert world.failures == [], world.failures[:10]
    assert len(reports) >= 2 and sum(r.deleted["blobs"].count for r in reports) > 0
    # gc met the clients: it spared what they touched, or they were asked to retry.
    assert sum(r.spared for r in reports) > 0 or 429 in world.statuses
    check_every_manifest(setup, env)
    reader = S3BlobStorage.from_env(env)
    for (repository, digest), blobs in world.accepted.items():
        assert client.get(f"/v2/{repository}/manifests/{digest}").status_code == 200
        for blob in blobs:
            assert digest_of(reader.repository(repository).get(blob)) == blob
    untouched = set(old) - world.touched
    assert untouched, "every old blob was touched: the run proves nothing about sweeping"
    entries = keys_under(env, "blobs/")
    for digest in untouched:
        assert f"blobs/sha256/{digest[7:9]}/{digest[7:]}" not in entries, digest
    assert not keys_under(env, "_gc/")


def check_every_manifest(storage: S3BlobStorage, env: dict[str, str]) -> None:
    """Every revision in the bucket resolves through the registry, and every blob its
    manifest names reads back from S3 with its digest."""
    client = Client(RegistryApp(storage))
    reader = S3BlobStorage.from_env(env)
    revisions = [key for key in keys_under(env, "repositories/") if "/_manifests/revisions/" in key]
    assert revisions
    for key in revisions:
        repository, _, rest = key[len("repositories/") :].partition("/_manifests/revisions/")
        digest = rest.replace("/", ":")
        answer = client.get(f"/v2/{repository}/manifests/{digest}", headers={"Accept": MANIFEST})
        assert answer.status_code == 200, (key, answer.status_code)
        manifest = json.loads(answer.get_data())
        for blob in [manifest["config"], *manifest["layers"]]:
            data = reader.repository(repository).get(blob["digest"])
            assert digest_of(data) == blob["digest"]


def keys_under(env: dict[str, str], prefix: str) -> set[str]:
    s3: Any = boto3.client("s3", endpoint_url=env["S3BLOBS_ENDPOINT_URL"], region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=env["S3BLOBS_BUCKET"], Prefix=prefix
    )
    return {item["Key"] for page in pages for item in page.get("Contents", ())}
