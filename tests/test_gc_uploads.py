"""gc's upload sweep: uploads untouched for --uploads-older-than lose their objects and
their multipart upload, whatever their state holds; multipart uploads with no state are
aborted by the age their key carries; younger uploads are left alone."""

from __future__ import annotations

import secrets
import time
from typing import Any

from conftest import BUCKET, open_uploads
from gcsupport import digest_of, gc_config
from s3blobs import Descriptor, S3BlobStorage
from s3blobs.uploads import upload_id_of, writer_id


def upload_keys(s3: Any) -> set[str]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="_uploads/").get("Contents", [])
    return {item["Key"] for item in listed}


def test_stale_uploads_and_lost_multipart_uploads_go(s3: Any) -> None:
    storage = S3BlobStorage(gc_config(BUCKET))
    repo = storage.repository("team/app")
    stale = repo.create()
    stale.write(b"the first chunk, then silence")
    stale.close()  # a state and a piece
    # A state this version cannot read: judged by its age alone.
    unreadable_key = storage.paths.new_data_key()
    unreadable = s3.create_multipart_upload(Bucket=BUCKET, Key=unreadable_key)["UploadId"]
    s3.put_object(
        Bucket=BUCKET, Key=storage.paths.upload_state(writer_id(unreadable)), Body=b"{not json"
    )
    # CreateMultipartUpload whose answer was lost, 30 days ago (the key tells) and now.
    month_ago = int((time.time() - 30 * 86400) * 1000)
    lost_key = f"data/{month_ago:012x}-{secrets.token_hex(10)}"
    lost = s3.create_multipart_upload(Bucket=BUCKET, Key=lost_key)["UploadId"]
    time.sleep(2.2)
    just_lost = s3.create_multipart_upload(Bucket=BUCKET, Key=storage.paths.new_data_key())
    active = repo.create()
    active.write(b"still being pushed")
    active.close()
    before = upload_keys(s3)

    dry = storage.collect_garbage(uploads_older_than=1.0, settle=0, progress=False, dry_run=True)
    assert upload_keys(s3) == before and len(open_uploads(s3)) == 5
    report = storage.collect_garbage(uploads_older_than=1.0, settle=0, progress=False)

    assert dry.deleted == report.deleted
    assert report.deleted["uploads"].count == 2  # the stale writer, the unreadable state
    assert report.deleted["multipart_uploads"].count == 3
    assert upload_keys(s3) == {
        key for key in before if key.startswith(f"{storage.paths.uploads_root}{active.id}/")
    }
    left = {upload["UploadId"] for upload in open_uploads(s3)}
    assert left == {just_lost["UploadId"], upload_id_of(active.id)}
    assert unreadable not in left and lost not in left
    # The young upload carries on.
    writer = repo.resume(active.id)
    writer.write(b", and done")
    data = b"still being pushed, and done"
    assert writer.commit(Descriptor("x/y", len(data), digest_of(data))).digest == digest_of(data)
    assert repo.get(digest_of(data)) == data


def test_an_open_upload_keeps_the_entry_it_saved_its_bytes_in(s3: Any) -> None:
    storage = S3BlobStorage(gc_config(BUCKET))
    repo = storage.repository("team/app")
    writer = repo.create()
    data = b"a whole short blob, saved by close() as its own entry"
    writer.write(data)
    writer.close()  # nothing links that entry until the commit
    time.sleep(2.2)

    report = storage.collect_garbage(settle=0, progress=False)

    assert report.deleted["blobs"].count == 0
    resumed = repo.resume(writer.id)
    assert resumed.commit(Descriptor("x/y", len(data), digest_of(data))).digest == digest_of(data)
    assert repo.get(digest_of(data)) == data
