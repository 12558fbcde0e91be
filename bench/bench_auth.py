"""The per-request cost of authentication: requests/s of ``HEAD /v2/<name>/blobs/<digest>``
with no auth, Basic (htpasswd, bcrypt cost 10) and Bearer tokens (ES256, RS256, EdDSA),
in the same run. A client sends the same credential with every request: the registry
verifies it once (bcrypt; a token's signature and claims) and remembers the result
briefly, so the steady state is what the table shows; what a first request of a
credential costs is measured apart.

    python -m bench.bench_auth

Three ways: WSGI calls in this process (the pipeline's own cost: security headers,
authentication, routing, authorization, the handler answering from the warm
descriptor cache, so no S3 request); the authenticator alone on a credential it has
verified; and over HTTP to werkzeug's threaded server on one keep-alive connection
(what a client sees from a development server). The cases run interleaved in small
batches, in a fresh order each cycle, so a busy machine slows them alike. S3 is a
moto server in its own process.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import bcrypt
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from werkzeug.serving import make_server

from bench.support import moto_server, new_bucket
from s3blobs import Config, DescriptorCacheFactory, S3BlobStorage
from s3blobs.registry import make_app
from s3blobs.registry.auth.access import AllowAll, AuthenticatedUsers
from s3blobs.registry.auth.htpasswd import BasicAuthenticator, HtpasswdFile
from s3blobs.registry.auth.settings import SecuritySettings
from s3blobs.registry.auth.token import BearerAuthenticator, TokenVerifier, load_keys
from s3blobs.registry.hardening import WSGIApp

NAME = "bench/app"
BLOB = b"a blob to HEAD"
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
PATH = f"/v2/{NAME}/blobs/{DIGEST}"
BCRYPT_COST = 10
ISSUER, SERVICE = "bench-issuer", "bench-registry"


def public_pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def basic_case(workdir: Path) -> tuple[SecuritySettings, str]:
    hashed = bcrypt.hashpw(b"bench-password", bcrypt.gensalt(rounds=BCRYPT_COST)).decode()
    path = workdir / "htpasswd"
    path.write_text(f"bench:$2y${hashed[4:]}\n")
    authenticator = BasicAuthenticator(HtpasswdFile(path))
    import base64

    header = "Basic " + base64.b64encode(b"bench:bench-password").decode()
    return SecuritySettings("htpasswd", authenticator, AuthenticatedUsers()), header


def bearer_case(workdir: Path, algorithm: str) -> tuple[SecuritySettings, str, TokenVerifier]:
    key: Any
    if algorithm == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    path = workdir / f"{algorithm}.pem"
    path.write_bytes(public_pem(key))
    verifier = TokenVerifier(load_keys(path, (algorithm,)), ISSUER, SERVICE, (algorithm,))
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": SERVICE,
        "sub": "bench",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "access": [{"type": "repository", "name": NAME, "actions": ["pull"]}],
    }
    token = jwt.encode(claims, key, algorithm=algorithm)
    authenticator = BearerAuthenticator(verifier, "https://auth.invalid/token", SERVICE)
    return SecuritySettings("token", authenticator, AllowAll()), f"Bearer {token}", verifier


def full_verification(verifier: TokenVerifier, token: str, times: int = 300) -> float:
    """Seconds for one complete verification (signature and claims), no cache."""
    start = time.perf_counter()
    for _ in range(times):
        verifier.check(token)
    return (time.perf_counter() - start) / times


def authentication_alone(
    settings: SecuritySettings, header: str | None, times: int = 20_000
) -> float:
    """Seconds per ``authenticate`` of a credential already verified (the steady state)."""
    if settings.authenticator is None or header is None:
        return 0.0
    settings.authenticator.authenticate(header)
    start = time.perf_counter()
    for _ in range(times):
        settings.authenticator.authenticate(header)
    return (time.perf_counter() - start) / times


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    if not status.startswith("200"):
        raise AssertionError(f"HEAD answered {status}")
    return lambda data: None


def in_process(app: WSGIApp, authorization: str | None, requests: int) -> float:
    """Seconds for ``requests`` HEADs called straight into the WSGI pipeline."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "HEAD",
        "PATH_INFO": PATH,
        "QUERY_STRING": "",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
    }
    if authorization:
        environ["HTTP_AUTHORIZATION"] = authorization
    start = time.perf_counter()
    for _ in range(requests):
        body: Iterable[bytes] = app({**environ, "wsgi.input": io.BytesIO()}, _start_response)
        for _chunk in body:
            pass
        close: Callable[[], None] | None = getattr(body, "close", None)
        if close is not None:
            close()
    return time.perf_counter() - start


def over_http(
    connection: http.client.HTTPConnection, authorization: str | None, requests: int
) -> float:
    """Seconds for ``requests`` HEADs on one keep-alive connection."""
    headers = {"Authorization": authorization} if authorization else {}
    start = time.perf_counter()
    for _ in range(requests):
        connection.request("HEAD", PATH, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise AssertionError(f"HEAD answered {response.status}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200, help="interleaved cycles (200)")
    parser.add_argument("--batch", type=int, default=200, help="requests per case per cycle")
    parser.add_argument("--http-batch", type=int, default=40, help="HTTP requests per cycle")
    args = parser.parse_args()
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config = Config(
            bucket=new_bucket(endpoint),
            endpoint_url=endpoint,
            region="us-east-1",
            addressing_style="path",
        )
        storage = S3BlobStorage(config, DescriptorCacheFactory(10_000, 3600))
        storage.repository(NAME).put("application/octet-stream", BLOB)
        cases: dict[str, tuple[SecuritySettings, str | None]] = {
            "no auth": (SecuritySettings(), None)
        }
        cases["Basic (htpasswd)"] = basic_case(workdir)
        verifiers = {}
        for algorithm in ("ES256", "RS256", "EdDSA"):
            settings, header, verifier = bearer_case(workdir, algorithm)
            cases[f"Bearer {algorithm}"] = (settings, header)
            verifiers[algorithm] = full_verification(verifier, header.removeprefix("Bearer "))
        apps = {label: make_app(storage, settings) for label, (settings, _) in cases.items()}

        basic_settings, basic_header = cases["Basic (htpasswd)"]
        fresh = make_app(storage, basic_settings)  # first request: bcrypt, not the cache
        started = time.perf_counter()
        in_process(fresh, basic_header, 1)
        first_basic = time.perf_counter() - started

        # Small batches of every case, in a fresh order each cycle: whatever else runs on
        # the machine slows every case alike instead of whichever ran at that moment.
        # In process first, with no server threads about; then over HTTP.
        shuffle = random.Random(1).shuffle
        order = list(apps)
        local = dict.fromkeys(apps, 0.0)
        for label, app in apps.items():  # warm up: caches, bcrypt once
            in_process(app, cases[label][1], 50)
        for _ in range(args.cycles):
            shuffle(order)
            for label in order:
                local[label] += in_process(apps[label], cases[label][1], args.batch)

        servers, connections = {}, {}
        for label, app in apps.items():
            server = make_server("127.0.0.1", 0, app, threaded=True)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers[label] = server
            connections[label] = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            over_http(connections[label], cases[label][1], 20)
        remote = dict.fromkeys(apps, 0.0)
        for _ in range(args.cycles):
            shuffle(order)
            for label in order:
                remote[label] += over_http(connections[label], cases[label][1], args.http_batch)
        for label in apps:
            connections[label].close()
            servers[label].shutdown()
        alone = {label: authentication_alone(*cases[label]) for label in apps}

    n_local, n_remote = args.cycles * args.batch, args.cycles * args.http_batch
    rate = {label: n_local / seconds for label, seconds in local.items()}
    http_rate = {label: n_remote / seconds for label, seconds in remote.items()}
    print(f"HEAD {PATH[:40]}..., warm descriptor cache (no S3 request)")
    print(f"{n_local} requests a case in process, {n_remote} over HTTP, interleaved")
    print()
    print(
        "| auth | in process: requests/s | added per request | authentication alone "
        "| over HTTP: requests/s | vs no auth |"
    )
    print("|---|---|---|---|---|---|")
    for label in apps:
        added = (1 / rate[label] - 1 / rate["no auth"]) * 1e6
        print(
            f"| {label} | {rate[label]:,.0f} | {added:+.0f} µs | {alone[label] * 1e6:.1f} µs "
            f"| {http_rate[label]:,.0f} | {http_rate[label] / http_rate['no auth']:.2f}x |"
        )
    print()
    print("First request of a credential (nothing remembered yet):")
    print(f"- Basic: one bcrypt check at cost {BCRYPT_COST}: {first_basic * 1000:.0f} ms")
    for algorithm, seconds in verifiers.items():
        print(f"- Bearer {algorithm}: full token verification {seconds * 1e6:.0f} µs")


if __name__ == "__main__":
    main()
