"""Real clients against a secured registry over HTTPS: skopeo and podman with htpasswd
credentials, skopeo through the Bearer token flow (a token server started here), and
what a user without the rights gets (401/403, and no mount out of a repository it
cannot pull).

The registry is the production pipeline (``make_app``) served over TLS by werkzeug in
this process, on the moto server (blob GETs redirect there). Certificates come from a
CA made for the test; clients trust it through ``--cert-dir``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from authutil import (
    ISSUER,
    SERVICE,
    TlsFiles,
    keys_of,
    make_tls,
    public_pem,
    signing_key,
    token_server,
    write_htpasswd,
)
from conftest import PART
from oci import image_layout
from s3blobs import Config, S3BlobStorage
from s3blobs.registry import make_app
from s3blobs.registry.auth.access import AllowAll
from s3blobs.registry.auth.acl import AclPolicy
from s3blobs.registry.auth.htpasswd import BasicAuthenticator, HtpasswdFile
from s3blobs.registry.auth.settings import SecuritySettings
from s3blobs.registry.auth.token import BearerAuthenticator, TokenVerifier, load_keys
from s3blobs.registry.hardening import WSGIApp

pytestmark = pytest.mark.e2e

PASSWORDS = {"writer": "writer-pw", "reader": "reader-pw", "mover": "mover-pw"}
RIGHTS = {"writer": ["pull", "push", "delete"], "reader": ["pull"]}
ACL = """
[[rule]]
repositories = ["**"]
users = ["writer"]
actions = ["pull", "push", "delete"]

[[rule]]
repositories = ["e2e/**"]
users = ["reader"]
actions = ["pull"]

[[rule]]
repositories = ["mine/**"]
users = ["mover"]
actions = ["pull", "push"]
"""


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("S3BLOBS_REQUIRE_TOOLS"):
            pytest.fail(f"{tool} is required here (S3BLOBS_REQUIRE_TOOLS is set)")
        pytest.skip(f"{tool} is not installed")
    return path


def run(*command: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    if ok:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode != 0, f"{command} should have failed"
    return done


def skopeo(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return run(need("skopeo"), "--insecure-policy", *args, ok=ok)


@contextlib.contextmanager
def serving(app: WSGIApp, tls: TlsFiles | None = None) -> Iterator[str]:
    """``app`` on a loopback port (HTTPS with ``tls``), in a thread; yields host:port."""
    context = (
        SecuritySettings(tls_cert=str(tls.cert), tls_key=str(tls.key)).ssl_context()
        if tls
        else None
    )
    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def storage(moto_server: str) -> S3BlobStorage:
    import uuid

    import boto3

    bucket = f"auth-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    config = Config(
        bucket=bucket,
        endpoint_url=moto_server,
        region="us-east-1",
        addressing_style="path",
        part_size=PART,
    )
    return S3BlobStorage(config)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    layout = tmp_path_factory.mktemp("image") / "layout"
    return layout, image_layout(layout, [2048, 300_000], first_seed=100)


@pytest.fixture(scope="module")
def htpasswd_registry(
    storage: S3BlobStorage, tls: TlsFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("htpasswd")
    passwords = HtpasswdFile(write_htpasswd(directory / "htpasswd", PASSWORDS))
    acl = directory / "acl.toml"
    acl.write_text(ACL)
    settings = SecuritySettings("htpasswd", BasicAuthenticator(passwords), AclPolicy.load(acl))
    with serving(make_app(storage, settings), tls) as address:
        yield address


def layout_blobs(layout: Path) -> dict[str, bytes]:
    return {f"sha256:{p.name}": p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}


def push_as(user: str, certs: str, layout: Path, target: str) -> None:
    skopeo(
        "copy", "--dest-creds", f"{user}:{PASSWORDS[user]}", "--dest-cert-dir", certs,
        f"oci:{layout}:latest", target,
    )  # fmt: skip


def pulled_as(user: str, certs: str, target: str, destination: Path) -> dict[str, bytes]:
    """Pull ``target`` as ``user``; the blobs that arrived, by digest."""
    skopeo(
        "copy", "--src-creds", f"{user}:{PASSWORDS[user]}", "--src-cert-dir", certs,
        target, f"oci:{destination}:v1",
    )  # fmt: skip
    return layout_blobs(destination)


def manifest(registry: str, tls: TlsFiles, reference: str, user: str) -> requests.Response:
    name, _, tag = reference.rpartition(":")
    return requests.get(
        f"https://{registry}/v2/{name}/manifests/{tag}",
        auth=(user, PASSWORDS[user]),
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        verify=str(tls.ca),
        timeout=30,
    )


def test_skopeo_push_pull_with_credentials_over_https(
    htpasswd_registry: str, tls: TlsFiles, image: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    layout, blobs = image
    certs = str(tls.cert_dir)
    target = f"docker://{htpasswd_registry}/e2e/skopeo:v1"
    push_as("writer", certs, layout, target)
    assert pulled_as("reader", certs, target, tmp_path / "pulled") == blobs
    # No credentials, a wrong password, an untrusted certificate: refused.
    anonymous = skopeo(
        "copy", "--src-cert-dir", certs, target, f"oci:{tmp_path / 'x'}:v1", ok=False
    )
    assert "unauthorized" in anonymous.stderr.lower() or "401" in anonymous.stderr
    skopeo(
        "copy",
        "--src-creds",
        "reader:nope",
        "--src-cert-dir",
        certs,
        target,
        f"oci:{tmp_path / 'y'}:v1",
        ok=False,
    )
    untrusted = skopeo(
        "copy", "--src-creds", "reader:reader-pw", target, f"oci:{tmp_path / 'z'}:v1", ok=False
    )
    assert "certificate" in untrusted.stderr
    # The pull-only user can neither push nor delete.
    push = skopeo(
        "copy", "--dest-creds", "reader:reader-pw", "--dest-cert-dir", certs,
        f"oci:{layout}:latest", f"docker://{htpasswd_registry}/e2e/skopeo:v2", ok=False,
    )  # fmt: skip
    assert "denied" in push.stderr.lower() or "403" in push.stderr
    delete = skopeo("delete", "--creds", "reader:reader-pw", "--cert-dir", certs, target, ok=False)
    assert "denied" in delete.stderr.lower() or "403" in delete.stderr
    assert manifest(htpasswd_registry, tls, "e2e/skopeo:v1", "writer").status_code == 200
    assert manifest(htpasswd_registry, tls, "e2e/skopeo:v2", "writer").status_code == 404


@pytest.fixture
def podman_root() -> Iterator[Path]:
    """Podman's storage: a short path (its runroot must stay under 50 characters)."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="s3b-podman-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def podman(root: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return run(
        need("podman"),
        "--storage-driver", "vfs",
        "--root", str(root / "storage"),
        "--runroot", str(root / "run"),
        "--cgroup-manager", "cgroupfs",
        "--events-backend", "file",
        *args,
        ok=ok,
    )  # fmt: skip


def test_podman_pull_push_with_credentials_over_https(
    htpasswd_registry: str, tls: TlsFiles, image: tuple[Path, dict[str, bytes]], podman_root: Path
) -> None:
    need("podman")
    if os.geteuid() != 0:
        if os.environ.get("S3BLOBS_REQUIRE_TOOLS"):
            pytest.fail("podman's test runs as root (S3BLOBS_REQUIRE_TOOLS is set)")
        pytest.skip("podman with the vfs driver runs as root here")
    layout, _ = image
    certs = str(tls.cert_dir)
    source = f"{htpasswd_registry}/e2e/podman:v1"
    skopeo(
        "copy",
        "--dest-creds",
        "writer:writer-pw",
        "--dest-cert-dir",
        certs,
        f"oci:{layout}:latest",
        f"docker://{source}",
    )
    config = manifest(htpasswd_registry, tls, "e2e/podman:v1", "writer").json()["config"]["digest"]
    podman(podman_root, "pull", "--creds", "reader:reader-pw", "--cert-dir", certs, source)
    copy = f"{htpasswd_registry}/e2e/podman-copy:v1"
    podman(podman_root, "push", "--creds", "writer:writer-pw", "--cert-dir", certs, source, copy)
    pushed = manifest(htpasswd_registry, tls, "e2e/podman-copy:v1", "reader")
    assert pushed.status_code == 200 and pushed.json()["config"]["digest"] == config
    refused = podman(
        podman_root, "push", "--creds", "reader:reader-pw", "--cert-dir", certs, source,
        f"{htpasswd_registry}/e2e/podman-refused:v1", ok=False,
    )  # fmt: skip
    assert "denied" in refused.stderr.lower() or "403" in refused.stderr
    podman(podman_root, "rmi", "--all", "--force")
    podman(podman_root, "pull", "--creds", "reader:reader-pw", "--cert-dir", certs, copy)
    listed = podman(podman_root, "images", "--format", "{{.ID}}")
    assert config.removeprefix("sha256:").startswith(listed.stdout.strip())


def test_no_mount_out_of_a_repository_the_user_cannot_pull(
    htpasswd_registry: str, tls: TlsFiles, storage: S3BlobStorage
) -> None:
    blob = os.urandom(1000)
    descriptor = storage.repository("secret/app").put("application/octet-stream", blob)
    base = f"https://{htpasswd_registry}/v2"
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override the test CA
    session.verify = str(tls.ca)
    mount = {"mount": descriptor.digest, "from": "secret/app"}
    as_mover = session.post(
        f"{base}/mine/app/blobs/uploads/", params=mount, auth=("mover", "mover-pw"), timeout=30
    )
    assert as_mover.status_code == 202 and "/blobs/uploads/" in as_mover.headers["Location"]
    links = [key for key in keys_of(storage) if "repositories/mine/app/_layers/" in key]
    assert links == []
    head = session.head(
        f"{base}/mine/app/blobs/{descriptor.digest}", auth=("mover", "mover-pw"), timeout=30
    )
    assert head.status_code == 404
    # The pull-only user gets 403 on push and delete, 401 without credentials.
    reader = ("reader", "reader-pw")
    assert (
        session.post(f"{base}/e2e/app/blobs/uploads/", auth=reader, timeout=30).status_code == 403
    )
    assert (
        session.delete(
            f"{base}/e2e/app/blobs/{descriptor.digest}", auth=reader, timeout=30
        ).status_code
        == 403
    )
    unauthenticated = session.post(f"{base}/e2e/app/blobs/uploads/", timeout=30)
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["errors"][0]["code"] == "UNAUTHORIZED"
    # With pull on the source, the same request mounts.
    as_writer = session.post(
        f"{base}/mine/app/blobs/uploads/", params=mount, auth=("writer", "writer-pw"), timeout=30
    )
    assert as_writer.status_code == 201


def test_skopeo_through_the_bearer_token_flow(
    storage: S3BlobStorage, tls: TlsFiles, image: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    layout, blobs = image
    key = signing_key()
    keys = tmp_path / "keys.pem"
    keys.write_bytes(public_pem(key))
    issued: list[dict[str, Any]] = []
    with serving(token_server(key, PASSWORDS, RIGHTS, issued), tls) as issuer:
        verifier = TokenVerifier(load_keys(keys, ("ES256",)), ISSUER, SERVICE, ("ES256",))
        authenticator = BearerAuthenticator(verifier, f"https://{issuer}/token", SERVICE)
        settings = SecuritySettings("token", authenticator, AllowAll())
        with serving(make_app(storage, settings), tls) as registry:
            certs = str(tls.cert_dir)
            target = f"docker://{registry}/e2e/token:v1"
            push_as("writer", certs, layout, target)
            assert {"type": "repository", "name": "e2e/token", "actions": ["pull", "push"]} in [
                a for entry in issued for a in entry["access"]
            ]
            assert pulled_as("reader", certs, target, tmp_path / "pulled") == blobs
            refused = skopeo(
                "copy", "--dest-creds", "reader:reader-pw", "--dest-cert-dir", certs,
                f"oci:{layout}:latest", f"docker://{registry}/e2e/token:v2", ok=False,
            )  # fmt: skip
            assert "unauthorized" in refused.stderr.lower() or "401" in refused.stderr
            delete = skopeo(
                "delete", "--creds", "reader:reader-pw", "--cert-dir", certs, target, ok=False
            )
            assert "unauthorized" in delete.stderr.lower() or "401" in delete.stderr
            # An anonymous token grants nothing here: no pull without credentials.
            skopeo("copy", "--src-cert-dir", certs, target, f"oci:{tmp_path / 'anon'}:v1", ok=False)
