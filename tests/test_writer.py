"""The resumable multipart writer: contract, resume, parts, commit, cancel, faults."""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import s3blobs.writer
from conftest import BUCKET, PART, S3Calls, all_keys, open_uploads, s3_error
from s3blobs import (
    BlobInvalidDigest,
    BlobInvalidLength,
    BlobTooLarge,
    BlobUnknown,
    BlobUploadClosed,
    BlobUploadConflict,
    BlobUploadUnknown,
    Descriptor,
    S3BlobStorage,
    StorageError,
)
from s3blobs.config import MiB

KiB = 1024


def desc(data: bytes, algorithm: str = "sha256", media_type: str = "application/x") -> Descriptor:
    return Descriptor(
        media_type, len(data), f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
    )


def written_then_resumed(repo: Any, data: bytes) -> Any:
    """A writer that took ``data``, was closed, and is resumed: as a registry's PUT sees it."""
    writer = repo.create()
    writer.write(data)
    writer.close()
    return repo.resume(writer.id)


def upload_keys(s3: Any) -> list[str]:
    return [k for k in all_keys(s3) if k.startswith("_uploads/")]


def assert_clean(s3: Any) -> None:
    assert open_uploads(s3) == []
    assert upload_keys(s3) == []


# The contract ----------------------------------------------------------------


def test_write_close_resume_commit(repo: Any, s3: Any) -> None:
    before = datetime.now(timezone.utc)
    writer = repo.create()
    assert re.fullmatch(r"[A-Za-z0-9_-]+", writer.id)
    assert before.replace(microsecond=0) <= writer.started_at <= datetime.now(timezone.utc)
    assert writer.write(b"hello ") == 6
    assert writer.size == 6
    writer.close()
    again = repo.resume(writer.id)
    assert again.size == 6 and again.id == writer.id and again.started_at == writer.started_at
    assert again.read_from(io.BytesIO(b"world")) == 5
    descriptor = again.commit(desc(b"hello world"))
    assert descriptor == desc(b"hello world")
    assert repo.get(descriptor.digest) == b"hello world"
    assert_clean(s3)


def test_writer_id_is_the_s3_upload_id(repo: Any, s3: Any) -> None:
    writer = repo.create()
    [upload] = open_uploads(s3)
    assert s3blobs.uploads.upload_id_of(writer.id) == upload["UploadId"]
    assert upload["Key"].startswith("data/")
    writer.cancel()


def test_context_manager_closes_or_cancels(repo: Any, s3: Any) -> None:
    with repo.create() as writer:
        writer.write(b"kept")
    assert repo.resume(writer.id).size == 4  # left normally: closed, resumable

    with pytest.raises(RuntimeError), repo.create() as doomed:
        doomed.write(b"lost")
        raise RuntimeError("client went away")
    with pytest.raises(BlobUploadUnknown):
        repo.resume(doomed.id)  # left by an exception: cancelled
    repo.resume(writer.id).cancel()
    assert_clean(s3)


# Resume ------------------------------------------------------------------------


def test_resume_costs_one_request_however_many_uploads_are_open(
    repo: Any, storage: S3BlobStorage
) -> None:
    target = repo.create()
    target.close()
    calls = S3Calls(storage.client)
    repo.resume(target.id)
    alone = list(calls.ops)
    others = [repo.create() for _ in range(50)]
    calls.reset()
    repo.resume(target.id)
    assert calls.ops == alone == ["GetObject"]
    for other in others:
        other.cancel()


@pytest.mark.parametrize(
    "garbage",
    ["", "../x", "a" * 5000, "a/b", "ü", "%2e%2e", "x y"],
    ids=["empty", "dotdot", "5000-chars", "slash", "unicode", "escaped", "space"],
)
def test_garbage_ids_are_unknown_without_s3(repo: Any, calls: S3Calls, garbage: str) -> None:
    with pytest.raises(BlobUploadUnknown):
        repo.resume(garbage)
    assert calls.count == 0


def test_wellformed_but_unknown_id(repo: Any) -> None:
    with pytest.raises(BlobUploadUnknown):
        repo.resume("bm8tc3VjaC11cGxvYWQ")


def test_id_from_another_repository_is_unknown(storage: S3BlobStorage) -> None:
    writer = storage.repository("a").create()
    writer.close()
    with pytest.raises(BlobUploadUnknown):
        storage.repository("b").resume(writer.id)
    storage.repository("a").resume(writer.id).cancel()


def test_finished_uploads_are_unknown(repo: Any) -> None:
    committed = repo.create()
    committed.write(b"x")
    committed.commit(desc(b"x"))
    cancelled = repo.create()
    cancelled.cancel()
    for writer in (committed, cancelled):
        with pytest.raises(BlobUploadUnknown):
            repo.resume(writer.id)


# Hashing -----------------------------------------------------------------------


def test_sha512_declared_up_front(repo: Any) -> None:
    data = os.urandom(PART + 100)
    writer = repo.create(digest_algorithm="sha512")
    assert writer.algorithm == "sha512"
    writer.write(data[:100])
    writer.close()
    writer = repo.resume(writer.id)
    writer.write(data[100:])
    descriptor = writer.commit(desc(data, "sha512"))
    assert descriptor.digest.startswith("sha512:")
    assert repo.get(descriptor.digest) == data


@pytest.mark.parametrize("size", [10, PART + 10])
def test_undeclared_algorithm_reads_back_once(repo: Any, storage: S3BlobStorage, size: int) -> None:
    data = os.urandom(size)
    writer = repo.create()  # computes sha256
    writer.write(data)
    descriptor = writer.commit(desc(data, "sha512"))
    assert repo.get(descriptor.digest) == data


def test_undeclared_algorithm_mismatch_stores_nothing(repo: Any, s3: Any) -> None:
    data = os.urandom(PART + 10)
    writer = repo.create()
    writer.write(data)
    with pytest.raises(BlobInvalidDigest):
        writer.commit(Descriptor("application/x", len(data), desc(b"other", "sha512").digest))
    assert not [k for k in all_keys(s3) if k.startswith(("blobs/", "data/"))]
    assert_clean(s3)


def test_commit_does_not_read_back(repo: Any, storage: S3BlobStorage) -> None:
    data = os.urandom(2 * PART + 7)
    writer = written_then_resumed(repo, data)
    calls = S3Calls(storage.client)
    writer.commit(desc(data))
    gets = [op for op in calls.ops if op == "GetObject"]
    assert len(gets) == 1  # the saved tail piece only, never the blob


# Parts ---------------------------------------------------------------------------


def test_every_part_but_the_last_is_exactly_part_size(repo: Any, s3: Any) -> None:
    data = os.urandom(3 * PART + 12345)
    writer = repo.create()
    for start in range(0, len(data), 3 * MiB + 1):  # chunks that straddle parts
        writer.write(data[start : start + 3 * MiB + 1])
        writer.close()
        writer = repo.resume(writer.id)
    state = writer._stored.state
    parts = s3.list_parts(Bucket=BUCKET, Key=state.data_key, UploadId=state.upload_id)["Parts"]
    assert [p["Size"] for p in parts] == [PART] * 3
    assert repo.get(writer.commit(desc(data)).digest) == data


def test_nine_700k_chunks_with_close_resume_between(repo: Any, storage: S3BlobStorage) -> None:
    data = os.urandom(9 * 700 * KiB)
    writer = repo.create()
    calls = S3Calls(storage.client)
    for i in range(9):
        writer = repo.resume(writer.id)
        writer.write(data[i * 700 * KiB : (i + 1) * 700 * KiB])
        writer.close()
    writer = repo.resume(writer.id)
    assert repo.get(writer.commit(desc(data)).digest) == data
    # append-only pieces: each byte went to S3 at most twice (piece, then part)
    assert calls.sent <= 2 * len(data) + 64 * KiB


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1])
def test_boundary_sizes(repo: Any, size: int, s3: Any) -> None:
    data = os.urandom(size)
    descriptor = written_then_resumed(repo, data).commit(desc(data))
    assert descriptor.size == size
    assert repo.get(descriptor.digest) == data
    assert_clean(s3)


def test_too_many_parts_is_a_clear_error(repo: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3blobs.writer, "MAX_PARTS", 2)
    writer = repo.create()
    writer.write(os.urandom(PART))
    with pytest.raises(BlobTooLarge, match="S3BLOBS_PART_SIZE"):
        writer.write(os.urandom(PART + 1))
    assert writer.size == PART  # nothing of the refused write was taken
    writer.write(os.urandom(PART))
    writer.cancel()


def test_parts_upload_in_background_within_the_concurrency_bound(
    repo: Any, storage: S3BlobStorage
) -> None:
    lock = threading.Lock()
    running, peak, threads = [0], [0], set()

    def start(**_: Any) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            threads.add(threading.current_thread().name)

    def end(**_: Any) -> None:
        with lock:
            running[0] -= 1

    storage.client.meta.events.register("before-call.s3.UploadPart", start)
    storage.client.meta.events.register("after-call.s3.UploadPart", end)
    data = os.urandom(6 * PART)
    writer = repo.create()
    writer.write(data)
    writer.commit(desc(data))
    assert all(name.startswith("s3blobs-part") for name in threads)
    assert 1 <= peak[0] <= storage.config.max_concurrency


# Commit --------------------------------------------------------------------------


def test_length_and_digest_mismatch_store_nothing(repo: Any, s3: Any) -> None:
    data = b"the real content"
    writer = repo.create()
    writer.write(data)
    with pytest.raises(BlobInvalidLength):
        writer.commit(Descriptor("a/b", len(data) + 1, desc(data).digest))
    with pytest.raises(BlobInvalidDigest):
        writer.commit(desc(b"something else entirely"[: len(data)]))
    claimed = desc(b"something else entirely"[: len(data)]).digest
    for digest in (claimed, desc(data).digest):
        with pytest.raises(BlobUnknown):
            repo.stat(digest)
    assert not [k for k in all_keys(s3) if k.startswith(("blobs/", "data/"))]
    # the upload is still open: the right descriptor commits it
    assert writer.commit(desc(data)).size == len(data)


def test_small_blob_commit_is_one_put_of_the_entry(repo: Any, storage: S3BlobStorage) -> None:
    writer = repo.create()
    writer.write(b"small")
    calls = S3Calls(storage.client)
    writer.commit(desc(b"small"))
    assert calls.by_op() == {
        "PutObject": 3,  # the entry (with its bytes), the sealed state, and the link
        "AbortMultipartUpload": 1,
        "DeleteObjects": 1,  # the upload's state
    }


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 3 * PART + 5])
def test_commit_costs_at_most_eight_requests_and_never_copies(
    repo: Any, storage: S3BlobStorage, size: int
) -> None:
    data = os.urandom(size)
    writer = written_then_resumed(repo, data)
    calls = S3Calls(storage.client)
    writer.commit(desc(data))
    assert calls.count <= 8, calls.ops
    assert not {"CopyObject", "UploadPartCopy"} & set(calls.ops)


def test_large_commit_writes_entry_conditionally(repo: Any, storage: S3BlobStorage) -> None:
    data = os.urandom(PART + 1)
    writer = repo.create()
    writer.write(data)
    entries: list[dict[str, Any]] = []
    storage.client.meta.events.register(
        "provide-client-params.s3.PutObject",
        lambda params, **_: (
            entries.append(dict(params)) if params["Key"].startswith("blobs/") else None
        ),
    )
    writer.commit(desc(data))
    [entry] = entries
    assert entry["IfNoneMatch"] == "*" and entry["Body"] == b""


def test_commit_of_existing_blob_drops_the_duplicate(repo: Any, s3: Any) -> None:
    data = os.urandom(PART + 3)
    first, second = repo.create(), repo.create()
    first.write(data)
    second.write(data)
    one = first.commit(desc(data, media_type="application/first"))
    two = second.commit(desc(data, media_type="application/second"))
    assert one == two and two.media_type == "application/first"
    assert len([k for k in all_keys(s3) if k.startswith("data/")]) == 1
    assert repo.get(one.digest) == data
    assert_clean(s3)


def test_commit_and_cancel_are_idempotent(repo: Any, s3: Any) -> None:
    writer = repo.create()
    writer.write(b"abc")
    descriptor = writer.commit(desc(b"abc"))
    assert writer.commit(desc(b"abc")) == descriptor
    writer.cancel()  # a no-op after commit
    assert repo.get(descriptor.digest) == b"abc"
    with pytest.raises(BlobUploadClosed):
        writer.write(b"more")

    cancelled = repo.create()
    cancelled.write(os.urandom(PART + 1))
    cancelled.cancel()
    cancelled.cancel()
    with pytest.raises(BlobUploadClosed):
        cancelled.write(b"more")
    with pytest.raises(BlobUploadClosed):
        cancelled.commit(desc(b""))
    assert_clean(s3)


def test_cancel_removes_everything(repo: Any, s3: Any) -> None:
    writer = repo.create()
    writer.write(os.urandom(2 * PART + 10))
    writer.close()
    writer = repo.resume(writer.id)
    writer.write(b"tail")
    writer.close()
    assert upload_keys(s3)
    repo.resume(writer.id).cancel()
    assert_clean(s3)
    assert not [k for k in all_keys(s3) if k.startswith(("blobs/", "data/"))]


def test_closed_writer_refuses_writes(repo: Any) -> None:
    writer = repo.create()
    writer.close()
    with pytest.raises(BlobUploadClosed, match="resume"):
        writer.write(b"x")
    repo.resume(writer.id).cancel()


# Two writers, faults ------------------------------------------------------------------


def test_two_writers_on_one_id_only_one_wins(repo: Any) -> None:
    writer = repo.create()
    writer.write(b"base-")
    writer.close()
    first, second = repo.resume(writer.id), repo.resume(writer.id)
    first.write(b"first")
    second.write(b"second")
    first.close()
    with pytest.raises(BlobUploadConflict):
        second.close()
    survivor = repo.resume(writer.id)
    assert survivor.size == len(b"base-first")
    assert repo.get(survivor.commit(desc(b"base-first")).digest) == b"base-first"


def test_a_stray_writer_that_overwrote_a_part_is_caught_at_commit(repo: Any) -> None:
    writer = repo.create()
    writer.close()
    data, other = os.urandom(PART + 10), os.urandom(PART + 10)
    first, second = repo.resume(writer.id), repo.resume(writer.id)
    first.write(data)
    first.close()  # acknowledged: the state names first's part 1
    second.write(other)  # no lease stops it: part 1 now holds other bytes
    with pytest.raises(BlobUploadConflict):
        second.close()  # second's bytes are not acknowledged
    # S3 refuses a part whose ETag differs from the one the state recorded, so the
    # commit fails clearly instead of storing a blob unlike its digest.
    with pytest.raises(BlobUploadConflict, match="overwritten"):
        repo.resume(writer.id).commit(desc(data))
    with pytest.raises(BlobUnknown):
        repo.stat(desc(data).digest)


def test_a_duplicate_writer_with_the_same_bytes_carries_on(repo: Any) -> None:
    """A client's retried PATCH carries the bytes it sent before: both answers agree."""
    writer = repo.create()
    writer.close()
    data = os.urandom(PART + 10)
    first, second = repo.resume(writer.id), repo.resume(writer.id)
    first.write(data)
    first.close()
    second.write(data)  # the same part again, with the same bytes: the same ETag
    second.close()  # finds first's state holding the same bytes, and carries on
    assert repo.resume(writer.id).size == len(data)
    assert repo.get(repo.resume(writer.id).commit(desc(data)).digest) == data


def test_s3_failure_mid_upload_keeps_the_upload_resumable(
    repo: Any, storage: S3BlobStorage
) -> None:
    data = os.urandom(3 * PART)
    writer = repo.create()
    writer.write(data[: PART + 10])
    writer.close()

    failures = [0]

    def fail(**_: Any) -> Any:
        failures[0] += 1
        return s3_error(500, "InternalError")

    storage.client.meta.events.register_first("before-send.s3.UploadPart", fail)
    broken = repo.resume(writer.id)
    with pytest.raises(StorageError):
        broken.write(data[PART + 10 :])
        broken.close()
    assert failures[0] >= 5  # botocore retried before giving up
    with pytest.raises(BlobUploadClosed):
        broken.write(b"x")
    storage.client.meta.events.unregister("before-send.s3.UploadPart", fail)

    resumed = repo.resume(writer.id)
    assert resumed.size == PART + 10
    resumed.write(data[PART + 10 :])
    assert repo.get(resumed.commit(desc(data)).digest) == data


def test_one_transient_part_failure_is_retried(repo: Any, storage: S3BlobStorage) -> None:
    failed: list[int] = []

    def fail_once(**_: Any) -> Any:
        if failed:
            return None
        failed.append(1)
        return s3_error(503, "SlowDown")

    storage.client.meta.events.register_first("before-send.s3.UploadPart", fail_once)
    data = os.urandom(2 * PART + 1)
    writer = repo.create()
    writer.write(data)
    assert repo.get(writer.commit(desc(data)).digest) == data
    assert failed == [1]


# put() of large data ----------------------------------------------------------------


def test_put_larger_than_a_part_uses_multipart(repo: Any, storage: S3BlobStorage, s3: Any) -> None:
    data = os.urandom(2 * PART + 3)
    calls = S3Calls(storage.client)
    descriptor = repo.put("application/x", data)
    assert calls.by_op()["UploadPart"] == 3
    assert "CompleteMultipartUpload" in calls.ops
    assert repo.get(descriptor.digest) == data
    assert_clean(s3)


# The property ---------------------------------------------------------------------------


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(
            st.one_of(st.integers(0, 64 * KiB), st.integers(PART - 10, PART + 10)),
            st.booleans(),
        ),
        max_size=5,
    ),
    algorithm=st.sampled_from(["sha256", "sha512"]),
)
def test_any_writes_and_resumes_give_the_bytes_and_digest(
    repo: Any, steps: list[tuple[int, bool]], algorithm: str
) -> None:
    written = bytearray()
    writer = repo.create(digest_algorithm=algorithm)
    for size, resume_after in steps:
        chunk = os.urandom(size)
        writer.write(chunk)
        written += chunk
        if resume_after:
            writer.close()
            writer = repo.resume(writer.id)
    descriptor = writer.commit(desc(bytes(written), algorithm))
    assert descriptor.size == len(written)
    assert repo.get(descriptor.digest) == bytes(written)
