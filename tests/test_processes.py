"""Resuming across OS processes, and the hash state in a fresh process."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from s3blobs import S3BlobStorage
from s3blobs.config import MiB

# Each process resumes the upload by id, writes its chunks (closing after each, as
# a registry does between PATCH requests), and exits.
WRITE = """
import sys
from s3blobs import S3BlobStorage
repo = S3BlobStorage.from_env().repository("proc/test")
upload_id, path, *sizes = sys.argv[1:]
data = open(path, "rb").read()
pos = 0
for size in map(int, sizes):
    writer = repo.resume(upload_id)
    writer.write(data[pos : pos + size])
    writer.close()
    pos += size
assert pos == len(data)
"""

COMMIT = """
import hashlib, sys
from s3blobs import Descriptor, S3BlobStorage
repo = S3BlobStorage.from_env().repository("proc/test")
upload_id, size, digest = sys.argv[1:]
writer = repo.resume(upload_id)
print(writer.commit(Descriptor("application/octet-stream", int(size), digest)).to_json())
"""


def run(script: str, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_one_blob_from_three_processes_committed_by_a_fourth(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    # chunk sizes from 1 byte to more than a part (5 MiB), per process
    plans = [[1, 700 * 1024, 3], [6 * MiB, 1], [1024, 5 * MiB - 1, 77]]
    data = os.urandom(sum(map(sum, plans)))
    storage = S3BlobStorage.from_env(server_env)
    repo = storage.repository("proc/test")
    writer = repo.create()
    writer.close()
    pos = 0
    for plan in plans:
        chunk_file = tmp_path / f"chunk{pos}"
        chunk_file.write_bytes(data[pos : pos + sum(plan)])
        run(WRITE, server_env, writer.id, str(chunk_file), *map(str, plan))
        pos += sum(plan)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    out = run(COMMIT, server_env, writer.id, str(len(data)), digest)
    assert digest in out
    assert repo.get(digest) == data


SAVE = """
import sys
from s3blobs import ResumableHash
h = ResumableHash(sys.argv[1])
h.update(open(sys.argv[2], "rb").read())
sys.stdout.write(h.state().hex())
"""

RESTORE = """
import sys
from s3blobs import ResumableHash
h = ResumableHash.from_state(sys.argv[1], bytes.fromhex(sys.argv[2]))
h.update(open(sys.argv[3], "rb").read())
sys.stdout.write(h.hexdigest())
"""


def test_hash_state_saved_in_one_process_restored_in_another(tmp_path: Path) -> None:
    data = os.urandom(1_000_003)
    head, tail = tmp_path / "head", tmp_path / "tail"
    head.write_bytes(data[:333_333])
    tail.write_bytes(data[333_333:])
    for algorithm in ("sha256", "sha512"):
        state = run(SAVE, {}, algorithm, str(head))
        digest = run(RESTORE, {}, algorithm, state, str(tail))
        assert digest == hashlib.new(algorithm, data).hexdigest()
