"""What the registry benchmarks do as clients: skopeo copies, a chunked upload by plain
HTTP requests, and reading the counting S3 server once the registry has gone quiet."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections import Counter
from collections.abc import Iterable
from urllib.parse import urljoin

import requests

from bench.proxy import LoggedRequest
from bench.s3_counter import PRESIGNED
from bench.support import server_counts

SKOPEO_TIMEOUT = 900


def skopeo(*args: str) -> float:
    """Run ``skopeo --insecure-policy ARGS``; returns the seconds it took."""
    start = time.perf_counter()
    result = subprocess.run(
        ["skopeo", "--insecure-policy", *args],
        capture_output=True,
        timeout=SKOPEO_TIMEOUT,
        check=False,
    )
    if result.returncode:
        raise RuntimeError(f"skopeo {' '.join(args)} failed: {result.stderr.decode()[-2000:]}")
    return time.perf_counter() - start


def push(layout: str, registry: str, reference: str) -> float:
    return skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"oci:{layout}:latest",
        f"docker://{registry}/{reference}",
    )


def pull(registry: str, reference: str, layout: str) -> float:
    return skopeo(
        "copy", "--src-tls-verify=false", f"docker://{registry}/{reference}", f"oci:{layout}:latest"
    )


def chunked_upload(registry: str, name: str, chunks: list[bytes]) -> str:
    """POST, one PATCH per chunk (with Content-Range), PUT ?digest=: the chunked upload
    of the distribution spec, which skopeo never makes. Returns the blob's digest."""
    base = f"http://{registry}/"
    digest = "sha256:" + hashlib.sha256(b"".join(chunks)).hexdigest()
    with requests.Session() as session:
        answer = session.post(urljoin(base, f"v2/{name}/blobs/uploads/"), timeout=60)
        _expect(answer, 202)
        offset = 0
        for chunk in chunks:
            answer = session.patch(
                urljoin(base, answer.headers["Location"]),
                data=chunk,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                },
                timeout=60,
            )
            _expect(answer, 202)
            offset += len(chunk)
        location = urljoin(base, answer.headers["Location"])
        separator = "&" if "?" in location else "?"
        _expect(session.put(f"{location}{separator}digest={digest}", timeout=60), 201)
    return digest


def blob_exists(registry: str, name: str, digest: str) -> bool:
    answer = requests.head(
        f"http://{registry}/v2/{name}/blobs/{digest}", timeout=60, allow_redirects=True
    )
    return answer.status_code == 200


def _expect(answer: requests.Response, status: int) -> None:
    if answer.status_code != status:
        raise RuntimeError(
            f"{answer.request.method} {answer.url}: {answer.status_code}, expected {status}: "
            f"{answer.text[:500]}"
        )


def quiet_counts(endpoint: str, settle: float = 0.5) -> dict[str, Counter[str]]:
    """The counting S3 server's counts once they stop moving (a registry may still be
    cleaning up after its answer), then reset to zero."""
    before = server_counts(endpoint)
    while True:
        time.sleep(settle)
        now = server_counts(endpoint)
        if now == before:
            return server_counts(endpoint, reset=True)
        before = now


def registry_requests(ops: Counter[str]) -> int:
    """S3 requests the registry made (not the clients' GETs and HEADs of presigned URLs)."""
    return sum(n for op, n in ops.items() if op not in PRESIGNED)


def presigned_requests(ops: Counter[str]) -> int:
    return sum(ops[op] for op in PRESIGNED)


def by_operation(ops: Counter[str]) -> str:
    return ", ".join(f"{op} {n}" for op, n in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))


def http_summary(logged: Iterable[LoggedRequest]) -> str:
    """'HEAD 8 (404 4, 200 4), PUT 5 (201 5)': the registry's requests and answers."""
    methods: Counter[str] = Counter()
    statuses: dict[str, Counter[int]] = {}
    for request in logged:
        methods[request.method] += 1
        statuses.setdefault(request.method, Counter())[request.status] += 1
    return ", ".join(
        f"{method} {n} ("
        + ", ".join(f"{status}: {k}" for status, k in sorted(statuses[method].items()))
        + ")"
        for method, n in sorted(methods.items())
    )
