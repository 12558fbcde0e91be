"""The push path with parts of different sizes (AWS S3): each byte is sent once."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
from test_durability import fail_always
from werkzeug.test import Client

from conftest import BUCKET, PART, S3Calls, all_keys, body_size
from s3blobs import BlobUnknown, BlobUploadUnknown, Config, Descriptor, S3BlobStorage, StorageError
from s3blobs.config import MiB
from s3blobs.registry import RegistryApp

BIG_PART = 8 * MiB  # larger than S3's 5 MiB minimum, so tails can fall either side


def desc(data: bytes, algorithm: str = "sha256") -> Descriptor:
    return Descriptor(
        "application/octet-stream",
        len(data),
        f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}",
    )


@pytest.fixture
def unequal(s3: Any) -> S3BlobStorage:
    return S3BlobStorage(Config(bucket=BUCKET, part_size=BIG_PART, max_concurrency=2, cache_size=0))


class BytesSent:
    """Blob bytes sent to S3 (parts, pieces, entries) and the objects they went to."""

    def __init__(self, storage: S3BlobStorage) -> None:
        self.parts: list[int] = []
        self.puts: dict[str, int] = {}
        self.gets: list[str] = []
        events = storage.client.meta.events
        events.register("before-call.s3.UploadPart", self._part)
        events.register("before-call.s3.PutObject", self._put)
        events.register("before-call.s3.GetObject", self._get)

    def _part(self, params: Any, **_: Any) -> None:
        self.parts.append(body_size(params.get("body")))

    def _put(self, params: Any, **_: Any) -> None:
        key = params["url_path"].lstrip("/").removeprefix(f"{BUCKET}/")
        if not key.startswith(("_uploads/", "repositories/")) or "/piece." in key:
            self.puts[key] = body_size(params.get("body"))

    def _get(self, params: Any, **_: Any) -> None:
        self.gets.append(params["url_path"])

    @property
    def total(self) -> int:
        return sum(self.parts) + sum(self.puts.values())


def test_unequal_parts_are_the_default_on_aws_and_equal_elsewhere() -> None:
    assert Config(bucket="b-1").equal_parts is False
    assert (
        Config(bucket="b-1", endpoint_url="https://s3.eu-west-1.amazonaws.com").equal_parts is False
    )
    assert Config(bucket="b-1", endpoint_url="https://acct.r2.cloudflarestorage.com").equal_parts
    custom = {"S3BLOBS_BUCKET": "b-1", "S3BLOBS_ENDPOINT_URL": "http://127.0.0.1:9000"}
    assert Config.from_env(custom).equal_parts is True
    assert Config.from_env({**custom, "S3BLOBS_EQUAL_PARTS": "false"}).equal_parts is False
    assert Config.from_env({**custom, "S3BLOBS_EQUAL_PARTS": "auto"}).equal_parts is True


@pytest.mark.parametrize(
    "size", [2 * BIG_PART, 2 * BIG_PART + 3 * MiB, 2 * BIG_PART + 6 * MiB, BIG_PART - 1, 6 * MiB]
)
def test_a_whole_blob_request_sends_each_byte_once(unequal: S3BlobStorage, size: int) -> None:
    """A PATCH carrying the whole blob, then an empty PUT: what skopeo does."""
    repo = unequal.repository("library/app")
    data = os.urandom(size)
    writer = repo.create()
    sent = BytesSent(unequal)
    writer.write(data)
    writer.close()
    committed = repo.resume(writer.id).commit(desc(data))
    assert sent.total == size, (sent.parts, sent.puts)
    assert not [get for get in sent.gets if "/piece." in get]
    assert repo.get(committed.digest) == data
    assert not [k for k in all_keys(unequal.client) if "/piece." in k or "_uploads/" in k]


def test_a_short_tail_joins_the_part_held_back(unequal: S3BlobStorage) -> None:
    repo = unequal.repository("library/app")
    data = os.urandom(2 * BIG_PART + 1)
    writer = repo.create()
    sent = BytesSent(unequal)
    writer.write(data)
    writer.close()
    assert sent.parts == [BIG_PART, BIG_PART + 1]  # no 1-byte piece: it rode along
    assert repo.get(repo.resume(writer.id).commit(desc(data)).digest) == data


def test_chunks_of_any_size_still_make_the_right_blob(unequal: S3BlobStorage) -> None:
    repo = unequal.repository("library/app")
    data = os.urandom(3 * BIG_PART + 12345)
    writer = repo.create()
    writer.close()
    pos = 0
    for chunk in (1, 6 * MiB, 100, 9 * MiB, 3 * MiB, 5 * MiB):  # tails above and below 5 MiB
        writer = repo.resume(writer.id)
        writer.write(data[pos : pos + chunk])
        writer.close()
        pos += chunk
    writer = repo.resume(writer.id)
    writer.write(data[pos:])
    assert repo.get(writer.commit(desc(data)).digest) == data


def test_a_small_blob_is_saved_once_as_its_own_entry(unequal: S3BlobStorage) -> None:
    repo = unequal.repository("library/app")
    data = os.urandom(300 * 1024)
    writer = repo.create()
    writer.write(data)
    writer.close()
    sent = BytesSent(unequal)
    calls = S3Calls(unequal.client)
    repo.resume(writer.id).commit(desc(data))
    assert sent.total == 0  # the commit sends none of the blob's bytes again
    assert calls.by_op() == {
        "GetObject": 1,  # the state
        "HeadObject": 1,  # the entry: still there?
        "PutObject": 1,  # the link (every byte was in place: no seal)
        "AbortMultipartUpload": 1,
        "DeleteObjects": 1,
    }
    assert repo.get(desc(data).digest) == data


def test_a_small_blob_whose_entry_was_swept_meanwhile(unequal: S3BlobStorage) -> None:
    repo = unequal.repository("library/app")
    data = os.urandom(1000)
    writer = repo.create()
    writer.write(data)
    writer.close()
    unequal.blobs.delete(desc(data).digest)  # as garbage collection would
    with pytest.raises(BlobUploadUnknown):
        repo.resume(writer.id).commit(desc(data))
    with pytest.raises(BlobUnknown):
        repo.stat(desc(data).digest)


def test_a_small_blob_committed_in_another_algorithm(unequal: S3BlobStorage) -> None:
    repo = unequal.repository("library/app")
    data = os.urandom(1000)
    writer = repo.create()
    writer.write(data)
    writer.close()
    descriptor = repo.resume(writer.id).commit(desc(data, "sha512"))
    assert repo.get(descriptor.digest) == data


def test_more_bytes_after_a_whole_blob_close(unequal: S3BlobStorage) -> None:
    """The entry saved for the first bytes stays a blob (content-addressed: another
    upload may have stored the same); the upload goes on from its bytes."""
    repo = unequal.repository("library/app")
    first, rest = os.urandom(1000), os.urandom(2000)
    writer = repo.create()
    writer.write(first)
    writer.close()
    writer = repo.resume(writer.id)
    writer.write(rest)
    writer.close()
    assert repo.get(repo.resume(writer.id).commit(desc(first + rest)).digest) == first + rest
    assert unequal.blobs.get(desc(first).digest) == first


def test_a_retried_chunk_with_parts_held_back(unequal: S3BlobStorage) -> None:
    repo = unequal.repository("library/app")
    data = os.urandom(2 * BIG_PART + 2 * MiB)
    writer = repo.create()
    writer.close()
    first = repo.resume(writer.id)
    first.write(data)
    first.close()
    again = repo.resume(writer.id)  # (a stale view: the client's retry of its PATCH)
    assert again.size == len(data)
    descriptor = repo.resume(writer.id).commit(desc(data))
    assert repo.get(descriptor.digest) == data


def test_post_advertises_the_chunk_worth_sending(unequal: S3BlobStorage, config: Config) -> None:
    response = Client(RegistryApp(unequal)).post("/v2/library/app/blobs/uploads/")
    assert response.headers["OCI-Chunk-Min-Length"] == str(5 * MiB)
    response = Client(RegistryApp(S3BlobStorage(config))).post("/v2/library/app/blobs/uploads/")
    assert response.headers["OCI-Chunk-Min-Length"] == str(PART)  # equal parts


def test_an_entry_that_was_there_already_is_not_taken_as_saved_bytes(
    unequal: S3BlobStorage,
) -> None:
    """gc may be deleting an old unlinked entry: the upload keeps its own piece."""
    repo = unequal.repository("library/app")
    data = os.urandom(1000)
    unequal.blobs.put("application/octet-stream", data)  # an old blob, linked nowhere
    writer = repo.create()
    writer.write(data)
    writer.close()
    pieces = [k for k in all_keys(unequal.client) if "/piece." in k]
    assert len(pieces) == 1
    assert repo.get(repo.resume(writer.id).commit(desc(data)).digest) == data


def test_a_small_blob_stored_already_is_committed_without_its_saved_bytes(
    unequal: S3BlobStorage,
) -> None:
    """A push of content the registry has: the entry is there, so the saved piece is
    neither read nor sent again, and nothing is sealed (no byte came with the PUT)."""
    repo = unequal.repository("library/app")
    data = os.urandom(1000)
    unequal.blobs.put("application/octet-stream", data)
    writer = repo.create()
    writer.write(data)
    writer.close()
    calls = S3Calls(unequal.client)
    assert repo.resume(writer.id).commit(desc(data)).digest == desc(data).digest
    assert calls.by_op() == {
        "GetObject": 1,  # the state
        "HeadObject": 1,  # the entry: there
        "PutObject": 1,  # the link
        "AbortMultipartUpload": 1,
        "DeleteObjects": 1,  # the state and the piece
    }
    assert repo.get(desc(data).digest) == data
    assert not [k for k in all_keys(unequal.client) if k.startswith("_uploads/")]


def test_saved_bytes_make_the_blob_when_its_entry_went_before_the_retry(
    unequal: S3BlobStorage,
) -> None:
    """Chunks below a part: pieces. The first commit's link fails; the entry it wrote
    is then swept (as by gc); the retry, unsealed, writes it again from the pieces."""
    repo = unequal.repository("library/app")
    data = os.urandom(3000)
    writer = repo.create()
    for chunk in (data[:1000], data[1000:]):
        writer = repo.resume(writer.id)
        writer.write(chunk)
        writer.close()

    stop = fail_always(unequal, "PutObject", "/_layers/")  # the link
    with pytest.raises(StorageError):
        repo.resume(writer.id).commit(desc(data))
    stop()
    assert repo.resume(writer.id).committing == ""  # no byte came with the PUT: no seal
    unequal.blobs.delete(desc(data).digest)
    assert repo.get(repo.resume(writer.id).commit(desc(data)).digest) == data
