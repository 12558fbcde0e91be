"""What a manifest PUT asks of S3: links listed together, entries taken from this
process's own proof where it has one, and nothing rewritten for a manifest that is
already there under its tag. Every saving still refuses what S3 says is missing."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from test_manifests import CONFIG, LAYER, OCI_MANIFEST, put, sha, upload
from werkzeug.test import Client

from conftest import BUCKET, S3Calls
from s3blobs import Config, S3BlobStorage
from s3blobs.digests import parse_digest
from s3blobs.registry import RegistryApp


def manifest_of(blobs: list[dict[str, Any]]) -> bytes:
    config, *layers = blobs
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG, **config},
        "layers": [{"mediaType": LAYER, **layer} for layer in layers],
    }
    return json.dumps(body).encode()


def pushed(client: Client, name: str, count: int) -> list[dict[str, Any]]:
    return [upload(client, name, os.urandom(100 + i)) for i in range(count)]


def test_blobs_linked_here_are_listed_once_and_their_entries_not_asked_for(
    storage: S3BlobStorage,
) -> None:
    client = Client(RegistryApp(storage))
    body = manifest_of(pushed(client, "r/app", 4))
    calls = S3Calls(storage.client)
    assert put(client, "r/app", "v1", body).status_code == 201
    assert calls.by_op() == {
        "HeadObject": 1,  # the revision: is this manifest here already?
        "ListObjectsV2": 1,  # the four links
        "PutObject": 3,  # the manifest's entry, its revision, the tag
    }


def test_blobs_another_process_linked_have_their_entries_checked(config: Config) -> None:
    body = manifest_of(pushed(Client(RegistryApp(S3BlobStorage(config))), "r/app", 4))
    storage = S3BlobStorage(config)
    calls = S3Calls(storage.client)
    assert put(Client(RegistryApp(storage)), "r/app", "v1", body).status_code == 201
    assert calls.by_op() == {"HeadObject": 1 + 4, "ListObjectsV2": 1, "PutObject": 3}


def test_an_entry_gone_under_its_link_is_refused(config: Config, s3: Any) -> None:
    blobs = pushed(Client(RegistryApp(S3BlobStorage(config))), "r/app", 3)
    gone = parse_digest(blobs[1]["digest"])
    s3.delete_object(Bucket=BUCKET, Key=S3BlobStorage(config).paths.blob(gone))  # as gc does
    response = put(Client(RegistryApp(S3BlobStorage(config))), "r/app", "v1", manifest_of(blobs))
    assert response.status_code == 400
    assert json.loads(response.data)["errors"][0]["detail"] == [str(gone)]


def test_a_link_another_process_deleted_is_refused_though_linked_here(
    storage: S3BlobStorage, config: Config
) -> None:
    client = Client(RegistryApp(storage))
    blobs = pushed(client, "r/app", 3)
    S3BlobStorage(config).repository("r/app").delete(blobs[2]["digest"])
    response = put(client, "r/app", "v1", manifest_of(blobs))
    assert response.status_code == 400
    assert json.loads(response.data)["errors"][0]["detail"] == [blobs[2]["digest"]]


def test_the_same_manifest_under_the_same_tag_writes_nothing(storage: S3BlobStorage) -> None:
    client = Client(RegistryApp(storage))
    body = manifest_of(pushed(client, "r/app", 3))
    first = put(client, "r/app", "v1", body)
    calls = S3Calls(storage.client)
    again = put(client, "r/app", "v1", body)
    assert again.status_code == 201
    assert again.headers["Docker-Content-Digest"] == first.headers["Docker-Content-Digest"]
    assert again.headers["Location"] == first.headers["Location"]
    assert calls.by_op() == {"HeadObject": 1, "GetObject": 1}  # the revision, the tag


def test_a_tag_is_moved_back_and_a_new_tag_written(storage: S3BlobStorage) -> None:
    client = Client(RegistryApp(storage))
    blobs = pushed(client, "r/app", 3)
    one, two = manifest_of(blobs), manifest_of(list(reversed(blobs)))
    for reference, body in (("v1", one), ("v1", two), ("v1", one), ("v2", one)):
        assert put(client, "r/app", reference, body).status_code == 201
    assert client.get("/v2/r/app/manifests/v1").data == one
    assert client.get("/v2/r/app/manifests/v2").data == one
    assert client.get(f"/v2/r/app/manifests/{sha(two)}").data == two


def test_a_digest_reference_is_written_again(storage: S3BlobStorage) -> None:
    """A revision pushed by digest has no tag to keep it: it is rewritten, so gc's
    grace counts from this push (--delete-untagged spares young revisions)."""
    client = Client(RegistryApp(storage))
    body = manifest_of(pushed(client, "r/app", 2))
    assert put(client, "r/app", sha(body), body).status_code == 201
    calls = S3Calls(storage.client)
    assert put(client, "r/app", sha(body), body).status_code == 201
    assert calls.by_op()["PutObject"] == 2  # the entry (refused: there already), the revision


@pytest.mark.parametrize("spread", ["together", "apart"])
def test_links_are_found_by_listing_a_large_repository(
    config: Config, s3: Any, spread: str
) -> None:
    """Among 2,500 other links, a page of 1,000 answers for the keys it covers; keys
    pages apart take one listing each, never more than one per key."""
    writer = S3BlobStorage(config)
    blobs = pushed(Client(RegistryApp(writer)), "r/big", 3)
    digests = [sha(os.urandom(8)) for _ in range(2_500)]
    if spread == "together":  # the three come first in the listing, the others after
        digests = [d for d in digests if d > max(blob["digest"] for blob in blobs)]
    for digest in digests:
        s3.put_object(Bucket=BUCKET, Key=writer.paths.link("r/big", parse_digest(digest)), Body=b"")
    storage = S3BlobStorage(config)
    calls = S3Calls(storage.client)
    body = manifest_of(blobs)
    assert put(Client(RegistryApp(storage)), "r/big", "v1", body).status_code == 201
    listings = calls.by_op()["ListObjectsV2"]
    assert listings == 1 if spread == "together" else 1 <= listings <= 3
    storage.repository("r/big").delete(blobs[1]["digest"])
    response = put(Client(RegistryApp(storage)), "r/big", "v2", manifest_of(blobs[::-1]))
    assert json.loads(response.data)["errors"][0]["detail"] == [blobs[1]["digest"]]


def test_a_manifest_mounted_into_another_repository_is_stored_without_reading_back(
    storage: S3BlobStorage,
) -> None:
    client = Client(RegistryApp(storage))
    blobs = pushed(client, "r/one", 3)
    body = manifest_of(blobs)
    assert put(client, "r/one", "v1", body).status_code == 201
    for blob in blobs:
        query = {"mount": blob["digest"], "from": "r/one"}
        assert client.post("/v2/r/two/blobs/uploads/", query_string=query).status_code == 201
    calls = S3Calls(storage.client)
    assert put(client, "r/two", "v1", body).status_code == 201
    # the manifest's entry is there already (refused, 412): not read back
    assert calls.by_op() == {"HeadObject": 1, "ListObjectsV2": 1, "PutObject": 3}
    assert client.get("/v2/r/two/manifests/v1").data == body
