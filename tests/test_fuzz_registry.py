"""Property-based fuzzing of the whole WSGI pipeline (``make_app``), open and with auth.

Generated paths, methods, headers, query strings and bodies (JSON values, manifest
look-alikes, raw bytes) against a healthy S3 (in-process moto): no answer is a 5xx,
every error has the spec's JSON body, every answer carries the security headers, and
nothing is ever written outside the configured prefix.
"""

from __future__ import annotations

import base64
import hashlib
import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from authutil import basic, mocked_bucket, write_htpasswd
from conftest import BUCKET, PART
from s3blobs import Config, S3BlobStorage
from s3blobs.registry import make_app
from s3blobs.registry.auth.acl import AclPolicy
from s3blobs.registry.auth.htpasswd import BasicAuthenticator, HtpasswdFile
from s3blobs.registry.auth.settings import SecuritySettings

PREFIX = "fuzz/prefix"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
BLOB = b"fuzz blob"
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
USER = basic("fuzzer", "fuzz-password")


class Target:
    """The registry under test, with something in it for requests to find."""

    def __init__(self, client: Any, tmp: Path) -> None:
        config = Config(bucket=BUCKET, prefix=PREFIX, part_size=PART, cache_size=0)
        self.storage = S3BlobStorage(config, client=client, check_bucket=False)
        import boto3

        self.s3 = boto3.client("s3", region_name="us-east-1")  # the test's own listings
        repo = self.storage.repository("fz/app")
        config_blob = repo.put(CONFIG, b"{}")
        repo.put(LAYER, BLOB)
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config_blob.to_dict(),
                "layers": [{"mediaType": LAYER, "size": len(BLOB), "digest": BLOB_DIGEST}],
            }
        ).encode()
        self.manifest_digest = "sha256:" + hashlib.sha256(self.manifest).hexdigest()
        response = Client(make_app(self.storage)).put(
            "/v2/fz/app/manifests/v1", data=self.manifest, content_type=OCI_MANIFEST
        )
        assert response.status_code == 201
        writer = repo.create()
        writer.close()
        self.upload_id = writer.id
        passwords = HtpasswdFile(write_htpasswd(tmp / "htpasswd", {"fuzzer": "fuzz-password"}))
        acl = AclPolicy.from_dict(
            {
                "rule": [
                    {
                        "repositories": ["fz/**"],
                        "users": ["*"],
                        "actions": ["pull", "push", "delete"],
                    }
                ]
            }
        )
        self.apps = {
            "open": Client(make_app(self.storage)),
            "auth": Client(
                make_app(
                    self.storage, SecuritySettings("htpasswd", BasicAuthenticator(passwords), acl)
                )
            ),
        }


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with mocked_bucket() as client:
        yield Target(client, tmp_path_factory.mktemp("fuzz"))


segment = st.text(alphabet=string.ascii_letters + string.digits + "._-:%@+~ ", max_size=12)
names = st.one_of(
    st.sampled_from(["fz/app", "fz/other", "a", "UPPER/x", "a//b", "-x", "_catalog", "../.."]),
    st.lists(segment, min_size=1, max_size=4).map("/".join),
)
digests = st.one_of(
    st.sampled_from(
        [BLOB_DIGEST, "sha256:zz", "sha512:" + "a" * 128, "md5:abc", "sha256:" + "A" * 64]
    ),
    segment,
)
text = st.text(max_size=24)
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)
media_types = st.sampled_from(
    [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, CONFIG, LAYER, "text/html", "application/json"]
)
descriptors = st.fixed_dictionaries(
    {
        "mediaType": st.one_of(media_types, json_values),
        "size": st.one_of(st.integers(-5, 10**6), json_values),
        "digest": st.one_of(digests, json_values),
    },
    optional={
        "urls": st.one_of(st.lists(st.one_of(text, json_values), max_size=2), json_values),
        "annotations": st.one_of(st.dictionaries(text, text, max_size=2), json_values),
        "platform": json_values,
    },
)
manifests = st.fixed_dictionaries(
    {"schemaVersion": st.one_of(st.just(2), json_values)},
    optional={
        "mediaType": st.one_of(media_types, json_values),
        "config": st.one_of(descriptors, json_values),
        "layers": st.one_of(st.lists(descriptors, max_size=3), json_values),
        "manifests": st.one_of(st.lists(descriptors, max_size=3), json_values),
        "subject": st.one_of(descriptors, json_values),
        "artifactType": st.one_of(media_types, json_values),
        "annotations": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda value: json.dumps(value).encode()),
    manifests.map(lambda value: json.dumps(value).encode()),
)
queries = st.dictionaries(
    st.sampled_from(["n", "last", "digest", "mount", "from", "digest-algorithm", "artifactType"]),
    st.one_of(text, digests, names, st.integers().map(str)),
    max_size=3,
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": st.one_of(media_types, header_text),
        "Content-Range": st.one_of(
            st.sampled_from(["0-0", "0-8", "bytes=0-5", "5-2"]), header_text
        ),
        "Authorization": st.one_of(
            st.just(USER),
            header_text,
            st.binary(max_size=20).map(lambda b: "Basic " + base64.b64encode(b).decode()),
            st.just("Bearer " + "a" * 30),
        ),
        "Range": header_text,
        "If-None-Match": header_text,
        "Content-Length": st.one_of(st.sampled_from(["-1", "abc", "0", "5", "99"]), header_text),
    },
)


@st.composite
def paths(draw: st.DrawFn, target: Target) -> str:
    tail = draw(
        st.one_of(
            st.just("blobs/uploads/"),
            st.one_of(st.just(target.upload_id), segment).map(lambda u: f"blobs/uploads/{u}"),
            digests.map(lambda d: f"blobs/{d}"),
            st.one_of(st.sampled_from(["v1", target.manifest_digest]), segment).map(
                lambda r: f"manifests/{r}"
            ),
            st.just("tags/list"),
            digests.map(lambda d: f"referrers/{d}"),
            segment,
        )
    )
    return draw(
        st.one_of(
            names.map(lambda name: f"/v2/{name}/{tail}"),
            st.sampled_from(["/v2/", "/v2", "/v2/_catalog", "/", "/v3/x"]),
            text.map(lambda t: "/" + t),
        )
    )


@settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_5xx_json_errors_and_nothing_outside_the_prefix(
    target: Target, data: st.DataObject
) -> None:
    app = data.draw(st.sampled_from(sorted(target.apps)), label="app")
    method = data.draw(
        st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    )
    path = data.draw(paths(target), label="path")
    query = data.draw(queries, label="query")
    sent = data.draw(headers, label="headers")
    body = data.draw(bodies, label="body")
    overrides: dict[str, Any] = {
        # WSGI hands the path over as latin-1 text of the bytes the client sent.
        "PATH_INFO": path.encode("utf-8").decode("latin-1"),
    }
    if "Content-Length" in sent:
        overrides["CONTENT_LENGTH"] = sent.pop("Content-Length")
    response = target.apps[app].open(
        "/", method=method, query_string=query, headers=sent, data=body, environ_overrides=overrides
    )
    assert response.status_code < 500, (response.status_code, response.data)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    if response.status_code >= 400 and method != "HEAD":
        assert response.headers["Content-Type"] == "application/json", response.data
        error = json.loads(response.data)["errors"][0]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)
    pages = target.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    keys = [item["Key"] for page in pages for item in page.get("Contents", ())]
    assert all(key.startswith(PREFIX + "/") for key in keys), keys
    uploads = target.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    assert all(upload["Key"].startswith(PREFIX + "/") for upload in uploads)
