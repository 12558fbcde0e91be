"""kill -9 of a ``s3blobs serve`` process at each step of a commit.

The proxy calls a hook at the precise S3 request: the whole process group gets
SIGKILL (``serve`` may run a server with worker processes), and the request is
reset (before forwarding) or its answer dropped (after). A new process starts on the
same bucket and port; the client retries its PUT as a real one does, and that must
end 201 at once (no lease or claim left by the dead process to wait out), with the
blob reading back byte for byte and the bucket checker passing.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faultcheck import check_bucket, direct_client
from faultclient import GaveUp, RetryingClient, digest_of
from faultproxy import FaultProxy, Record, Rule
from faultrig import PART, new_bucket, storage_env
from netutil import free_port, wait_for_port

pytest_plugins = ["faultfixtures"]

KiB = 1024
#: How long a client may wait, from the new process listening to its 201.
PROMPT = 5.0
SHAPES = {"small": 64 * KiB, "whole-parts": PART, "parts-tail": PART + 64 * KiB}
LINK = r"^repositories/.+/_layers/"
# name: (operations, key regex, when the hook runs, what the proxy does then)
KILL_POINTS: dict[str, tuple[tuple[str, ...], str | None, str, str]] = {
    "before-complete": (("CompleteMultipartUpload",), None, "before", "reset"),
    "after-complete": (("CompleteMultipartUpload",), None, "after", "drop"),
    "after-entry": (("PutObject",), r"^blobs/", "after", "drop"),
    "after-link": (("PutObject",), LINK, "after", "drop"),
    "before-state-removal": (("DeleteObjects", "DeleteObject"), r"^_uploads/", "before", "reset"),
}
CASES = [
    (shape, point)
    for shape in SHAPES
    for point in KILL_POINTS
    if shape != "small" or "complete" not in point  # a small blob has no multipart upload
]


class RegistryProcess:
    """``python -m s3blobs serve`` on one port, restarted at will, killed whole."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.listening_at = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "s3blobs", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group, for killpg
            )
        wait_for_port(self.port, self.proc, "s3blobs serve", seconds=60)
        self.listening_at = time.monotonic()

    def kill(self, _: Record | None = None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def died(self, seconds: float = 10.0) -> bool:
        """Whether the process is gone (waiting for the hook's kill in another thread)."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]


@pytest.fixture(scope="module")
def kill_rig(fault_moto: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    bucket = new_bucket(fault_moto)
    with FaultProxy(fault_moto) as proxy:
        env = {**os.environ, **storage_env(proxy.url, bucket)}
        env.pop("S3BLOBS_REQUIRE_TOOLS", None)
        registry = RegistryProcess(env, tmp_path_factory.mktemp("kills") / "serve.log")
        try:
            yield proxy, registry, fault_moto, bucket
        finally:
            registry.kill()


@pytest.mark.slow
@pytest.mark.parametrize(("shape", "point"), CASES)
def test_kill_during_commit_then_the_retried_put_ends_201(
    kill_rig: Any, shape: str, point: str
) -> None:
    proxy, registry, moto, bucket = kill_rig
    if registry.died(seconds=0):
        registry.start()
    client = RetryingClient(registry.url, name=f"kill/{shape}-{point}")
    data = random.randbytes(SHAPES[shape])
    digest = digest_of(data)
    location, held = client.post(), 0
    if len(data) >= PART:  # the last PATCH crosses a part boundary
        held, location = client.patch(location, data, 0, 1024 * KiB)
    while held < len(data):
        held, location = client.patch(location, data, held, len(data))

    ops, key, when, fault = KILL_POINTS[point]
    rule = proxy.add_rule(Rule(op=ops, key=key, fault=fault, hook=registry.kill, when=when))
    try:
        sep = "&" if "?" in location else "?"
        first = client.request("PUT", "PUT", f"{location}{sep}digest={digest}", b"")
    finally:
        proxy.clear_rules()
    assert rule.fired == 1, f"the commit never reached {point}: PUT -> {first}"
    assert registry.died() and first.status is None, f"the process survived: {first}"

    registry.start()
    # The client's retry, as a real one does it; one that has not ended after three
    # attempts will not end at once.
    client.attempts = 3
    try:
        client.put(location, digest)
    except GaveUp as exc:
        answers = " | ".join(str(e)[:160] for e in client.exchanges[-3:])
        pytest.fail(f"the retried PUT did not finish ({exc}): {answers}")
    waited = time.monotonic() - registry.listening_at
    last = client.exchanges[-1]
    assert last.method == "PUT" and last.status == 201, f"the retried PUT ended {last}"
    assert waited < PROMPT, f"the client waited {waited:.1f} s for its 201"
    assert client.get_blob(digest) == data
    report = check_bucket(direct_client(moto), bucket, digests={digest})
    assert not report.problems, str(report)
