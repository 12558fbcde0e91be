"""The writer's durability rules, one failure class at a time, in-process.

A lost answer is botocore's own doing here: a ``needs-retry`` handler makes botocore
send a request again after S3 has carried it out and answered, which is exactly what
happens when an answer is lost on the wire. (The fault-injection suite does the same
with a proxy on a real socket.)
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from conftest import PART, S3Calls, all_keys, open_uploads, s3_error
from s3blobs import (
    BlobInvalidDigest,
    BlobUploadClosed,
    BlobUploadConflict,
    BlobUploadUnknown,
    Descriptor,
    S3BlobStorage,
    StorageError,
)
from s3blobs.config import MiB
from s3blobs.errors import UploadBufferFull


def desc(data: bytes) -> Descriptor:
    return Descriptor(
        "application/octet-stream", len(data), f"sha256:{hashlib.sha256(data).hexdigest()}"
    )


def lose_answers(
    storage: S3BlobStorage, operation: str, key_part: str, times: int = 1
) -> list[str]:
    """The next ``times`` ``operation`` requests on keys containing ``key_part`` are
    carried out by S3, and botocore, as if their answer never came, sends them again."""
    lost: list[str] = []

    def again(response: Any, request_dict: Any, caught_exception: Any, **_: Any) -> int | None:
        if caught_exception is None and key_part in request_dict["url"] and len(lost) < times:
            lost.append(request_dict["url"])
            return 0  # retry at once
        return None

    storage.client.meta.events.register_first(f"needs-retry.s3.{operation}", again)
    return lost


def fail_always(storage: S3BlobStorage, operation: str, key_part: str = "") -> Callable[[], None]:
    """Every ``operation`` request (on keys containing ``key_part``) answers 500;
    returns the function that stops it."""

    def fail(request: Any, **_: Any) -> Any:
        return s3_error(500, "InternalError") if key_part in request.url else None

    storage.client.meta.events.register_first(f"before-send.s3.{operation}", fail)
    return lambda: storage.client.meta.events.unregister(f"before-send.s3.{operation}", fail)


def data_objects(s3: Any) -> list[str]:
    return [key for key in all_keys(s3) if key.startswith("data/")]


# 1. A commit never deletes the data its own entry names ------------------------------


def test_a_lost_answer_to_the_entry_write_keeps_the_data(
    repo: Any, storage: S3BlobStorage, s3: Any
) -> None:
    data = os.urandom(2 * PART)
    writer = repo.create()
    writer.write(data)
    lost = lose_answers(storage, "PutObject", "/blobs/")
    writer.commit(desc(data))
    assert lost  # the entry was written, then written again and refused (412)
    assert repo.get(desc(data).digest) == data
    assert len(data_objects(s3)) == 1


@pytest.mark.parametrize(
    ("size", "sealed"),
    # Only a commit with a tail to send seals; the others had every byte in place
    # (saved as the entry, or in whole parts), and their state as it was finishes them.
    [(PART - 1, False), (2 * PART, False), (2 * PART + 7, True)],
)
def test_a_commit_that_failed_after_its_entry_is_finished_by_the_next(
    repo: Any, storage: S3BlobStorage, s3: Any, size: int, sealed: bool
) -> None:
    data = os.urandom(size)
    writer = repo.create()
    writer.write(data)
    writer.close()
    stop = fail_always(storage, "PutObject", "/_layers/")  # the link
    with pytest.raises(StorageError):
        repo.resume(writer.id).commit(desc(data))
    stop()
    resumed = repo.resume(writer.id)
    if sealed:
        assert resumed.committing == desc(data).digest  # every byte is durable
        with pytest.raises(BlobUploadClosed):
            resumed.write(b"more")  # a sealed upload takes no more bytes
        resumed = repo.resume(writer.id)
    else:
        assert resumed.committing == "" and resumed.size == size
    assert resumed.commit(desc(data)).digest == desc(data).digest
    assert repo.get(desc(data).digest) == data
    assert len(data_objects(s3)) == (0 if size < PART else 1)
    assert not [k for k in all_keys(s3) if k.startswith("_uploads/")]
    assert not open_uploads(s3)
    with pytest.raises(BlobUploadUnknown):
        repo.resume(writer.id)


@pytest.mark.parametrize("size", [2 * PART, 2 * PART + 7])
def test_a_repush_whose_link_failed_after_its_data_was_dropped_is_finished(
    server_env: dict[str, str], size: int
) -> None:
    """The entry named an earlier upload's object, so the commit deleted its own data;
    then the link failed. The retry finds its upload completed and its data gone, and
    finishes from the entry (caught by the randomized fault run). A moto server: in
    process, moto raises KeyError on completing a completed upload; served, a 500."""
    storage = S3BlobStorage.from_env({**server_env, "S3BLOBS_CACHE_SIZE": "0"})
    repo = storage.repository("library/app")
    data = os.urandom(size)
    repo.put("x/y", data)
    writer = repo.create()
    writer.write(data)
    writer.close()
    stop = fail_always(storage, "PutObject", "/_layers/")
    with pytest.raises(StorageError):
        repo.resume(writer.id).commit(desc(data))
    stop()
    listing = storage.client.list_objects_v2(Bucket=storage.config.bucket)
    keys = [item["Key"] for item in listing.get("Contents", ())]
    assert len([key for key in keys if key.startswith("data/")]) == 1  # the earlier upload's
    assert repo.resume(writer.id).commit(desc(data)).digest == desc(data).digest
    assert repo.get(desc(data).digest) == data
    with pytest.raises(BlobUploadUnknown):
        repo.resume(writer.id)  # finished: its state is gone


def test_a_sealed_upload_finishes_only_as_the_digest_it_was_sealed_for(
    repo: Any, storage: S3BlobStorage
) -> None:
    data = os.urandom(PART + 1)
    writer = repo.create()
    writer.write(data)
    stop = fail_always(storage, "PutObject", "/_layers/")
    with pytest.raises(StorageError):
        writer.commit(desc(data))
    stop()
    with pytest.raises(BlobInvalidDigest, match="being committed"):
        repo.resume(writer.id).commit(desc(b"x" * (PART + 1)))
    assert repo.get(repo.resume(writer.id).commit(desc(data)).digest) == data


def test_a_completion_whose_answer_was_lost_is_recognised_by_its_etag(
    repo: Any, storage: S3BlobStorage, s3: Any
) -> None:
    data = os.urandom(PART + 1)
    writer = repo.create()
    writer.write(data)
    # (moto, in-process, carries out a CompleteMultipartUpload even when the client
    # is answered 500: the upload is complete, the client never heard.)
    stop = fail_always(storage, "CompleteMultipartUpload")
    assert writer.commit(desc(data)).size == len(data)
    stop()
    assert repo.get(desc(data).digest) == data
    assert len(data_objects(s3)) == 1


def test_concurrent_commits_of_one_upload_all_succeed(server_env: dict[str, str]) -> None:
    # A moto server: in-process moto breaks (ValueError) when threads complete one
    # upload at once; served, that is a 500, as a real store's transient error would be.
    storage = S3BlobStorage.from_env({**server_env, "S3BLOBS_CACHE_SIZE": "0"})
    repo = storage.repository("library/app")
    data = os.urandom(2 * PART + 3)
    writer = repo.create()
    writer.write(data)
    writer.close()
    results: list[Any] = []

    def commit() -> None:
        for _ in range(3):  # as a client retries a PUT that failed
            try:
                results.append(repo.resume(writer.id).commit(desc(data)).digest)
                return
            except BlobUploadUnknown:  # another finished it: the blob is there
                results.append(repo.stat(desc(data).digest).digest)
                return
            except StorageError:
                continue

    threads = [threading.Thread(target=commit) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [desc(data).digest] * 3
    assert repo.get(desc(data).digest) == data
    keys = [
        o["Key"] for o in storage.client.list_objects_v2(Bucket=storage.config.bucket)["Contents"]
    ]
    assert len([k for k in keys if k.startswith("data/")]) == 1
    assert not [k for k in keys if k.startswith("_uploads/")]


def test_the_loser_of_two_uploads_of_one_content_drops_only_its_own_data(
    repo: Any, s3: Any
) -> None:
    data = os.urandom(PART + 5)
    first, second = repo.create(), repo.create()
    first.write(data)
    second.write(data)
    first.commit(desc(data))
    second.commit(desc(data))
    assert repo.get(desc(data).digest) == data
    assert len(data_objects(s3)) == 1


# 3. Conditional state writes recognise their own success -----------------------------


def test_a_lost_answer_to_the_first_state_write(repo: Any, storage: S3BlobStorage) -> None:
    lost = lose_answers(storage, "PutObject", "/_uploads/")
    writer = repo.create()  # IfNoneMatch, written, retried, refused: yet it is ours
    assert lost
    writer.write(b"abc")
    assert writer.commit(desc(b"abc")).size == 3


def test_a_lost_answer_to_a_close(repo: Any, storage: S3BlobStorage, s3: Any) -> None:
    data = os.urandom(PART + 100)
    writer = repo.create()
    writer.write(data[:100])
    writer.close()
    resumed = repo.resume(writer.id)
    resumed.write(data[100:])
    lost = lose_answers(storage, "PutObject", "/state")
    resumed.close()
    assert lost
    assert repo.resume(writer.id).size == len(data)
    assert repo.get(repo.resume(writer.id).commit(desc(data)).digest) == data
    assert not [k for k in all_keys(s3) if k.startswith("_uploads/")]


def test_a_close_that_lost_keeps_its_piece_for_gc(repo: Any, s3: Any) -> None:
    """The loser cannot tell whether its own write landed (its answer may have been
    lost, and a later state may name the piece): it deletes nothing, and the piece no
    state names is garbage for gc's upload sweep."""
    writer = repo.create()
    writer.write(b"base-")  # a whole blob: its close saves it as an entry, not a piece
    writer.close()
    first, second = repo.resume(writer.id), repo.resume(writer.id)
    first.write(b"first")
    second.write(b"other")
    first.close()
    with pytest.raises(BlobUploadConflict, match="another request"):
        second.close()
    pieces = [k for k in all_keys(s3) if "/piece." in k]
    assert len(pieces) == 2
    assert repo.get(repo.resume(writer.id).commit(desc(b"base-first")).digest) == b"base-first"
    assert len([k for k in all_keys(s3) if "/piece." in k]) == 1  # the loser's, for gc


# 6. Memory per upload is what it received, and the process has a budget ---------------


def test_a_writer_holds_what_it_received_not_a_part(repo: Any, storage: S3BlobStorage) -> None:
    budget = storage._uploads.budget
    writers = [repo.create() for _ in range(3)]
    for writer in writers:
        writer.write(os.urandom(1000))
    assert budget.used == 3 * MiB  # a MiB each, not a 5 MiB part each
    writers[0].write(os.urandom(MiB))
    assert budget.used == 4 * MiB
    for writer in writers:
        writer.close()
    assert budget.used == 0


def test_past_the_budget_a_write_is_refused_and_the_upload_survives(
    s3: Any, storage: S3BlobStorage
) -> None:
    from s3blobs import Config

    config = Config(bucket=storage.config.bucket, part_size=PART, max_buffer=PART, cache_size=0)
    tight = S3BlobStorage(config).repository("library/app")
    first, second = tight.create(), tight.create()
    first.write(b"a" * (PART - MiB))
    first.close()  # the first MiBs back in the budget
    first = tight.resume(first.id)
    first.write(b"b" * (MiB // 2))
    second.write(os.urandom(4 * MiB))
    with pytest.raises(UploadBufferFull):
        second.write(os.urandom(MiB))
    with pytest.raises(BlobUploadClosed):
        second.write(b"x")  # broken: resume from its last close
    first.write(b"c" * (MiB // 2))  # the budget came back when second broke
    data = b"a" * (PART - MiB) + b"b" * (MiB // 2) + b"c" * (MiB // 2)
    assert tight.get(first.commit(desc(data)).digest) == data


def test_stale_state_fields_are_ignored(repo: Any, storage: S3BlobStorage, s3: Any) -> None:
    """A state written by the first releases (with a claim) still resumes."""
    import json

    writer = repo.create()
    writer.write(b"abc")
    writer.close()
    key = f"_uploads/{writer.id}/state"
    state = json.loads(s3.get_object(Bucket=storage.config.bucket, Key=key)["Body"].read())
    state.update(claim="0" * 32, claimed_at=1.0)
    s3.put_object(Bucket=storage.config.bucket, Key=key, Body=json.dumps(state).encode())
    assert repo.resume(writer.id).commit(desc(b"abc")).size == 3


def test_commit_requests_for_a_skopeo_style_push(repo: Any, storage: S3BlobStorage) -> None:
    """The seal is one PutObject; the rest of the commit is as before."""
    data = os.urandom(PART + 100)
    writer = repo.create()
    writer.write(data)
    writer.close()
    calls = S3Calls(storage.client)
    repo.resume(writer.id).commit(desc(data))
    assert calls.by_op() == {
        "GetObject": 2,  # the state, the piece
        "UploadPart": 1,  # the tail
        "PutObject": 3,  # the sealed state, the entry, the link
        "CompleteMultipartUpload": 1,
        "DeleteObjects": 1,
    }
