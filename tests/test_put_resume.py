"""``s3blobs put`` killed in the middle of a 40 MiB blob, resumed with ``--resume``, and
read back with ``get``; progress bars on a terminal and none elsewhere. Real processes
against a moto server."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from conftest import PART
from s3blobs.cli import main
from s3blobs.uploads import UploadState

MiB = 1024 * 1024
REPO = "big/app"


def s3blobs(*argv: str) -> list[str]:
    return [sys.executable, "-m", "s3blobs", *argv]


def saved_size(server_env: dict[str, str], upload_id: str) -> int:
    """The bytes the upload's saved state holds (0 before the first save)."""
    s3 = boto3.client(
        "s3", endpoint_url=server_env["S3BLOBS_ENDPOINT_URL"], region_name="us-east-1"
    )
    try:
        body = s3.get_object(
            Bucket=server_env["S3BLOBS_BUCKET"], Key=f"_uploads/{upload_id}/state"
        )["Body"].read()
    except s3.exceptions.NoSuchKey:
        return 0
    return UploadState.from_json(body).size


def test_a_killed_put_resumes_and_gets_back_intact(
    server_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: Any,
    tmp_path: Path,
) -> None:
    data = os.urandom(40 * MiB)
    source = tmp_path / "blob.bin"
    source.write_bytes(data)
    env = {
        **os.environ,
        **server_env,
        "S3BLOBS_MAX_CONCURRENCY": "1",  # progress is saved every part
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    first = subprocess.Popen(
        s3blobs("put", "-", "--repo", REPO),
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert first.stdin is not None and first.stderr is not None
        first.stdin.write(data[: PART + 1])  # enough to need the writer
        first.stdin.flush()
        line = first.stderr.readline().decode()
        assert "started; if it is interrupted: --resume" in line, line
        upload_id = line.split()[2]
        first.stdin.write(data[PART + 1 : 17 * MiB])
        first.stdin.flush()
        deadline = time.monotonic() + 30
        while saved_size(server_env, upload_id) < 2 * PART:
            assert time.monotonic() < deadline, "put never saved its progress"
            time.sleep(0.05)
    finally:
        first.kill()  # for real: no chance to clean up or save anything more
        first.wait(timeout=10)
    assert first.returncode == -9
    assert first.stdout is not None and first.stdout.read() == b""  # no descriptor

    for name, value in server_env.items():
        monkeypatch.setenv(name, value)
    capsysbinary.readouterr()
    assert main(["uploads", "--json"]) == 0
    [row] = [json.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
    assert (row["id"], row["repository"]) == (upload_id, REPO)
    assert 2 * PART <= row["size"] < len(data)

    # The resumed put draws its progress bar on a terminal (a pty as its stderr).
    controller, terminal = pty.openpty()
    # A terminal of 100 columns (a fresh pty has 0, and tqdm then draws nothing).
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    screen: list[str] = []
    reader = threading.Thread(target=lambda: screen.append(_read_all(controller)))
    reader.start()
    resumed = subprocess.run(
        s3blobs("put", str(source), "--repo", REPO, "--resume", upload_id, "--json"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=terminal,
        timeout=120,
    )
    os.close(terminal)
    reader.join(timeout=10)
    drawn = screen[0]
    assert resumed.returncode == 0, drawn
    descriptor = json.loads(resumed.stdout)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert descriptor == {
        "mediaType": "application/octet-stream",
        "size": len(data),
        "digest": digest,
    }
    assert re.search(r"put:\s+\d+%\|.*\| \d+\.\dM/40\.0M", drawn), drawn  # tqdm's bar

    target = tmp_path / "back.bin"
    assert main(["get", digest, "--repo", REPO, "-o", str(target)]) == 0
    assert target.read_bytes() == data
    err = capsysbinary.readouterr().err.decode()
    assert "%|" not in err and err.count("\n") == 1  # not a terminal: no bar
    assert main(["uploads", "--json"]) == 0
    assert capsysbinary.readouterr().out == b""  # the upload is gone with its commit


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")
