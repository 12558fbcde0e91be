"""Targeted faults: each S3 request of each upload step, failing or losing its answer.

For each step (POST; a PATCH that crosses a part boundary; the final PUT) and each
blob shape (64 KiB; one whole 5 MiB part; a part and a 64 KiB tail), a clean run
through the proxy names the S3 requests the step makes. Then, for each of those
requests in turn, a fresh upload is taken to that step and exactly that request is
faulted:

- ``fail``: the request never reaches S3, at every attempt botocore makes (every
  other attempt's connection is reset, the others are answered 500): the registry
  hears it;
- ``lost``: S3 does the work and the answer is lost, once (botocore's retry meets
  what its first attempt did);
- ``lost-all``: every attempt's answer is lost (the registry hears a failure of a
  write that happened).

The client then goes on as a real one does (tests/faultclient.py); its push must end
201 with the right bytes, the bucket checker must pass, and every answer must be
clean. One test per (step, shape, fault) runs all the requests of that step and
lists every request whose case failed.
"""

from __future__ import annotations

import contextlib
import queue
import random
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from faultcheck import check_bucket, direct_client
from faultclient import Push, RetryingClient, audit, digest_of
from faultproxy import FaultProxy, Record, Rule
from faultrig import ATTEMPTS, PART, RegistryServer, new_bucket, secrets, serve_registry
from faultrun import read_back, summary

pytest_plugins = ["faultfixtures"]

KiB = 1024
FIRST_PATCH = 1024 * KiB
SHAPES = {"small": 64 * KiB, "whole-parts": PART, "parts-tail": PART + 64 * KiB}
FAULTS: dict[str, tuple[str | tuple[str, ...], int]] = {
    "fail": (("reset", "500"), ATTEMPTS),
    "lost": ("drop", 1),
    "lost-all": ("drop", ATTEMPTS),
}
STEPS = ("POST", "PATCH", "PUT")
# Key classes, so that a rule finds "the same request" of another upload.
KEY_CLASSES = [
    (r"^_uploads/[^/]+/state$", "state"),
    (r"^_uploads/[^/]+/piece\.", "piece"),
    (r"^data/", "data"),
    (r"^blobs/", "entry"),
    (r"^repositories/.+/_layers/", "link"),
]


@dataclass(frozen=True)
class Target:
    """The n-th request of one operation on one class of key, within a step."""

    op: str
    key: str | None  # a regex of the key class
    skip: int

    def __str__(self) -> str:
        name = next((n for p, n in KEY_CLASSES if p == self.key), "bucket")
        return f"{self.op}({name})#{self.skip + 1}"


def key_class(record: Record) -> str | None:
    key = record.key or (record.keys[0] if record.keys else "")
    return next((pattern for pattern, _ in KEY_CLASSES if re.search(pattern, key)), None)


def targets_of(records: list[Record]) -> list[Target]:
    seen: dict[tuple[str, str | None], int] = {}
    targets = []
    for record in records:
        ident = (record.op, key_class(record))
        targets.append(Target(record.op, ident[1], seen.get(ident, 0)))
        seen[ident] = seen.get(ident, 0) + 1
    return targets


class Upload:
    """One push of ``data`` split into the steps a test faults one at a time."""

    def __init__(self, client: RetryingClient, data: bytes) -> None:
        self.client = client
        self.data = data
        self.location = ""
        self.held = 0

    def run(self, step: str, before: Callable[[], None], after: Callable[[], None]) -> None:
        """All steps in order; ``before``/``after`` bracket the step under test."""
        for name, action in (
            ("POST", self.post),
            ("first PATCH", self.first_patch),
            ("PATCH", self.patch),
            ("PUT", self.put),
        ):
            if name == step:
                before()
            action()
            if name == step:
                after()

    def post(self) -> None:
        self.location = self.client.post()

    def first_patch(self) -> None:
        """Blobs of a part or more get a small PATCH first, so that the PATCH under
        test starts inside a part and crosses its boundary."""
        if len(self.data) >= PART:
            self.held, self.location = self.client.patch(self.location, self.data, 0, FIRST_PATCH)

    def patch(self) -> None:
        while self.held < len(self.data):
            self.held, self.location = self.client.patch(
                self.location, self.data, self.held, len(self.data)
            )

    def put(self) -> None:
        self.client.put(self.location, digest_of(self.data))


@dataclass
class Rig:
    proxy: FaultProxy
    registry: RegistryServer
    moto: str
    bucket: str


#: Cases run side by side, each rig (proxy and registry) taking one case at a time:
#: a rule is the proxy's, so one case's fault never hits another's requests.
RIGS = 3


@pytest.fixture(scope="module")
def rigs(fault_moto: str) -> Iterator[list[Rig]]:
    """Registries on one bucket; every case pushes other bytes to its own repository."""
    bucket = new_bucket(fault_moto)
    with contextlib.ExitStack() as stack:
        started = []
        for _ in range(RIGS):
            proxy = stack.enter_context(FaultProxy(fault_moto))
            registry = stack.enter_context(serve_registry(proxy, bucket))
            started.append(Rig(proxy, registry, fault_moto, bucket))
        yield started


_clean_runs: dict[tuple[str, str], list[Target]] = {}


def clean_targets(rig: Rig, step: str, shape: str) -> list[Target]:
    """The requests ``step`` makes for ``shape`` in a run with no faults (cached)."""
    if (step, shape) not in _clean_runs:
        client = RetryingClient(rig.registry.url, name=f"clean/{step.lower()}-{shape}")
        marks: list[int] = []
        upload = Upload(client, random.randbytes(SHAPES[shape]))
        with rig.proxy.quiet():
            upload.run(
                step, lambda: marks.append(rig.proxy.mark()), lambda: marks.append(rig.proxy.mark())
            )
        records = rig.proxy.records[marks[0] : marks[1]]
        assert client.exchanges[-1].status == 201
        _clean_runs[step, shape] = targets_of(records)
    return _clean_runs[step, shape]


def case_name(step: str, shape: str, fault: str, n: int) -> str:
    return f"t/{step.lower()}-{shape}-{fault}-{n}"


def case_data(step: str, shape: str, fault: str, n: int) -> bytes:
    """The bytes case ``n`` pushes: its own, and the same at every call."""
    return random.Random(case_name(step, shape, fault, n)).randbytes(SHAPES[shape])


def one_case(rig: Rig, step: str, shape: str, fault: str, target: Target, n: int) -> list[str]:
    """Push a fresh blob with ``target`` faulted in ``step``; what went wrong, if anything."""
    kind, count = FAULTS[fault]
    name = case_name(step, shape, fault, n)
    # After the fault the retry meets no other: if 3 attempts do not finish, none will.
    client = RetryingClient(rig.registry.url, name=name, attempts=3)
    data = case_data(step, shape, fault, n)
    rule = Rule(op=target.op, key=target.key, skip=target.skip, fault=kind, count=count)

    def arm() -> None:
        rig.proxy.add_rule(rule)
        client.after_attempt = lambda _: rig.proxy.clear_rules()  # the retry goes clean

    def disarm() -> None:
        client.after_attempt = None
        rig.proxy.clear_rules()

    push = Push(data, "chunked", digest_of(data))
    try:
        Upload(client, data).run(step, arm, disarm)
        push.acknowledged = True
    except Exception as exc:  # GaveUp, UploadLost: the client could not finish
        push.failure = f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        disarm()
    problems = []
    if rule.fired == 0:
        problems.append("the fault never fired (the step made other requests)")
    if push.failure:
        problems.append(f"push did not finish: {push.failure}")
    else:
        with rig.proxy.quiet():
            # Through the registry; the bucket checker reads S3 itself afterwards.
            problem = read_back(client, None, push.digest, data)
        if problem:
            problems.append(f"acknowledged blob lost: {problem}")
    found = audit(client.exchanges, secrets(rig.proxy, rig.moto, rig.bucket))
    problems += [f"{kind}: {items[0][:300]}" for kind, items in found.items()]
    return problems


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("step", STEPS)
def test_each_request_of_a_step_faulted(rigs: list[Rig], step: str, shape: str, fault: str) -> None:
    targets = clean_targets(rigs[0], step, shape)
    assert targets, "the step made no S3 request"
    cases: queue.Queue[tuple[int, Target]] = queue.Queue()
    for case in enumerate(targets):
        cases.put(case)
    failed: dict[str, list[str]] = {}

    def work(rig: Rig) -> None:
        while True:
            try:
                n, target = cases.get_nowait()
            except queue.Empty:
                return
            problems = one_case(rig, step, shape, fault, target, n)
            if problems:
                failed[f"{target} {fault}"] = problems

    with ThreadPoolExecutor(len(rigs)) as pool:
        for done in [pool.submit(work, rig) for rig in rigs]:
            done.result()
    pushed = {digest_of(case_data(step, shape, fault, n)) for n in range(len(targets))}
    report = check_bucket(direct_client(rigs[0].moto), rigs[0].bucket, digests=pushed)
    if report.problems:
        failed["bucket checker"] = report.problems
    assert not failed, f"{len(failed)} of {len(targets)} requests:\n" + summary(failed)


def test_targets_name_requests_by_class() -> None:
    state = Record("PutObject", "PUT", "_uploads/abc/state")
    piece = Record("PutObject", "PUT", "_uploads/abc/piece.0123")
    delete = Record("DeleteObjects", "POST", "", ("_uploads/abc/state",))
    targets = targets_of([state, piece, state, delete])
    assert [str(t) for t in targets] == [
        "PutObject(state)#1",
        "PutObject(piece)#1",
        "PutObject(state)#2",
        "DeleteObjects(state)#1",
    ]
