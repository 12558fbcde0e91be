"""The request log: its formats and level, the request id in every line written while
serving, and no secret in any line, checked on ``s3blobs serve`` pushed to and
pulled from by skopeo."""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from werkzeug.test import EnvironBuilder, run_wsgi_app

from conftest import PART, s3_error
from netutil import free_port
from obsutil import BufferedClient, captured_log, need
from oci import image_layout
from s3blobs import Config, DescriptorCacheFactory, S3BlobStorage
from s3blobs.registry import make_app
from s3blobs.registry.auth.wsgi import IDENTITY
from s3blobs.registry.requestlog import (
    REQUEST_ID,
    USER,
    Exchange,
    RequestLog,
    current_exchange,
)

TEXT_LINE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO s3blobs\.access \[(?P<id>[\w.:-]+)\] "
    r"(?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3}) in=(?P<bytes_in>\d+) "
    r"out=(?P<bytes_out>\d+) (?P<ms>\d+\.\d)ms s3=(?P<s3>\d+) user=(?P<user>\S+)"
)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def access_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "s3blobs.access" in line]


@pytest.fixture
def client(storage: S3BlobStorage) -> BufferedClient:
    return BufferedClient(make_app(storage))


def test_text_lines(client: BufferedClient) -> None:
    blob = b"a text line"
    with captured_log() as log:
        client.post(
            "/v2/log/app/blobs/uploads/", query_string={"digest": digest_of(blob)}, data=blob
        )
        client.get(f"/v2/log/app/blobs/{digest_of(blob)}")
    pushed, pulled = (TEXT_LINE.fullmatch(line) for line in access_lines(log.getvalue()))
    assert pushed is not None and pulled is not None
    assert pushed["method"] == "POST" and pushed["status"] == "201"
    assert pushed["path"] == f"/v2/log/app/blobs/uploads/?digest={digest_of(blob)}"
    assert int(pushed["bytes_in"]) == len(blob) and int(pushed["s3"]) >= 2
    assert pulled["status"] == "307" and pulled["bytes_out"] == "0" and pulled["user"] == "-"
    assert pushed["id"] != pulled["id"]


def test_json_lines(client: BufferedClient) -> None:
    with captured_log("json") as log:
        response = client.get("/v2/log/app/tags/list", headers={"X-Request-Id": "json-1"})
    [line] = access_lines(log.getvalue())
    record = json.loads(line)
    assert record["request_id"] == "json-1" and record["logger"] == "s3blobs.access"
    assert record["method"] == "GET" and record["path"] == "/v2/log/app/tags/list"
    assert record["status"] == response.status_code == 404
    assert record["bytes_out"] == len(response.data) > 0
    assert record["s3_requests"] >= 1 and record["duration_seconds"] > 0
    assert record["level"] == "INFO" and re.fullmatch(r"\d{4}-.*\.\d{3}Z", record["time"])


def test_level_warning_keeps_warnings_only(client: BufferedClient, storage: S3BlobStorage) -> None:
    storage.client.meta.events.register_first(
        "before-send.s3.ListObjectsV2", lambda **_: s3_error(500, "InternalError")
    )
    with captured_log(level=logging.WARNING) as log:
        assert client.get("/v2/log/app/tags/list").status_code == 503
    lines = log.getvalue().splitlines()
    assert lines and not access_lines(log.getvalue())
    assert all(" WARNING " in line or " ERROR " in line for line in lines)


def test_the_request_id_is_in_every_line_and_the_error_body(
    config: Config, storage: S3BlobStorage
) -> None:
    """A line logged by code that knows nothing of the request (here a botocore hook,
    while the app answers, and while the body streams) carries the id."""
    blob = b"streamed from S3"
    streaming_storage = S3BlobStorage(Config(**{**config.__dict__, "redirect": False}))
    streaming = BufferedClient(make_app(streaming_storage))
    client = BufferedClient(make_app(storage))
    client.post("/v2/log/app/blobs/uploads/", query_string={"digest": digest_of(blob)}, data=blob)
    probe = logging.getLogger("tests.probe")
    for some in (storage, streaming_storage):
        some.client.meta.events.register(
            "before-call.s3.*", lambda model, **_: probe.warning("asking S3 for %s", model.name)
        )
    with captured_log() as log:
        sent = streaming.get(
            f"/v2/log/app/blobs/{digest_of(blob)}", headers={"X-Request-Id": "from-proxy.1"}
        )
        assert sent.data == blob and sent.headers["X-Request-Id"] == "from-proxy.1"
        refused = streaming.get("/v2/log/app/tags/list", headers={"X-Request-Id": "bad id!"})
        generated = client.get("/v2/")
    lines = log.getvalue().splitlines()
    mine = [line for line in lines if "[from-proxy.1]" in line]
    assert any("asking S3 for GetObject" in line for line in mine)  # while streaming
    assert any("asking S3 for HeadObject" in line for line in mine)
    assert len(mine) == 1 + sum("asking S3" in line for line in mine)  # + the access line
    replaced = refused.headers["X-Request-Id"]
    assert replaced != "bad id!" and re.fullmatch(r"[0-9a-f]{32}", replaced)
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["X-Request-Id"])
    assert all(f"[{replaced}]" in line for line in lines if "ListObjectsV2" in line)

    # S3 fails: the JSON error names the request id the client was given, and the log has it
    storage.client.meta.events.register_first(
        "before-send.s3.HeadObject", lambda **_: s3_error(500, "InternalError")
    )
    with captured_log() as log:
        failed = client.get(
            f"/v2/log/app/blobs/{digest_of(blob)}", headers={"X-Request-Id": "r-503"}
        )
    assert failed.status_code == 503
    assert json.loads(failed.data)["errors"][0]["detail"] == {"requestId": "r-503"}
    assert failed.headers["X-Request-Id"] == "r-503"
    assert any("[r-503]" in line and "WARNING" in line for line in log.getvalue().splitlines())


def test_query_values_outside_the_api_are_masked(client: BufferedClient) -> None:
    with captured_log() as log:
        client.get(
            "/v2/log/app/tags/list",
            query_string={"n": "5", "access_token": "tok3n", "X-Amz-Signature": "s1gnature"},
        )
        client.get("/v2/log/app%0A2026-01-01T00:00:00.000Z INFO forged/tags/list")
    forged = log.getvalue().splitlines()[-1]
    assert "app%0A2026-01-01T00:00:00.000Z%20INFO%20forged" in forged  # one line, encoded
    line = access_lines(log.getvalue())[0]
    assert "n=5" in line and "access_token=REDACTED" in line
    assert "X-Amz-Signature=REDACTED" in line
    assert "tok3n" not in line and "s1gnature" not in line


# Nothing secret in the log of a whole skopeo push and pull -----------------------------

PASSWORD = "pa55-w0rd-in-the-log?"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.b2JzZXJ2YWJpbGl0eQ.c2lnbmF0dXJl"
KEY_ID = "AKIAOBSERVABILITY01"
SECRET_KEY = "obsSecretAccessKeyThatMustNeverShow0001"


def skopeo(*args: str) -> None:
    done = subprocess.run(
        ["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.e2e
def test_no_secret_in_the_log_of_a_push_and_pull(tmp_path: Path) -> None:
    need("skopeo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3BLOBS_", "AWS_"))}
    env.update(
        S3BLOBS_PART_SIZE=str(PART),
        S3BLOBS_LOG_LEVEL="debug",  # the most there is to leak
        AWS_ACCESS_KEY_ID=KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
    )
    metrics_port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        serve = ["serve", "--port", "0", "--metrics-addr", f"127.0.0.1:{metrics_port}"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "s3blobs", *serve],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        registry = wait_for_line(log_path, r"registry on http://(127\.0\.0\.1:\d+)", proc)
        url = f"http://{registry}"
        basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        with_basic = requests.get(f"{url}/v2/", headers={"Authorization": f"Basic {basic}"})
        with_bearer = requests.get(
            f"{url}/v2/obs/image/tags/list",
            headers={"Authorization": f"Bearer {TOKEN}"},
            params={"password": PASSWORD, "X-Amz-Signature": "abc", "X-Amz-Credential": "def"},
        )
        source, pulled = tmp_path / "source", tmp_path / "pulled"
        image_layout(source, [1024, PART + 1000])
        skopeo(
            "copy",
            "--dest-tls-verify=false",
            f"oci:{source}:latest",
            f"docker://{registry}/obs/image:v1",
        )
        skopeo(
            "copy",
            "--src-tls-verify=false",
            f"docker://{registry}/obs/image:v1",
            f"oci:{pulled}:v1",
        )
        # A worker folds its figures into the shared files once a second: poll.
        metrics = scrape_until(
            f"http://127.0.0.1:{metrics_port}/metrics",
            r"s3blobs_manifests_pushed_total 1\.0",
            r"s3blobs_blob_redirects_total [1-9]",
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    text = log_path.read_text()
    # the log is there, and covers what matters (so the checks below can fail)
    assert f"[{with_basic.headers['X-Request-Id']}] GET /v2/ 200" in text
    assert f"[{with_bearer.headers['X-Request-Id']}] GET /v2/obs/image/tags/list?" in text
    assert re.search(r"PUT /v2/obs/image/manifests/v1 201 in=\d+", text)
    assert re.search(r"GET /v2/obs/image/blobs/sha256:\w+ 307 ", text)  # pulls were redirected
    assert re.search(r"PATCH /v2/obs/image/blobs/uploads/\S+ 202 in=\d{7,}", text)
    for secret in (PASSWORD, basic, TOKEN, KEY_ID, SECRET_KEY):
        assert secret not in text, secret
    masked = text.replace("X-Amz-Signature=REDACTED", "").replace("X-Amz-Credential=REDACTED", "")
    assert "X-Amz-Signature" not in masked and "X-Amz-Credential" not in masked
    assert re.search(r"s3blobs_manifests_pushed_total 1\.0", metrics)
    assert re.search(r"s3blobs_blob_redirects_total [1-9]", metrics)


def scrape_until(url: str, *patterns: str, seconds: float = 10) -> str:
    """The metrics at ``url`` once they match every pattern (or the last scrape)."""
    deadline = time.monotonic() + seconds
    while True:
        text = requests.get(url, timeout=10).text
        if all(re.search(pattern, text) for pattern in patterns) or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def wait_for_line(
    path: Path, pattern: str, proc: subprocess.Popen[Any], seconds: float = 30
) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        match = re.search(pattern, path.read_text())
        if match:
            return match.group(1)
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} in the log: {path.read_text()[-2000:]}")


def test_a_request_leaves_no_reference_cycle(config: Config) -> None:
    """Every request's memory is freed by reference counting as soon as it is answered.
    A cycle through the environ (something in it that refers back to it) would leave
    every request to the cyclic garbage collector, whose passes over a worker's whole
    heap cost far more than freeing by reference counting. (The requests asked make no
    S3 request once the cache is warm: moto's in-process server leaves cycles of its
    own.)"""
    storage = S3BlobStorage(config, DescriptorCacheFactory())
    digest = storage.repository("log/cycles").put("application/octet-stream", b"blob").digest
    app = make_app(storage)
    asked = [
        EnvironBuilder(method=method, path=path).get_environ()
        for method, path in [
            ("GET", "/v2/"),
            ("HEAD", f"/v2/log/cycles/blobs/{digest}"),
            ("GET", "/v2/no/such/endpoint"),
        ]
    ]

    def ask_all() -> None:
        for environ in asked:
            run_wsgi_app(app, dict(environ), buffered=True)

    ask_all()  # the caches warm, lazy imports are done
    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            ask_all()
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_what_is_kept_of_a_finished_request_is_not_tracked_by_the_garbage_collector() -> None:
    """The summaries waiting for their log batch and their metrics fold (a second's
    worth of requests) are plain tuples of str, int and float: the collector's first
    look at them stops tracking them. Objects (or NamedTuples) stay tracked and are
    promoted to the oldest generation, bringing its full collections with them."""
    environ = EnvironBuilder(path="/v2/", headers={"X-Request-Id": "kept-1"}).get_environ()
    environ[IDENTITY] = SimpleNamespace(name="alice")
    exchange = Exchange(environ)
    exchange.status = 200
    summary = exchange.finish()
    del exchange, environ
    assert type(summary) is tuple
    gc.collect(0)
    assert not gc.is_tracked(summary)
    assert summary[REQUEST_ID] == "kept-1" and summary[USER] == "alice"


def test_a_request_is_current_from_its_call_until_the_server_closes_its_answer() -> None:
    """The exchange is made current once, when the app is called, and stays so while the
    server sends the body (the app's code runs then) until it closes the answer; an app
    that raises ends it at once. Either way nothing of it is left in the thread, even
    when an answer before it was never closed (a server that forgot, or a test)."""
    seen: list[str | None] = []
    RequestLog(lambda environ, start: [])(EnvironBuilder().get_environ(), lambda *_: None)
    assert current_exchange() is not None  # never closed

    def body() -> Iterator[bytes]:
        exchange = current_exchange()
        seen.append(exchange.id if exchange is not None else None)
        yield b"chunk"

    def streaming(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body()

    def failing(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        raise RuntimeError("the app fails")

    environ = EnvironBuilder(path="/v2/", headers={"X-Request-Id": "current-1"}).get_environ()
    answer = RequestLog(streaming)(environ, lambda *_: None)
    assert current_exchange() is not None  # called, not yet sent
    assert b"".join(answer) == b"chunk" and seen == ["current-1"]
    answer.close()  # type: ignore[attr-defined]
    assert current_exchange() is None
    with pytest.raises(RuntimeError):
        RequestLog(failing)(EnvironBuilder(path="/v2/").get_environ(), lambda *_: None)
    assert current_exchange() is None
