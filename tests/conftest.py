"""Fixtures: an in-process moto S3 (mock_aws), a bucket, storages, and S3 call counters."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

import s3blobs.s3
from s3blobs import Config, S3BlobStorage
from s3blobs.config import MiB

BUCKET = "s3blobs-test"
PART = 5 * MiB

#: Every S3 operation any s3blobs client made during the test session
#: (read by the Terraform least-privilege test, which runs last).
OPERATIONS_SEEN: set[str] = set()

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing-key-id")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)

_make_client = s3blobs.s3.make_client


def _recording_make_client(config: Config) -> Any:
    client = _make_client(config)
    client.meta.events.register(
        "before-call.s3.*", lambda model, **_: OPERATIONS_SEEN.add(model.name)
    )
    return client


s3blobs.s3.make_client = _recording_make_client  # type: ignore[assignment]
import s3blobs.storage  # noqa: E402

s3blobs.storage.make_client = _recording_make_client  # type: ignore[assignment]


def body_size(body: Any) -> int:
    """The length of a request body as botocore holds it (bytes, or a seekable stream)."""
    if isinstance(body, (bytes, bytearray)):
        return len(body)
    if hasattr(body, "seek") and hasattr(body, "tell"):
        here = body.tell()
        end = body.seek(0, 2)
        body.seek(here)
        return int(end - here)
    return 0


class S3Calls:
    """Counts the S3 API calls (not HTTP attempts) a client makes, by operation."""

    def __init__(self, client: Any) -> None:
        self.ops: list[str] = []
        self.sent = 0  # request body bytes handed to S3
        client.meta.events.register("before-call.s3.*", self._call)

    def _call(self, model: Any, params: Any, **_: Any) -> None:
        self.ops.append(model.name)
        self.sent += body_size(params.get("body"))

    def reset(self) -> None:
        self.ops.clear()
        self.sent = 0

    @property
    def count(self) -> int:
        return len(self.ops)

    def by_op(self) -> Counter[str]:
        return Counter(self.ops)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``after_all`` run last: they read what the whole run recorded."""
    items.sort(key=lambda item: item.get_closest_marker("after_all") is not None)


def pytest_collection_finish(session: pytest.Session) -> None:
    test_files = {p.name for p in Path(__file__).parent.glob("test_*.py")}
    ran = {item.path.name for item in session.items}
    session.config.stash[FULL_SUITE] = ran >= test_files and not session.config.option.keyword


FULL_SUITE = pytest.StashKey[bool]()


@pytest.fixture
def full_suite(request: pytest.FixtureRequest) -> bool:
    """True when this run collected every test of every test file."""
    return request.config.stash.get(FULL_SUITE, False)


@pytest.fixture(autouse=True)
def instant_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore still retries as configured, without sleeping between attempts."""
    from botocore.retries.standard import ExponentialBackoff

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def s3(aws: None) -> Any:
    import boto3

    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def config(s3: Any) -> Config:
    # Equal parts, as on a custom endpoint: test_push_path.py covers unequal parts.
    return Config(bucket=BUCKET, part_size=PART, max_concurrency=2, cache_size=0, equal_parts=True)


@pytest.fixture
def storage(config: Config) -> S3BlobStorage:
    return S3BlobStorage(config)


@pytest.fixture
def repo(storage: S3BlobStorage) -> Any:
    return storage.repository("library/app")


@pytest.fixture
def calls(storage: S3BlobStorage) -> S3Calls:
    return S3Calls(storage.client)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1, for other processes and real HTTP clients."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def server_env(moto_server: str) -> dict[str, str]:
    """S3BLOBS_* for a fresh bucket on the moto server (created now: an in-process
    mock_aws test that ran before may have reset the server's state)."""
    import boto3

    bucket = f"srv-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    return {
        "S3BLOBS_BUCKET": bucket,
        "S3BLOBS_ENDPOINT_URL": moto_server,
        "S3BLOBS_REGION": "us-east-1",
        "S3BLOBS_PART_SIZE": str(PART),
        "S3BLOBS_ADDRESSING_STYLE": "path",
    }


def s3_error(status: int, code: str) -> Any:
    """What S3 answers on failure, for a ``before-send`` hook to return instead of sending."""
    from botocore.awsrequest import AWSResponse

    class Raw:
        def stream(self, **_: Any) -> Iterator[bytes]:
            yield f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()

    return AWSResponse("https://s3.amazonaws.com", status, {}, Raw())


def all_keys(s3: Any) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return [item["Key"] for page in pages for item in page.get("Contents", ())]


def open_uploads(s3: Any) -> list[dict[str, Any]]:
    return list(s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []))
