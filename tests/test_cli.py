"""``s3blobs serve`` on a configured bucket, and its answer to a bad configuration."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys

import boto3
import requests


def test_serve_uses_the_configured_bucket(server_env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "s3blobs", "serve", "--port", "0"],
        env={**os.environ, **server_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "embedded" not in first and server_env["S3BLOBS_BUCKET"] in first
        port = re.search(r"127\.0\.0\.1:(\d+)", first)
        assert port is not None
        url = f"http://127.0.0.1:{port.group(1)}"
        assert requests.get(f"{url}/v2/", timeout=10).status_code == 200
        digest = "sha256:" + hashlib.sha256(b"hello").hexdigest()
        pushed = requests.post(
            f"{url}/v2/cli/app/blobs/uploads/", params={"digest": digest}, data=b"hello", timeout=10
        )
        assert pushed.status_code == 201
        s3 = boto3.client(
            "s3", endpoint_url=server_env["S3BLOBS_ENDPOINT_URL"], region_name="us-east-1"
        )
        keys = [
            o["Key"] for o in s3.list_objects_v2(Bucket=server_env["S3BLOBS_BUCKET"])["Contents"]
        ]
        assert f"blobs/sha256/{digest[7:9]}/{digest[7:]}" in keys
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_bad_configuration_exits_with_the_variable_named() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "s3blobs", "serve"],
        env={**os.environ, "S3BLOBS_BUCKET": "some-bucket", "S3BLOBS_PART_SIZE": "1MiB"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "S3BLOBS_PART_SIZE" in done.stderr
