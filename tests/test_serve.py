"""``s3blobs serve`` as a server: gunicorn by default, what it does with a client that
stops sending, and a chunked body cut short on a real socket."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests

from s3blobs.config import MiB


@pytest.fixture
def served(server_env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[str]:
    args = getattr(request, "param", [])
    proc = subprocess.Popen(
        [sys.executable, "-m", "s3blobs", "serve", "--port", "0", "--workers", "1", *args],
        env={**os.environ, **server_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert port is not None, line
        url = f"http://127.0.0.1:{port.group(1)}"
        deadline = time.time() + 30
        while True:
            try:
                requests.get(f"{url}/v2/", timeout=2)
                break
            except requests.ConnectionError:
                assert time.time() < deadline, "the registry did not answer"
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def raw_request(url: str, head: str, body: bytes, linger: float = 0) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode() + body)
        time.sleep(linger)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def assert_kept_and_continued(url: str, location: str, sent: bytes) -> None:
    """What arrived is kept (all but the last read the server had under way when the
    body broke off, at most 256 KiB), and the client goes on from the Range."""
    end = int(requests.get(url + location, timeout=10).headers["Range"].split("-")[1])
    kept = end + 1 if end else 0  # "0-0" is also what an empty upload answers
    assert len(sent) - 256 * 1024 <= kept <= len(sent)
    rest = sent[kept:] + b"the rest"
    patched = requests.patch(
        url + location,
        data=rest,
        headers={"Content-Range": f"{kept}-{kept + len(rest) - 1}"},
        timeout=10,
    )
    assert patched.status_code == 202, patched.text
    blob = sent + b"the rest"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    put = requests.put(url + patched.headers["Location"], params={"digest": digest}, timeout=10)
    assert put.status_code == 201, put.text
    got = requests.get(f"{url}/v2/serve/app/blobs/{digest}", timeout=10)
    assert got.content == blob


@pytest.mark.parametrize("served", [["--read-timeout", "1"]], indirect=True)
def test_a_stalled_body_is_cut_off_and_what_arrived_is_kept(served: str) -> None:
    assert requests.get(f"{served}/v2/", timeout=10).headers["Server"] == "gunicorn"
    location = requests.post(f"{served}/v2/serve/app/blobs/uploads/", timeout=10).headers[
        "Location"
    ]
    sent = MiB + 5
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: {2 * MiB}\r\n"
        f"Content-Range: 0-{2 * MiB - 1}\r\n\r\n"
    )
    started = time.time()
    host, port = served.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode() + b"s" * sent)
        answer = b""  # nothing more is sent: the server must give up, and answer
        while b"BLOB_UPLOAD_INVALID" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    assert b" 400 " in answer.split(b"\r\n")[0], answer[:200]
    assert b"BLOB_UPLOAD_INVALID" in answer
    assert time.time() - started < 20
    assert_kept_and_continued(served, location, b"s" * sent)


@pytest.mark.parametrize("served", [["--dev"], []], indirect=True)
def test_a_chunked_body_cut_short_is_a_400_and_keeps_what_arrived(served: str) -> None:
    location = requests.post(f"{served}/v2/serve/app/blobs/uploads/", timeout=10).headers[
        "Location"
    ]
    chunk = b"c" * 70000
    head = f"PATCH {location} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\nzz-not-a-chunk-size\r\n"
    answer = raw_request(served, head, body)
    status = answer.split(b"\r\n")[0]
    assert b" 400 " in status, answer[:300]
    assert b'"BLOB_UPLOAD_INVALID"' in answer
    assert_kept_and_continued(served, location, chunk)
