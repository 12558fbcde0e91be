"""Manifests, tags and referrers through the registry app."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from werkzeug.test import Client

from conftest import S3Calls
from s3blobs import Config, S3BlobStorage
from s3blobs.registry import RegistryApp

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"


def sha(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


@pytest.fixture
def storage(config: Config) -> S3BlobStorage:
    return S3BlobStorage(config)


@pytest.fixture
def client(storage: S3BlobStorage) -> Client:
    return Client(RegistryApp(storage))


def upload(client: Client, name: str, data: bytes) -> dict[str, Any]:
    response = client.post(
        f"/v2/{name}/blobs/uploads/", query_string={"digest": sha(data)}, data=data
    )
    assert response.status_code == 201
    return {"size": len(data), "digest": sha(data)}


def image(client: Client, name: str, media_type: str = OCI_MANIFEST, **extra: Any) -> bytes:
    config = {"mediaType": CONFIG, **upload(client, name, b'{"os":"linux"}')}
    layer = {"mediaType": LAYER, **upload(client, name, b"layer bytes")}
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config,
        "layers": [layer],
        **extra,
    }
    return json.dumps(manifest, indent=1).encode()


def put(
    client: Client, name: str, reference: str, body: bytes, media_type: str = OCI_MANIFEST
) -> Any:
    return client.put(f"/v2/{name}/manifests/{reference}", data=body, content_type=media_type)


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_put_get_head_by_tag_and_digest(client: Client, media_type: str) -> None:
    body = image(client, "m/app", media_type)
    digest = sha(body)
    response = put(client, "m/app", "v1", body, media_type)
    assert response.status_code == 201
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.headers["Location"] == f"/v2/m/app/manifests/{digest}"
    for reference in ("v1", digest):
        got = client.get(f"/v2/m/app/manifests/{reference}")
        assert got.status_code == 200 and got.data == body  # the exact bytes
        assert got.headers["Content-Type"] == media_type
        assert got.headers["Docker-Content-Digest"] == digest
        head = client.head(f"/v2/m/app/manifests/{reference}")
        assert head.status_code == 200 and head.data == b""
        assert head.headers["Content-Length"] == str(len(body))


def test_put_by_sha512_digest(client: Client) -> None:
    body = image(client, "m/app")
    digest = sha(body, "sha512")
    assert put(client, "m/app", digest, body).status_code == 201
    assert client.get(f"/v2/m/app/manifests/{digest}").data == body


def test_manifest_with_missing_blob_is_refused(client: Client) -> None:
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG, **upload(client, "m/app", b"{}")},
            "layers": [{"mediaType": LAYER, "size": 3, "digest": sha(b"never pushed")}],
        }
    ).encode()
    response = put(client, "m/app", "v1", body)
    assert response.status_code == 400
    assert json.loads(response.data)["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    # a blob pushed to another repository does not count either
    other = image(client, "m/other")
    response = put(client, "m/app", "v2", other)
    assert json.loads(response.data)["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"


def test_blob_check_asks_s3_not_the_cache(config: Config) -> None:
    from s3blobs import DescriptorCacheFactory

    storage = S3BlobStorage(config, DescriptorCacheFactory(maxsize=100, ttl=3600))
    client = Client(RegistryApp(storage))
    body = image(client, "m/app")
    layer = json.loads(body)["layers"][0]["digest"]
    S3BlobStorage(config).repository("m/app").delete(layer)  # another process unlinks it
    response = put(client, "m/app", "v1", body)
    assert json.loads(response.data)["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "MANIFEST_INVALID"),
        (b"[1, 2]", "MANIFEST_INVALID"),
        (
            json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "layers": []}).encode(),
            "MANIFEST_INVALID",
        ),
        (json.dumps({"schemaVersion": 2, "layers": [{"size": -1}]}).encode(), "MANIFEST_INVALID"),
    ],
)
def test_invalid_manifests(client: Client, body: bytes, code: str) -> None:
    response = put(client, "m/app", "v1", body)
    assert response.status_code == 400
    assert json.loads(response.data)["errors"][0]["code"] == code


def test_digest_reference_must_match(client: Client) -> None:
    body = image(client, "m/app")
    response = put(client, "m/app", sha(b"something else"), body)
    assert response.status_code == 400
    assert json.loads(response.data)["errors"][0]["code"] == "DIGEST_INVALID"


def test_unknown_manifest(client: Client) -> None:
    for reference in ("nope", sha(b"nope")):
        response = client.get(f"/v2/m/app/manifests/{reference}")
        assert response.status_code == 404
        assert json.loads(response.data)["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_delete_by_tag_then_by_digest(client: Client) -> None:
    body = image(client, "m/app")
    digest = sha(body)
    put(client, "m/app", "v1", body)
    put(client, "m/app", "v2", body)
    assert client.delete("/v2/m/app/manifests/v1").status_code == 202
    assert client.get("/v2/m/app/manifests/v1").status_code == 404
    assert client.get("/v2/m/app/manifests/v2").status_code == 200
    assert client.delete(f"/v2/m/app/manifests/{digest}").status_code == 202
    assert client.get(f"/v2/m/app/manifests/{digest}").status_code == 404
    assert client.get("/v2/m/app/manifests/v2").status_code == 404  # its tags went with it
    assert json.loads(client.get("/v2/m/app/tags/list").data)["tags"] == []
    assert client.delete("/v2/m/app/manifests/v1").status_code == 404


def test_index_needs_its_manifests(client: Client) -> None:
    child = image(client, "m/app")
    put(client, "m/app", sha(child), child)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "size": len(child), "digest": sha(child)}],
        }
    ).encode()
    assert put(client, "m/app", "multi", index, OCI_INDEX).status_code == 201
    missing = index.replace(sha(child).encode(), sha(b"other").encode())
    response = put(client, "m/app", "broken", missing, OCI_INDEX)
    assert response.status_code == 400


def test_tags_pagination(client: Client) -> None:
    body = image(client, "m/app")
    tags = sorted(["latest", "v1", "v1.1", "v2", "alpha", "beta", "Z-upper"])
    for tag in tags:
        assert put(client, "m/app", tag, body).status_code == 201
    listed = json.loads(client.get("/v2/m/app/tags/list").data)
    assert listed == {"name": "m/app", "tags": tags}
    page = client.get("/v2/m/app/tags/list", query_string={"n": 3})
    assert json.loads(page.data)["tags"] == tags[:3]
    assert page.headers["Link"] == f'</v2/m/app/tags/list?n=3&last={tags[2]}>; rel="next"'
    rest = client.get("/v2/m/app/tags/list", query_string={"n": 3, "last": tags[2]})
    assert json.loads(rest.data)["tags"] == tags[3:6]
    tail = client.get("/v2/m/app/tags/list", query_string={"n": 10, "last": tags[5]})
    assert json.loads(tail.data)["tags"] == tags[6:] and "Link" not in tail.headers


def test_tags_of_unknown_repository(client: Client) -> None:
    response = client.get("/v2/never/pushed/tags/list")
    assert response.status_code == 404
    assert json.loads(response.data)["errors"][0]["code"] == "NAME_UNKNOWN"


def test_referrers(client: Client) -> None:
    subject_body = image(client, "m/app")
    subject = sha(subject_body)
    put(client, "m/app", "v1", subject_body)
    empty = {"mediaType": "application/vnd.oci.empty.v1+json", **upload(client, "m/app", b"{}")}
    referrers = {}
    for artifact_type in ("application/vnd.example.sbom", "application/vnd.example.signature"):
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": artifact_type,
                "config": empty,
                "layers": [empty],
                "subject": {
                    "mediaType": OCI_MANIFEST,
                    "size": len(subject_body),
                    "digest": subject,
                },
                "annotations": {"kind": artifact_type},
            }
        ).encode()
        response = put(client, "m/app", sha(body), body)
        assert response.status_code == 201
        assert response.headers["OCI-Subject"] == subject
        referrers[sha(body)] = artifact_type
    listed = client.get(f"/v2/m/app/referrers/{subject}")
    assert listed.status_code == 200 and listed.headers["Content-Type"] == OCI_INDEX
    index = json.loads(listed.data)
    assert {m["digest"]: m["artifactType"] for m in index["manifests"]} == referrers
    assert all(m["annotations"]["kind"] == m["artifactType"] for m in index["manifests"])
    only = client.get(
        f"/v2/m/app/referrers/{subject}",
        query_string={"artifactType": "application/vnd.example.sbom"},
    )
    assert only.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["artifactType"] for m in json.loads(only.data)["manifests"]] == [
        "application/vnd.example.sbom"
    ]
    none = json.loads(client.get(f"/v2/m/app/referrers/{sha(b'no subject')}").data)
    assert none["manifests"] == []
    bad = client.get("/v2/m/app/referrers/sha256:zz")
    assert bad.status_code == 400


def test_warm_manifest_get_is_two_requests(client: Client, storage: S3BlobStorage) -> None:
    body = image(client, "m/app")
    put(client, "m/app", "v1", body)
    calls = S3Calls(storage.client)
    assert client.get("/v2/m/app/manifests/v1").data == body
    assert calls.ops == ["GetObject", "HeadObject"]  # the tag, the revision link


@pytest.mark.parametrize("reference", [".INVALID_MANIFEST_NAME", "sha256:totallywrong", "a%20b"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
def test_a_reference_that_is_neither_tag_nor_digest_is_unknown(
    client: Client, reference: str, method: str
) -> None:
    """As the OCI conformance suite expects: 404 MANIFEST_UNKNOWN, not 400."""
    response = client.open(f"/v2/library/app/manifests/{reference}", method=method)
    assert response.status_code == 404
    if method != "HEAD":
        assert json.loads(response.data)["errors"][0]["code"] == "MANIFEST_UNKNOWN"
