"""The fault suite's own tools do what they claim: the proxy names operations and
injects each fault as described, and the bucket checker catches each broken promise."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import boto3
import botocore.config
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError, ConnectionClosedError

from faultcheck import check_bucket
from faultclient import Exchange, audit
from faultproxy import FaultProxy, Record, Rule
from faultrig import ATTEMPTS, storage_config
from faultwire import operation
from s3blobs.s3 import make_client
from s3blobs.store import DATA_META, SIZE_META

pytest_plugins = ["faultfixtures"]


@pytest.fixture
def through(proxy: FaultProxy, fault_bucket: str) -> Iterator[Any]:
    """A client through the proxy, configured as s3blobs configures its own."""
    yield make_client(storage_config(proxy.url, fault_bucket))


def exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return True


def test_operations_are_named_from_method_path_and_query() -> None:
    cases = {
        ("POST", "/b/k", "uploads"): "CreateMultipartUpload",
        ("PUT", "/b/k", "partNumber=1&uploadId=u"): "UploadPart",
        ("POST", "/b/k", "uploadId=u"): "CompleteMultipartUpload",
        ("DELETE", "/b/k", "uploadId=u"): "AbortMultipartUpload",
        ("GET", "/b/k", "uploadId=u"): "ListParts",
        ("PUT", "/b/k", ""): "PutObject",
        ("GET", "/b/k", ""): "GetObject",
        ("HEAD", "/b/k", ""): "HeadObject",
        ("DELETE", "/b/k", ""): "DeleteObject",
        ("POST", "/b", "delete"): "DeleteObjects",
        ("GET", "/b", "list-type=2&prefix=x"): "ListObjectsV2",
        ("GET", "/b", "uploads"): "ListMultipartUploads",
        ("HEAD", "/b", ""): "HeadBucket",
    }
    for (method, path, query), expected in cases.items():
        parsed = parse_qs(query, keep_blank_values=True)
        assert operation(method, path, parsed, copy=False)[0] == expected, (method, path, query)
    assert operation("PUT", "/b/data/x%2By", {}, copy=False) == ("PutObject", "data/x+y")


def test_each_fault_does_what_it_says(
    proxy: FaultProxy, through: Any, s3_direct: Any, fault_bucket: str
) -> None:
    # 500 at every attempt: the client fails, nothing was written.
    proxy.add_rule(Rule(op="PutObject", key="^a$", fault="500", count=ATTEMPTS))
    with pytest.raises(ClientError, match="InternalError"):
        through.put_object(Bucket=fault_bucket, Key="a", Body=b"a")
    assert not exists(s3_direct, fault_bucket, "a")
    # 503 SlowDown once: botocore's retry succeeds.
    proxy.add_rule(Rule(op="PutObject", key="^b$", fault="503"))
    through.put_object(Bucket=fault_bucket, Key="b", Body=b"b")
    # Reset before forwarding, at every attempt: never written.
    proxy.add_rule(Rule(op="PutObject", key="^c$", fault="reset", count=ATTEMPTS))
    with pytest.raises(ConnectionClosedError):
        through.put_object(Bucket=fault_bucket, Key="c", Body=b"c")
    assert not exists(s3_direct, fault_bucket, "c")
    # Answer lost once: written, and botocore's conditional retry meets its own write.
    proxy.add_rule(Rule(op="PutObject", key="^d$", fault="drop"))
    with pytest.raises(ClientError, match="PreconditionFailed"):
        through.put_object(Bucket=fault_bucket, Key="d", Body=b"d", IfNoneMatch="*")
    assert s3_direct.get_object(Bucket=fault_bucket, Key="d")["Body"].read() == b"d"
    faults = [(r.key, r.fault) for r in proxy.records if r.fault]
    expected = [("a", "500")] * ATTEMPTS + [("b", "503")] + [("c", "reset")] * ATTEMPTS
    assert faults == [*expected, ("d", "drop")]
    # Switched off: nothing is injected.
    proxy.add_rule(Rule(op="PutObject", fault="500", count=ATTEMPTS))
    with proxy.quiet():
        through.put_object(Bucket=fault_bucket, Key="e", Body=b"e")


def test_hooks_run_before_or_after_forwarding(
    proxy: FaultProxy, through: Any, s3_direct: Any, fault_bucket: str
) -> None:
    seen: list[tuple[str, bool]] = []

    def note(record: Record) -> None:
        seen.append((record.key, exists(s3_direct, fault_bucket, record.key)))

    proxy.add_rule(Rule(op="PutObject", key="^before$", hook=note, when="before"))
    proxy.add_rule(Rule(op="PutObject", key="^after$", hook=note, when="after"))
    through.put_object(Bucket=fault_bucket, Key="before", Body=b"x")
    through.put_object(Bucket=fault_bucket, Key="after", Body=b"x")
    assert seen == [("before", False), ("after", True)]


def test_random_faults_are_seeded_and_multipart_uploads_pass_through(
    fault_moto: str, fault_bucket: str, s3_direct: Any
) -> None:
    body = bytes(range(256)) * (24 * 1024)  # 6 MiB: one 5 MiB part and a tail
    kinds = []
    for _ in range(2):
        with FaultProxy(fault_moto, seed=5, rate=0.3, kinds=("500", "503", "reset")) as proxy:
            config = botocore.config.Config(
                retries={"mode": "standard", "max_attempts": 10}, s3={"addressing_style": "path"}
            )
            client = boto3.client(
                "s3", endpoint_url=proxy.url, region_name="us-east-1", config=config
            )
            transfer = TransferConfig(multipart_threshold=5 * 1024 * 1024, use_threads=False)
            client.upload_fileobj(io.BytesIO(body), fault_bucket, "big", Config=transfer)
            for n in range(10):
                client.put_object(Bucket=fault_bucket, Key=f"small{n}", Body=b"small")
            kinds.append([(r.op, r.fault) for r in proxy.records])
    assert kinds[0] == kinds[1], "the same seed, the same faults"
    assert any(fault for _, fault in kinds[0])
    assert {"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"} <= {
        op for op, _ in kinds[0]
    }
    got = s3_direct.get_object(Bucket=fault_bucket, Key="big")["Body"].read()
    assert got == body


def test_the_checker_catches_every_broken_promise(s3_direct: Any, fault_bucket: str) -> None:
    def entry(data: bytes) -> tuple[str, str]:
        hex_ = hashlib.sha256(data).hexdigest()
        return f"sha256:{hex_}", f"blobs/sha256/{hex_[:2]}/{hex_}"

    def put(key: str, body: bytes = b"", metadata: dict[str, str] | None = None) -> None:
        s3_direct.put_object(Bucket=fault_bucket, Key=key, Body=body, Metadata=metadata or {})

    good, good_key = entry(b"inline")
    put(good_key, b"inline")
    wrong, wrong_key = entry(b"what it should hold")
    put(wrong_key, b"something else")
    missing, missing_key = entry(b"data elsewhere")
    put(missing_key, metadata={DATA_META: "0" * 32, SIZE_META: "14"})
    sized, sized_key = entry(b"sized data")
    put("data/" + "1" * 32, b"sized data")
    put(sized_key, metadata={DATA_META: "1" * 32, SIZE_META: "99"})
    put("repositories/r/_layers/sha256/" + "f" * 64)
    put("data/" + "2" * 32, b"orphan")

    report = check_bucket(s3_direct, fault_bucket)
    problems = "\n".join(report.problems)
    assert good not in problems
    assert f"entry {wrong} holds bytes hashing to" in problems
    assert f"entry {missing} names data/{'0' * 32}" in problems
    assert f"entry {sized} records size 99" in problems
    assert "has no entry" in problems
    assert len(report.problems) == 4
    assert report.orphan_data == {"data/" + "2" * 32}
    only = check_bucket(s3_direct, fault_bucket, digests={good})
    assert only.problems == []


def test_the_audit_flags_every_unclean_answer() -> None:
    def answer(status: int, body: bytes, **headers: str) -> Exchange:
        named = {k.replace("_", "-").lower(): v for k, v in headers.items()}
        return Exchange("PUT", "PUT", "/v2/x/blobs/uploads/u", status, named, body)

    error = b'{"errors": [{"code": "UNAVAILABLE", "message": "storage unavailable"}]}'
    clean = answer(503, error, Retry_After="5", X_Request_Id="r1")
    found = audit(
        [
            clean,
            answer(500, error, Retry_After="5", X_Request_Id="r2"),
            answer(503, b"<html>oops</html>", Retry_After="5", X_Request_Id="r3"),
            answer(503, error, X_Request_Id="r4"),
            answer(429, error, X_Request_Id="r5"),
            answer(503, error, Retry_After="5"),
            answer(409, b'{"errors": [{"code": "BLOB_UPLOAD_INVALID"}]}'),
            answer(503, error.replace(b"storage", b"my-bucket"), Retry_After="1", X_Request_Id="r"),
        ],
        secrets=["my-bucket"],
    )
    assert {kind: len(items) for kind, items in found.items()} == {
        "500": 1,
        "non-JSON error": 1,
        "5xx not 503 with Retry-After": 2,
        "429 without Retry-After": 1,
        "error without X-Request-Id": 1,
        "spurious 4xx": 1,
        "leaked internals": 1,
    }
    assert audit([clean], secrets=["my-bucket"]) == {}
