"""Races between requests of one upload (and of one digest), on real sockets in real
threads: no interleaving may serve a corrupt or partial blob, and no PATCH whose
bytes cannot end up in the blob may answer 202. Each race runs a few times, to give
interleavings a chance. And a client that vanishes in the middle of a PATCH body:
the upload goes on at once from the Range the registry then reports.
"""

from __future__ import annotations

import json
import random
import socket
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import pytest

from faultcheck import check_bucket
from faultclient import Exchange, RetryingClient, audit, digest_of
from faultrig import PART, RegistryServer

pytest_plugins = ["faultfixtures"]

T = TypeVar("T")
ROUNDS = 3
KiB = 1024
MiB = 1024 * KiB
REFUSALS = {"BLOB_UPLOAD_INVALID", "DIGEST_INVALID", "SIZE_INVALID"}


def at_once(*actions: Callable[[], T]) -> list[T]:
    """Run the actions in threads released together; their results in order."""
    barrier = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)
    errors: list[BaseException] = []

    def run(i: int, action: Callable[[], T]) -> None:
        barrier.wait(timeout=30)
        try:
            results[i] = action()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return results


def patch_once(client: RetryingClient, location: str, data: bytes, start: int) -> Exchange:
    headers = {
        "Content-Range": f"{start}-{start + len(data) - 1}",
        "Content-Type": "application/octet-stream",
    }
    return client.request("PATCH", "PATCH", location, data, headers)


def put_once(client: RetryingClient, location: str, digest: str) -> Exchange:
    sep = "&" if "?" in location else "?"
    return client.request("PUT", "PUT", f"{location}{sep}digest={digest}", b"")


def error_code(exchange: Exchange) -> str:
    try:
        return str(json.loads(exchange.body)["errors"][0]["code"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def assert_bucket_sound(s3_direct: Any, registry: RegistryServer) -> Any:
    """The registry fixture's bucket is the test's own: the whole of it is checked."""
    report = check_bucket(s3_direct, registry.storage.config.bucket)
    assert not report.problems, str(report)
    return report


@pytest.mark.slow
def test_two_patches_of_the_same_bytes_then_the_upload_goes_on(
    registry: RegistryServer, s3_direct: Any
) -> None:
    for round_ in range(ROUNDS):
        client = RetryingClient(registry.url, name=f"race/same-{round_}")
        data = random.randbytes(PART + 512 * KiB)
        location = client.post()
        first = data[: PART + 256 * KiB]  # crosses the part boundary
        answers = at_once(*[partial(patch_once, client, location, first, 0)] * 2)
        statuses = [a.status for a in answers]
        # The upload goes on from wherever the registry says it is.
        held, location = client.status(location, 0, len(data))
        while held < len(data):
            held, location = client.patch(location, data, held, len(data))
        client.put(location, digest_of(data))
        assert client.get_blob(digest_of(data)) == data, statuses
    assert_bucket_sound(s3_direct, registry)


@pytest.mark.slow
def test_two_patches_of_different_bytes_never_commit_a_mixture(
    registry: RegistryServer, s3_direct: Any
) -> None:
    for round_ in range(ROUNDS):
        client = RetryingClient(registry.url, name=f"race/diff-{round_}")
        contents = [random.randbytes(PART + 256 * KiB) for _ in range(2)]
        location = client.post()
        answers = at_once(*[partial(patch_once, client, location, c, 0) for c in contents])
        accepted = [c for c, a in zip(contents, answers, strict=True) if a.status == 202]
        for content in accepted:
            put = put_once(client, location, digest_of(content))
            if put.status == 201:
                # The one outcome allowed to succeed: exactly that content.
                assert client.get_blob(digest_of(content)) == content
                break
            assert put.status is not None and 400 <= put.status < 500, str(put)
            assert error_code(put) in REFUSALS, str(put)
    assert_bucket_sound(s3_direct, registry)


@pytest.mark.slow
@pytest.mark.parametrize(
    "size", [64 * KiB, 2 * PART, PART + 300 * KiB], ids=["small", "whole-parts", "parts-tail"]
)
def test_two_puts_of_one_upload_both_end_201(
    registry: RegistryServer, s3_direct: Any, size: int
) -> None:
    for round_ in range(ROUNDS):
        client = RetryingClient(registry.url, name=f"race/puts-{size}-{round_}")
        data = random.randbytes(size)
        digest = digest_of(data)
        location = client.post()
        held = 0
        while held < size:
            held, location = client.patch(location, data, held, size)
        answers = at_once(*[partial(put_once, client, location, digest)] * 2)
        for answer in answers:
            if answer.status != 201:  # one retry must turn it into 201
                retried = put_once(client, location, digest)
                assert retried.status == 201, f"{answer} then {retried}"
        assert client.get_blob(digest) == data
    assert_bucket_sound(s3_direct, registry)


@pytest.mark.slow
def test_a_put_racing_a_patch_never_both_succeed(registry: RegistryServer, s3_direct: Any) -> None:
    for round_ in range(ROUNDS):
        client = RetryingClient(registry.url, name=f"race/put-patch-{round_}")
        head, more = random.randbytes(PART + 100 * KiB), random.randbytes(PART)
        location = client.post()
        held, location = client.patch(location, head, 0, len(head))
        assert held == len(head)
        put, patch = at_once(
            partial(put_once, client, location, digest_of(head)),
            partial(patch_once, client, location, more, len(head)),
        )
        assert not (put.status == 201 and patch.status == 202), (
            "the PATCH was acknowledged, yet its bytes cannot be in the committed blob"
        )
        if put.status == 201:
            assert client.get_blob(digest_of(head)) == head
    assert_bucket_sound(s3_direct, registry)


@pytest.mark.slow
def test_two_uploads_of_one_content_commit_once(registry: RegistryServer, s3_direct: Any) -> None:
    for round_ in range(ROUNDS):
        client = RetryingClient(registry.url, name=f"race/twins-{round_}")
        data = random.randbytes(2 * PART)
        digest = digest_of(data)
        locations = []
        for _ in range(2):
            location, held = client.post(), 0
            while held < len(data):
                held, location = client.patch(location, data, held, len(data))
            locations.append(location)
        answers = at_once(*[partial(put_once, client, loc, digest) for loc in locations])
        assert [a.status for a in answers] == [201, 201], [str(a) for a in answers]
        assert client.get_blob(digest) == data
    report = assert_bucket_sound(s3_direct, registry)
    assert not report.orphan_data, "the losers' data objects were left behind"


def cut_short(port: int, location: str, data: bytes, chunked: bool) -> None:
    """Send a PATCH whose body stops after ``data`` (of twice as much announced) and
    close the connection, as a client that crashed or lost its network would."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {2 * len(data)}"
    head = f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{framing}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        piece = 256 * KiB
        for start in range(0, len(data), piece):
            chunk = data[start : start + piece]
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
        if chunked:
            sock.sendall(b"40000\r\n" + data[:100])  # a chunk that never ends


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_patch_cut_short_then_the_upload_goes_on_at_once(
    registry: RegistryServer, s3_direct: Any, chunked: bool
) -> None:
    client = RetryingClient(registry.url, name="race/cut")
    data = random.randbytes(2 * PART + 100 * KiB)
    location = client.post()
    cut_short(int(registry.url.rsplit(":", 1)[1]), location, data[: PART + MiB], chunked)
    # The registry notices the client is gone when it reads the body's end.
    assert registry.wait_idle(), "the registry is still busy with the cut request"
    # The next steps, as a real client takes them: status, PATCH from its Range, PUT.
    held, location = client.status(location, 0, len(data))
    while held < len(data):
        held, location = client.patch(location, data, held, len(data))
    client.put(location, digest_of(data))
    problems = audit(client.exchanges, [])
    assert not problems, problems
    assert client.get_blob(digest_of(data)) == data
    assert_bucket_sound(s3_direct, registry)
