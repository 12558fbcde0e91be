"""Each hostile input found by fuzzing gets a JSON 4xx, never a 500 or 503, and a refused
manifest leaves nothing behind in S3."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.test import Client, TestResponse

from authutil import isolated_storage, keys_of, mocked_bucket
from s3blobs import S3BlobStorage
from s3blobs.registry import make_app
from s3blobs.registry.validation import MAX_DEPTH

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
NAME = "hostile/app"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def shared_s3() -> Iterator[Any]:
    with mocked_bucket() as client:
        yield client


@pytest.fixture
def storage(shared_s3: Any) -> S3BlobStorage:
    return isolated_storage(shared_s3)


@pytest.fixture
def client(storage: S3BlobStorage) -> Client:
    return Client(make_app(storage))


@pytest.fixture
def blobs(storage: S3BlobStorage) -> dict[str, Any]:
    """A config and a layer in the repository: manifests below are valid but for one flaw."""
    repo = storage.repository(NAME)
    config = repo.put(CONFIG, b'{"os":"linux"}')
    layer = repo.put(LAYER, b"layer")
    return {
        "config": {"mediaType": CONFIG, "size": config.size, "digest": config.digest},
        "layer": {"mediaType": LAYER, "size": layer.size, "digest": layer.digest},
    }


def json_4xx(response: TestResponse, code: str = "MANIFEST_INVALID") -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.data)
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.data)["errors"][0]["code"] == code


def put(
    client: Client, body: bytes, media_type: str = OCI_MANIFEST, ref: str = "v1"
) -> TestResponse:
    return client.put(f"/v2/{NAME}/manifests/{ref}", data=body, content_type=media_type)


def image(blobs: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": blobs["config"],
        "layers": [blobs["layer"]],
        **fields,
    }


def test_a_valid_manifest_still_goes_in(client: Client, blobs: dict[str, Any]) -> None:
    assert put(client, json.dumps(image(blobs)).encode()).status_code == 201


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 100_000, b"[" * 990 + b"]" * 990])
def test_nesting_bombs(client: Client, body: bytes) -> None:
    json_4xx(put(client, body))


def test_nesting_just_past_the_bound(client: Client, blobs: dict[str, Any]) -> None:
    deep: Any = "x"
    for _ in range(MAX_DEPTH):
        deep = {"k": deep}
    json_4xx(put(client, json.dumps(image(blobs, annotations={"a": "b"}, extra=deep)).encode()))


@pytest.mark.parametrize(
    "media_type", [[OCI_MANIFEST], 7, None, OCI_MANIFEST + "\r\nX-Injected: 1", "text/html"]
)
def test_media_type_field_that_is_not_a_manifest_type(
    client: Client, blobs: dict[str, Any], media_type: Any
) -> None:
    body = json.dumps(image(blobs, mediaType=media_type)).encode()
    for content_type in ("", OCI_MANIFEST):
        json_4xx(put(client, body, content_type))


@pytest.mark.parametrize(
    "layer",
    [
        {"mediaType": 5, "size": 1, "digest": sha(b"x"), "urls": ["https://example.com/x"]},
        {"mediaType": ["a/b"], "size": 1, "digest": sha(b"x"), "urls": ["https://example.com/x"]},
        {
            "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "size": 1,
            "digest": sha(b"x"),
            "urls": "https://example.com/x",
        },
        {"mediaType": LAYER, "size": 1, "digest": sha(b"x"), "urls": [7]},
        {"mediaType": LAYER, "size": 1, "digest": sha(b"x"), "urls": ["javascript:alert(1)"]},
        {"mediaType": LAYER, "size": True, "digest": sha(b"x")},
        {"mediaType": LAYER, "size": 1.5, "digest": sha(b"x")},
        {"mediaType": LAYER, "size": 1, "digest": ["sha256:abc"]},
        {"mediaType": LAYER, "size": 1, "digest": sha(b"x"), "annotations": {"a": 1}},
        {"mediaType": LAYER, "size": 1, "digest": sha(b"x"), "platform": "linux"},
        "not a descriptor",
        None,
    ],
)
def test_malformed_layers(client: Client, blobs: dict[str, Any], layer: Any) -> None:
    json_4xx(put(client, json.dumps(image(blobs, layers=[layer])).encode()))


@pytest.mark.parametrize(
    "fields",
    [
        {"config": None},
        {"layers": None},
        {"schemaVersion": 1},
        {"schemaVersion": "2"},
        {"subject": "sha256:abc"},
        {"artifactType": 3},
        {"annotations": ["a"]},
        {"manifests": []},  # an image manifest has no manifests
    ],
)
def test_malformed_image_manifests(
    client: Client, blobs: dict[str, Any], fields: dict[str, Any]
) -> None:
    json_4xx(put(client, json.dumps(image(blobs, **fields)).encode()))


def test_index_with_subject_and_null_config_writes_nothing(
    client: Client, storage: S3BlobStorage, blobs: dict[str, Any]
) -> None:
    child = json.dumps(image(blobs)).encode()
    assert put(client, child, ref=sha(child)).status_code == 201
    before = keys_of(storage)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "size": len(child), "digest": sha(child)}],
        "subject": {"mediaType": OCI_MANIFEST, "size": len(child), "digest": sha(child)},
        "config": None,
    }
    body = json.dumps(index).encode()
    json_4xx(put(client, body, OCI_INDEX, ref="multi"))
    assert keys_of(storage) == before  # no manifest, revision, tag or referrer
    assert client.get(f"/v2/{NAME}/manifests/multi").status_code == 404
    # Without the stray config, the same index with its subject goes in and is listed.
    del index["config"]
    body = json.dumps(index).encode()
    assert put(client, body, OCI_INDEX, ref="multi").status_code == 201
    referrers = json.loads(client.get(f"/v2/{NAME}/referrers/{sha(child)}").data)["manifests"]
    assert [r["digest"] for r in referrers] == [sha(body)]


@pytest.mark.parametrize("content_type", ["text/html", "application/json", "image/svg+xml", "x"])
def test_only_manifest_media_types_are_accepted(
    client: Client, blobs: dict[str, Any], content_type: str
) -> None:
    body = image(blobs)
    del body["mediaType"]
    json_4xx(put(client, json.dumps(body).encode(), content_type))


@pytest.mark.parametrize(
    ("media_type", "body"),
    [
        (DOCKER_MANIFEST, {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST}),
        (DOCKER_LIST, {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": "x"}),
        (OCI_INDEX, {"schemaVersion": 2, "manifests": [], "layers": []}),
    ],
)
def test_each_type_checks_its_shape(
    client: Client, blobs: dict[str, Any], media_type: str, body: dict[str, Any]
) -> None:
    json_4xx(put(client, json.dumps(body).encode(), media_type))


def test_a_manifest_stored_as_html_is_never_served_as_html(
    client: Client, storage: S3BlobStorage
) -> None:
    # What an older release let in: a "manifest" whose media type is text/html.
    body = b"<script>alert(document.domain)</script>"
    descriptor = storage.blobs.put("text/html", body)
    from s3blobs.digests import parse_digest

    storage.client.put_object(
        Bucket=storage.config.bucket,
        Key=storage.paths.revision(NAME, parse_digest(descriptor.digest)),
        Body=b"",
    )
    response = client.get(f"/v2/{NAME}/manifests/{descriptor.digest}")
    assert response.status_code == 200 and response.data == body
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize("n", ["-1", "-2", "abc", "1e3", " 5", ""])
def test_tags_n_must_be_a_number(client: Client, blobs: dict[str, Any], n: str) -> None:
    json_4xx(
        client.get(f"/v2/{NAME}/tags/list", query_string={"n": n}), "PAGINATION_NUMBER_INVALID"
    )


def test_tags_huge_n_is_capped(client: Client, blobs: dict[str, Any]) -> None:
    put(client, json.dumps(image(blobs)).encode())
    response = client.get(f"/v2/{NAME}/tags/list", query_string={"n": str(10**30)})
    assert response.status_code == 200 and json.loads(response.data)["tags"] == ["v1"]


@pytest.mark.parametrize("last", ["\x00", "a/b", "../x", "x" * 300, "é"])
def test_tags_last_must_be_a_tag(client: Client, blobs: dict[str, Any], last: str) -> None:
    json_4xx(client.get(f"/v2/{NAME}/tags/list", query_string={"last": last}), "TAG_INVALID")


@pytest.mark.parametrize("length", ["-1", "abc", "1.5", "+3", "0x10", "9" * 30])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", f"/v2/{NAME}/blobs/uploads/abc"),
        ("PUT", f"/v2/{NAME}/manifests/v1"),
        ("POST", f"/v2/{NAME}/blobs/uploads/?digest={sha(b'')}"),
    ],
)
def test_content_length_must_be_a_number(
    client: Client, storage: S3BlobStorage, method: str, path: str, length: str
) -> None:
    response = client.open(
        path, method=method, data=b"", environ_overrides={"CONTENT_LENGTH": length}
    )
    json_4xx(response, "SIZE_INVALID")
    assert keys_of(storage) == []  # nothing was taken as "0 bytes"
