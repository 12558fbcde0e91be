"""The registry app against the OCI distribution spec (the conformance suite's checks)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Any

import pytest
from werkzeug.test import Client, TestResponse

from conftest import PART, S3Calls, all_keys, open_uploads, s3_error
from s3blobs import Config, S3BlobStorage
from s3blobs.registry import RegistryApp

ALGORITHMS = ["sha256", "sha512"]
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


@pytest.fixture
def redirecting(config: Config) -> Client:
    return Client(RegistryApp(S3BlobStorage(config)))


@pytest.fixture
def client(config: Config) -> Client:
    """Redirects off: blobs are streamed, so Range and If-None-Match can be checked."""
    storage = S3BlobStorage(Config(**{**config.__dict__, "redirect": False}))
    return Client(RegistryApp(storage))


def error_code(response: TestResponse) -> str:
    return str(json.loads(response.data)["errors"][0]["code"])


def start(client: Client, name: str = "conf/app", **query: str) -> str:
    response = client.post(f"/v2/{name}/blobs/uploads/", query_string=query)
    assert response.status_code == 202, response.data
    assert response.headers["Location"].startswith(f"/v2/{name}/blobs/uploads/")
    return response.headers["Location"]


def chunked_push(
    client: Client, data: bytes, algorithm: str, chunk: int, name: str = "conf/app"
) -> TestResponse:
    location = start(client, name, **{"digest-algorithm": algorithm})
    for pos in range(0, len(data), chunk):
        piece = data[pos : pos + chunk]
        response = client.patch(
            location,
            data=piece,
            headers={
                "Content-Range": f"{pos}-{pos + len(piece) - 1}",
                "Content-Type": "application/octet-stream",
            },
        )
        assert response.status_code == 202, response.data
        assert response.headers["Range"] == f"0-{pos + len(piece) - 1}"
        location = response.headers["Location"]
    return client.put(location, query_string={"digest": digest_of(data, algorithm)})


def push(client: Client, flow: str, data: bytes, algorithm: str, name: str = "conf/app") -> str:
    digest = digest_of(data, algorithm)
    if flow == "post-put":
        location = start(client, name)
        response = client.put(location, query_string={"digest": digest}, data=data)
    elif flow == "monolithic":
        response = client.post(
            f"/v2/{name}/blobs/uploads/", query_string={"digest": digest}, data=data
        )
    elif flow == "chunked":
        response = chunked_push(client, data, algorithm, max(1, len(data) // 3 + 1), name)
    elif flow == "streamed":
        location = start(client, name, **{"digest-algorithm": algorithm})
        # No Content-Length, no Content-Range: a streamed body, as a WSGI server
        # presents chunked transfer encoding (wsgi.input_terminated).
        response = client.patch(
            location,
            input_stream=io.BytesIO(data),
            headers={"Transfer-Encoding": "chunked"},
            environ_overrides={"wsgi.input_terminated": True},
        )
        assert response.status_code == 202
        response = client.put(response.headers["Location"], query_string={"digest": digest})
    else:
        raise AssertionError(flow)
    assert response.status_code == 201, response.data
    assert response.headers["Location"] == f"/v2/{name}/blobs/{digest}"
    assert response.headers["Docker-Content-Digest"] == digest
    return digest


def test_base(client: Client) -> None:
    response = client.get("/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_missing_blob(client: Client, algorithm: str) -> None:
    digest = digest_of(b"missing", algorithm)
    response = client.get(f"/v2/conf/app/blobs/{digest}")
    assert response.status_code == 404 and error_code(response) == "BLOB_UNKNOWN"
    head = client.head(f"/v2/conf/app/blobs/{digest}")
    assert head.status_code == 404 and head.data == b""


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("flow", ["post-put", "monolithic", "chunked", "streamed"])
def test_push_then_head_get_delete(client: Client, flow: str, algorithm: str, s3: Any) -> None:
    data = os.urandom(3000)
    digest = push(client, flow, data, algorithm)
    head = client.head(f"/v2/conf/app/blobs/{digest}")
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Length"] == "3000"
    assert head.headers["Docker-Content-Digest"] == digest
    got = client.get(f"/v2/conf/app/blobs/{digest}")
    assert got.status_code == 200 and got.data == data
    assert client.delete(f"/v2/conf/app/blobs/{digest}").status_code == 202
    assert client.get(f"/v2/conf/app/blobs/{digest}").status_code == 404
    assert open_uploads(s3) == [] and not [k for k in all_keys(s3) if k.startswith("_uploads/")]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_large_blob_push_in_parts(client: Client, algorithm: str) -> None:
    data = os.urandom(PART * 2 + 100)
    digest = push(client, "streamed", data, algorithm)
    assert client.get(f"/v2/conf/app/blobs/{digest}").data == data


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_get_redirects_to_a_presigned_url(redirecting: Client, algorithm: str) -> None:
    digest = push(redirecting, "monolithic", b"redirect me", algorithm)
    response = redirecting.get(f"/v2/conf/app/blobs/{digest}")
    assert response.status_code == 307
    assert "X-Amz-Signature=" in response.headers["Location"]
    assert "X-Amz-Expires=1200" in response.headers["Location"]
    assert response.headers["Docker-Content-Digest"] == digest
    head = redirecting.head(f"/v2/conf/app/blobs/{digest}")
    assert head.status_code == 200 and "Location" not in head.headers
    assert head.headers["Content-Length"] == "11" and head.headers["ETag"] == f'"{digest}"'


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_chunked_upload_of_3_min_minus_5(client: Client, algorithm: str) -> None:
    data = os.urandom(3 * 1024 - 5)
    response = chunked_push(client, data, algorithm, 1024)
    assert response.status_code == 201
    assert client.get(response.headers["Location"]).data == data


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_out_of_order_and_overlapping_chunks(client: Client, algorithm: str) -> None:
    location = start(client, **{"digest-algorithm": algorithm})
    first = client.patch(location, data=b"a" * 1024, headers={"Content-Range": "0-1023"})
    assert first.status_code == 202
    location = first.headers["Location"]
    for bad in ("2048-3071", "512-1535", "0-1023"):  # a gap, an overlap, a repeat
        response = client.patch(location, data=b"b" * 1024, headers={"Content-Range": bad})
        assert response.status_code == 416, bad
        assert response.headers["Range"] == "0-1023"
    status = client.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-1023"
    assert status.headers["Location"] == location
    ok = client.patch(location, data=b"b" * 1024, headers={"Content-Range": "1024-2047"})
    assert ok.status_code == 202 and ok.headers["Range"] == "0-2047"
    done = client.put(
        ok.headers["Location"],
        query_string={"digest": digest_of(b"a" * 1024 + b"b" * 1024, algorithm)},
    )
    assert done.status_code == 201


def test_upload_status_and_delete(client: Client, s3: Any) -> None:
    location = start(client)
    client.patch(location, data=b"12345")
    status = client.get(location)
    assert status.status_code == 204 and status.headers["Range"] == "0-4"
    assert client.delete(location).status_code == 204
    gone = client.get(location)
    assert gone.status_code == 404 and error_code(gone) == "BLOB_UPLOAD_UNKNOWN"
    assert client.delete(location).status_code == 404
    assert open_uploads(s3) == []


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_mount(client: Client, algorithm: str) -> None:
    digest = push(client, "monolithic", b"shared layer", algorithm, name="source/app")
    response = client.post(
        "/v2/target/app/blobs/uploads/", query_string={"mount": digest, "from": "source/app"}
    )
    assert response.status_code == 201
    assert response.headers["Location"] == f"/v2/target/app/blobs/{digest}"
    assert client.get(f"/v2/target/app/blobs/{digest}").data == b"shared layer"
    missing = digest_of(b"not there", algorithm)
    fallback = client.post(
        "/v2/target/app/blobs/uploads/", query_string={"mount": missing, "from": "source/app"}
    )
    assert fallback.status_code == 202
    assert "/blobs/uploads/" in fallback.headers["Location"]
    malformed = client.post(
        "/v2/target/app/blobs/uploads/", query_string={"mount": "sha256:zz", "from": "../x"}
    )
    assert malformed.status_code == 202  # a malformed mount starts an upload, as the spec allows


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_range_reads(client: Client, algorithm: str) -> None:
    data = os.urandom(3 * 1024 - 5)
    digest = push(client, "monolithic", data, algorithm)
    url = f"/v2/conf/app/blobs/{digest}"
    size = len(data)
    for header, start, stop in (
        ("500-1499", 500, 1500),
        ("500-", 500, size),
        ("-500", size - 500, size),
        ("2000-5000", 2000, size),
    ):
        response = client.get(url, headers={"Range": f"bytes={header}"})
        assert response.status_code == 206, header
        assert response.data == data[start:stop]
        assert response.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{size}"
    for header in ("500-0", "5000-10000"):
        response = client.get(url, headers={"Range": f"bytes={header}"})
        assert response.status_code == 416, header
        assert response.headers["Content-Range"] == f"bytes */{size}"


def test_if_none_match(client: Client) -> None:
    digest = push(client, "monolithic", b"cached by the client", "sha256")
    response = client.get(f"/v2/conf/app/blobs/{digest}", headers={"If-None-Match": f'"{digest}"'})
    assert response.status_code == 304 and response.data == b""
    other = client.get(f"/v2/conf/app/blobs/{digest}", headers={"If-None-Match": '"sha256:other"'})
    assert other.status_code == 200


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("data", [b"", b"{}"], ids=["empty", "braces"])
def test_empty_and_tiny_blobs(client: Client, algorithm: str, data: bytes) -> None:
    for flow in ("post-put", "monolithic", "streamed"):
        digest = push(client, flow, data, algorithm)
        head = client.head(f"/v2/conf/app/blobs/{digest}")
        assert head.headers["Content-Length"] == str(len(data))
        assert client.get(f"/v2/conf/app/blobs/{digest}").data == data


MALFORMED = [
    "sha256:" + "z" * 64,
    "sha256:" + "a" * 63,
    "sha256:" + "A" * 64,
    "sha512:" + "a" * 64,
    "nonsense",
]


@pytest.mark.parametrize("digest", MALFORMED)
def test_malformed_digests(client: Client, digest: str) -> None:
    get = client.get(f"/v2/conf/app/blobs/{digest}")
    assert get.status_code == 400 and error_code(get) == "DIGEST_INVALID"
    post = client.post("/v2/conf/app/blobs/uploads/", query_string={"digest": digest}, data=b"x")
    assert post.status_code == 400 and error_code(post) == "DIGEST_INVALID"
    location = start(client)
    put = client.put(location, query_string={"digest": digest}, data=b"x")
    assert put.status_code == 400 and error_code(put) == "DIGEST_INVALID"


def test_wrong_digest_keeps_the_upload(client: Client) -> None:
    location = start(client)
    response = client.put(location, query_string={"digest": digest_of(b"other")}, data=b"actual")
    assert response.status_code == 400 and error_code(response) == "DIGEST_INVALID"
    assert client.get(location).headers["Range"] == "0-5"  # what arrived was kept
    assert client.put(location, query_string={"digest": digest_of(b"actual")}).status_code == 201


def test_retried_put_after_commit(client: Client) -> None:
    location = start(client)
    digest = digest_of(b"committed once")
    assert (
        client.put(location, query_string={"digest": digest}, data=b"committed once").status_code
        == 201
    )
    again = client.put(location, query_string={"digest": digest}, data=b"committed once")
    assert again.status_code == 201 and again.headers["Docker-Content-Digest"] == digest
    elsewhere = client.put(
        location.replace("conf/app", "conf/other"), query_string={"digest": digest}
    )
    assert elsewhere.status_code == 404 and error_code(elsewhere) == "BLOB_UPLOAD_UNKNOWN"


def test_two_instances_share_one_upload(config: Config) -> None:
    first = Client(RegistryApp(S3BlobStorage(config)))
    second = Client(RegistryApp(S3BlobStorage(config)))
    data = os.urandom(PART + 2048)
    location = start(first)
    instances = [first, second]
    for i, pos in enumerate(range(0, len(data), 1024 * 1024)):
        chunk = data[pos : pos + 1024 * 1024]
        response = instances[i % 2].patch(
            location, data=chunk, headers={"Content-Range": f"{pos}-{pos + len(chunk) - 1}"}
        )
        assert response.status_code == 202
        location = response.headers["Location"]
    assert second.get(location).headers["Range"] == f"0-{len(data) - 1}"
    done = first.put(location, query_string={"digest": digest_of(data)})
    assert done.status_code == 201
    assert second.head(done.headers["Location"]).headers["Content-Length"] == str(len(data))


def test_invalid_names(client: Client) -> None:
    for name in ("UPPER/case", "a//b", "-x", "a" * 256):
        response = client.get(f"/v2/{name}/tags/list")
        assert response.status_code == 400 and error_code(response) == "NAME_INVALID", name


def test_throttling_is_429_with_retry_after(config: Config) -> None:
    storage = S3BlobStorage(config)
    client = Client(RegistryApp(storage))

    def slow_down(**_: Any) -> Any:
        return s3_error(503, "SlowDown")

    storage.client.meta.events.register_first("before-send.s3.HeadObject", slow_down)
    response = client.head(f"/v2/conf/app/blobs/{digest_of(b'x')}")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    response = client.get(f"/v2/conf/app/blobs/{digest_of(b'x')}")
    assert error_code(response) == "TOOMANYREQUESTS"


def test_client_errors_are_never_500(client: Client) -> None:
    requests = [
        ("GET", "/v2/conf/app/blobs/uploads/not-an-id"),
        ("PATCH", "/v2/conf/app/blobs/uploads/../../x"),
        ("PUT", "/v2/conf/app/blobs/uploads/abc"),
        ("PUT", "/v2/conf/app/blobs/uploads/abc?digest=sha256:zz"),
        ("POST", "/v2/conf/app/blobs/uploads/?digest-algorithm=md5"),
        ("GET", "/v2/conf/app/manifests/not%20a%20tag"),
        ("PUT", "/v2/conf/app/manifests/latest"),
        ("GET", "/v2/conf/app/referrers/sha256:zz"),
        ("GET", "/v2/conf/app/tags/list?n=lots"),
        ("DELETE", "/v2/conf/app/manifests/sha256:" + "a" * 64),
        ("PATCH", "/v2/"),
        ("GET", "/v3/whatever"),
    ]
    for method, url in requests:
        response = client.open(url, method=method, data=b"junk")
        assert 400 <= response.status_code < 500, (method, url, response.status_code, response.data)


def test_small_monolithic_post_is_one_put(config: Config) -> None:
    storage = S3BlobStorage(config)
    client = Client(RegistryApp(storage))
    calls = S3Calls(storage.client)
    push(client, "monolithic", b"one request", "sha256")
    assert calls.ops == ["PutObject", "PutObject"]  # the entry, the link


@pytest.mark.parametrize("size", [10, PART + 10])
def test_failed_monolithic_post_leaves_nothing(client: Client, s3: Any, size: int) -> None:
    response = client.post(
        "/v2/conf/app/blobs/uploads/",
        query_string={"digest": digest_of(b"other")},
        data=os.urandom(size),
    )
    assert response.status_code == 400 and error_code(response) == "DIGEST_INVALID"
    assert open_uploads(s3) == [] and all_keys(s3) == []


def test_body_ending_early_keeps_what_arrived(client: Client) -> None:
    location = start(client)
    declared, arrived = 4 * 1024 * 1024, 3 * 1024 * 1024 + 50
    response = client.patch(
        location,
        input_stream=io.BytesIO(b"x" * arrived),
        headers={"Content-Range": f"0-{declared - 1}"},
        environ_overrides={"CONTENT_LENGTH": str(declared)},  # the client promised more
    )
    assert response.status_code == 400 and error_code(response) == "BLOB_UPLOAD_INVALID"
    # what arrived is kept; the client asks for the Range and goes on from there
    assert client.get(location).headers["Range"] == f"0-{arrived - 1}"


def test_content_length_must_match_content_range(client: Client) -> None:
    location = start(client)
    response = client.patch(location, data=b"x" * 10, headers={"Content-Range": "0-19"})
    assert response.status_code == 400 and error_code(response) == "BLOB_UPLOAD_INVALID"
    assert client.get(location).headers["Range"] == "0-0"  # nothing was taken


def test_streamed_blob_s3_failure_is_json_503_before_any_byte(config: Config) -> None:
    storage = S3BlobStorage(Config(**{**config.__dict__, "redirect": False}))
    client = Client(RegistryApp(storage))
    digest = push(client, "monolithic", b"streamed bytes", "sha256")

    def broken(**_: Any) -> Any:
        return s3_error(500, "InternalError")

    storage.client.meta.events.register_first("before-send.s3.GetObject", broken)
    response = client.get(f"/v2/conf/app/blobs/{digest}")
    assert response.status_code == 503
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Retry-After"]
    assert error_code(response) == "UNAVAILABLE"


def test_storage_errors_name_no_internals(config: Config) -> None:
    storage = S3BlobStorage(config)
    client = Client(RegistryApp(storage))

    def broken(**_: Any) -> Any:
        return s3_error(500, "InternalError")

    storage.client.meta.events.register_first("before-send.s3.CreateMultipartUpload", broken)
    response = client.post("/v2/conf/app/blobs/uploads/", headers={"X-Request-Id": "req-42"})
    assert response.status_code == 503
    assert response.headers["X-Request-Id"] == "req-42"
    body = response.get_data(as_text=True)
    assert json.loads(body)["errors"][0]["detail"] == {"requestId": "req-42"}
    for internal in (config.bucket, "data/", "_uploads", "amazonaws", "InternalError"):
        assert internal not in body


def test_request_ids_are_made_when_missing_or_malformed(client: Client) -> None:
    made = client.get("/v2/").headers["X-Request-Id"]
    assert len(made) == 32
    replaced = client.get("/v2/", environ_overrides={"HTTP_X_REQUEST_ID": "<script>"})
    assert replaced.headers["X-Request-Id"] not in ("<script>", "")


def test_a_sealed_upload_refuses_more_bytes_and_a_retried_put_finishes(
    config: Config,
) -> None:
    storage = S3BlobStorage(config)
    client = Client(RegistryApp(storage))
    data = os.urandom(PART + 10)
    location = start(client)
    patched = client.patch(location, data=data)
    assert patched.status_code == 202

    def broken(request: Any, **_: Any) -> Any:
        return s3_error(500, "InternalError") if "/_layers/" in request.url else None

    storage.client.meta.events.register_first("before-send.s3.PutObject", broken)
    failed = client.put(location, query_string={"digest": digest_of(data)})
    assert failed.status_code == 503
    storage.client.meta.events.unregister("before-send.s3.PutObject", broken)
    more = client.patch(location, data=b"late bytes")
    assert more.status_code == 409 and error_code(more) == "BLOB_UPLOAD_INVALID"
    # the client retries its PUT, body and all: the body is not appended again
    done = client.put(location, query_string={"digest": digest_of(data)}, data=b"")
    assert done.status_code == 201, done.data
    assert storage.blobs.get(digest_of(data)) == data
