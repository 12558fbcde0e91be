"""s3blobs gc: data objects no entry names are swept after the grace period, others never."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import boto3

from conftest import BUCKET, PART, S3Calls, all_keys
from s3blobs import Descriptor, S3BlobStorage


def data_keys(s3: Any) -> set[str]:
    return {k for k in all_keys(s3) if k.startswith("data/")}


def test_sweeps_only_unreferenced_old_data(storage: S3BlobStorage, repo: Any, s3: Any) -> None:
    kept = os.urandom(PART + 1)
    digest = repo.put("a/b", kept).digest
    repo.put("a/b", b"")  # the empty blob: an empty entry that names no data
    [in_use] = data_keys(s3)
    # A commit that died between completing its upload and writing its entry:
    orphan = storage.paths.new_data_key()
    s3.put_object(Bucket=BUCKET, Key=orphan, Body=b"unreachable bytes")
    assert storage.sweep_orphan_data(grace=timedelta(hours=1)) == []  # too young yet
    calls = S3Calls(storage.client)
    assert storage.sweep_orphan_data(grace=timedelta(0), dry_run=True) == [orphan]
    assert "DeleteObjects" not in calls.ops and orphan in data_keys(s3)
    assert storage.sweep_orphan_data(grace=timedelta(0)) == [orphan]
    assert data_keys(s3) == {in_use}
    assert repo.get(digest) == kept


def test_gc_command(server_env: dict[str, str]) -> None:
    storage = S3BlobStorage.from_env(server_env)
    repo = storage.repository("gc/app")
    writer = repo.create()
    data = os.urandom(PART + 5)
    writer.write(data)
    writer.commit(Descriptor("a/b", len(data), "sha256:" + hashlib.sha256(data).hexdigest()))
    raw = boto3.client(
        "s3", endpoint_url=server_env["S3BLOBS_ENDPOINT_URL"], region_name="us-east-1"
    )
    orphan = storage.paths.new_data_key()
    raw.put_object(Bucket=server_env["S3BLOBS_BUCKET"], Key=orphan, Body=b"x")
    env = {**os.environ, **server_env}
    command = [sys.executable, "-m", "s3blobs", "gc", "--grace", "0"]
    dry = subprocess.run(
        [*command, "--dry-run"], env=env, capture_output=True, text=True, timeout=60
    )
    assert (
        dry.returncode == 0
        and orphan in dry.stdout
        and "1 orphaned data objects found" in dry.stdout
    )
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "1 orphaned data objects deleted" in done.stdout
    listed = raw.list_objects_v2(Bucket=server_env["S3BLOBS_BUCKET"], Prefix="data/")["Contents"]
    assert [o["Key"] for o in listed] != [orphan] and len(listed) == 1
    assert repo.get(writer.computed_digest()) == data
