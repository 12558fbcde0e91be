"""kill -9 of a ``s3blobs serve`` process at a precise S3 request of a commit, and the
client's continuation on a new process (the test asserts, the benchmark times it)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from faultclient import Exchange, GaveUp, RetryingClient, digest_of
from faultproxy import FaultProxy, Record, Rule
from faultrig import PART
from netutil import free_port, wait_for_port

KiB = 1024
SHAPES = {"small": 64 * KiB, "whole-parts": PART, "parts-tail": PART + 64 * KiB}
LINK = r"^repositories/.+/_layers/"
# name: (operations, key regex, when the hook runs, what the proxy does then)
KILL_POINTS: dict[str, tuple[tuple[str, ...], str | None, str, str]] = {
    # a commit that moves bytes (here: the tail) seals the state once every byte is durable
    "after-seal": (("PutObject",), r"^_uploads/.+/state$", "after", "drop"),
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
    # A small blob has no multipart upload to complete, and its entry is written when
    # its bytes arrive (the PATCH), not by the commit. Only a commit with a tail to
    # send seals: one whose bytes are all in place already has nothing to seal.
    if shape != "small" or ("complete" not in point and point != "after-entry")
    if point != "after-seal" or shape == "parts-tail"
]


class RegistryProcess:
    """``python -m s3blobs serve`` on one port, restarted at will, killed whole."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.listening_at = 0.0
        self.killed_at = 0.0

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
        # A connection alone can be accepted by what is left of the killed process's
        # socket for a moment: ready means this process answers.
        deadline = time.monotonic() + 60
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"s3blobs serve did not answer:\n{self.tail()}")
            time.sleep(0.05)
        self.listening_at = time.monotonic()

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def kill(self, _: Record | None = None) -> None:
        self.killed_at = time.monotonic()
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


@dataclass
class KillOutcome:
    """What happened around one kill; times are time.monotonic() readings."""

    data: bytes
    fired: bool = False
    died: bool = False
    first: Exchange | None = None  # the PUT the kill interrupted
    last: Exchange | None = None  # how the client's retry ended
    failure: str = ""
    read_back: bool = False
    killed_at: float = 0.0
    listening_at: float = 0.0
    finished_at: float = 0.0
    exchanges: list[Exchange] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return digest_of(self.data)

    @property
    def waited(self) -> float:
        """From the new process listening to the client's 201."""
        return self.finished_at - self.listening_at

    @property
    def outage(self) -> float:
        """From the kill to the client's 201 (the restart included)."""
        return self.finished_at - self.killed_at


def kill_case(
    proxy: FaultProxy, registry: RegistryProcess, shape: str, point: str, name: str
) -> KillOutcome:
    """Upload a blob of ``shape``, kill the registry at ``point`` of its commit, start a
    new one, and let the client retry its PUT (three attempts at most)."""
    if registry.died(seconds=0):
        registry.start()
    client = RetryingClient(registry.url, name=name)
    outcome = KillOutcome(random.randbytes(SHAPES[shape]))
    data, digest = outcome.data, outcome.digest
    location, held = client.post(), 0
    if len(data) >= PART:  # the last PATCH crosses a part boundary
        held, location = client.patch(location, data, 0, 1024 * KiB)
    while held < len(data):
        held, location = client.patch(location, data, held, len(data))

    ops, key, when, fault = KILL_POINTS[point]
    rule = proxy.add_rule(Rule(op=ops, key=key, fault=fault, hook=registry.kill, when=when))
    try:
        sep = "&" if "?" in location else "?"
        outcome.first = client.request("PUT", "PUT", f"{location}{sep}digest={digest}", b"")
    finally:
        proxy.clear_rules()
    outcome.fired, outcome.died = rule.fired == 1, registry.died()
    if not (outcome.fired and outcome.died):
        return outcome
    outcome.killed_at = registry.killed_at
    registry.start()
    outcome.listening_at = registry.listening_at
    client.attempts = 3  # a retry that has not ended after three will not end at once
    try:
        client.put(location, digest)
    except GaveUp as exc:
        outcome.failure = str(exc)
    outcome.finished_at = time.monotonic()
    outcome.last = client.exchanges[-1]
    outcome.exchanges = client.exchanges
    if not outcome.failure:
        try:
            outcome.read_back = client.get_blob(digest) == data
        except AssertionError as exc:
            outcome.failure = f"read back: {str(exc)[:300]}"
    return outcome
