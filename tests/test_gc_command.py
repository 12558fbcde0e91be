"""``s3blobs gc`` as a command on a moto server: the --json report, exit codes, and a
grace shorter than the cache TTL refused with the reason."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from typing import Any

import boto3
import pytest
from prometheus_client import REGISTRY

from gcsupport import Registry
from s3blobs import S3BlobStorage
from s3blobs.cli import main
from s3blobs.fence import SweepFence

REPORT_KEYS = {
    "dry_run",
    "grace_seconds",
    "link_grace_seconds",
    "uploads_older_than_seconds",
    "delete_untagged",
    "listed",
    "kept",
    "deleted",
    "spared",
    "requests",
    "requests_total",
    "phases",
    "seconds",
    "warnings",
}
DELETED = {
    "blobs",
    "links",
    "manifests",
    "referrers",
    "orphaned_data",
    "uploads",
    "multipart_uploads",
}


def gc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "s3blobs", "gc", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def in_process(
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> tuple[int, str, str]:
    """The command in this process (quicker than a new interpreter): code, out, err."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        code = main(["gc", *args])
    except SystemExit as exc:  # argparse refusing the usage
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_refused_grace_and_bad_usage(
    server_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**server_env, "S3BLOBS_CACHE_TTL": "60"}
    code, _, err = in_process(env, monkeypatch, capsys, "--grace", "30s")
    assert code == 2
    assert "S3BLOBS_CACHE_TTL=60s" in err and "30s is shorter" in err
    assert in_process(env, monkeypatch, capsys, "--grace", "5 parsecs")[0] == 2
    assert in_process(env, monkeypatch, capsys, "--workers", "0")[0] == 2
    code, _, err = in_process({**env, "S3BLOBS_GC_GRACE": "10s"}, monkeypatch, capsys)
    assert code == 2 and "S3BLOBS_GC_GRACE" in err  # below the cache TTL too
    code, out, _ = in_process({**env, "S3BLOBS_GC_GRACE": "1h"}, monkeypatch, capsys, "--dry-run")
    assert code == 0 and "s3blobs: kept 0 manifests and 0 blobs" in out  # an empty bucket


def test_json_report_exit_codes_and_a_run(
    server_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**server_env, "S3BLOBS_CACHE_TTL": "0.5", "S3BLOBS_GC_GRACE": "1s"}
    bucket = env["S3BLOBS_BUCKET"]
    s3: Any = boto3.client("s3", endpoint_url=env["S3BLOBS_ENDPOINT_URL"], region_name="us-east-1")
    storage = S3BlobStorage.from_env(env)
    unused = Registry(storage).blob("team/app", b"pushed and never used")
    orphan = storage.paths.new_data_key()
    s3.put_object(Bucket=bucket, Key=orphan, Body=b"no entry names this")
    lost = f"data/{int((time.time() - 30 * 86400) * 1000):012x}-{secrets.token_hex(10)}"
    s3.create_multipart_upload(Bucket=bucket, Key=lost)
    time.sleep(2.5)

    args = ("--dry-run", "--json", "--grace", "1s", "--uploads-older-than", "7d")
    runs = REGISTRY.get_sample_value("s3blobs_gc_runs_total", {"outcome": "dry_run"}) or 0
    code, out, err = in_process(env, monkeypatch, capsys, *args)
    assert REGISTRY.get_sample_value("s3blobs_gc_runs_total", {"outcome": "dry_run"}) == runs + 1
    assert code == 0, err
    report = json.loads(out)
    assert set(report) == REPORT_KEYS and set(report["deleted"]) == DELETED
    assert report["dry_run"] is True and report["grace_seconds"] == 1.0
    assert report["link_grace_seconds"] == 1.5  # plus half of S3BLOBS_GC_GRACE
    assert report["deleted"]["blobs"] == {"count": 1, "bytes": len(b"pushed and never used")}
    assert report["deleted"]["links"]["count"] == 1
    assert report["deleted"]["orphaned_data"] == {"count": 1, "bytes": 19}
    assert report["deleted"]["multipart_uploads"]["count"] == 1
    assert report["listed"]["entries"] == 1 and report["listed"]["links"] == 1
    assert report["requests"]["ListObjectsV2"] >= 4 and "DeleteObjects" not in report["requests"]
    assert report["requests_total"] == sum(report["requests"].values())

    # Another gc holds the fence: this one stops before deleting anything (exit 3).
    other = SweepFence(s3, bucket, storage.paths)
    lease = other.publish([unused], lambda function, items: [function(i) for i in items])
    try:
        failed = REGISTRY.get_sample_value("s3blobs_gc_runs_total", {"outcome": "failed"}) or 0
        code, _, err = in_process(env, monkeypatch, capsys)
        assert code == 3 and "another gc" in err
        assert REGISTRY.get_sample_value("s3blobs_gc_runs_total", {"outcome": "failed"}) == (
            failed + 1
        )
        assert s3.head_object(Bucket=bucket, Key=orphan)
    finally:
        lease.lift()

    done = gc(env, "--json")  # a process of its own, as an operator runs it
    assert done.returncode == 0, done.stderr
    ran = json.loads(done.stdout)
    assert ran["dry_run"] is False and ran["deleted"] == report["deleted"]
    assert ran["requests"]["DeleteObjects"] >= 3  # links, entries, orphaned data
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert keys == set()  # nothing else was there
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
