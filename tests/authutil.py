"""What the security tests share: certificates, htpasswd files, signing keys, tokens,
and an image whose config names its layers' true diff_ids (podman checks them)."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import s3blobs.s3
from conftest import BUCKET, PART
from s3blobs import Config, S3BlobStorage

ISSUER = "test-issuer"
SERVICE = "s3blobs-test"


@contextlib.contextmanager
def mocked_bucket() -> Iterator[Any]:
    """An in-process moto S3 with the test bucket, for a whole module: its tests keep
    apart by prefix (:func:`isolated_storage`) instead of paying moto's setup each."""
    from moto import mock_aws

    with mock_aws():
        import boto3

        # The test's own calls go through a plain client; the storages' client is the one
        # conftest records (the Terraform test checks the policy against what it saw).
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield s3blobs.s3.make_client(Config(bucket=BUCKET))


def isolated_storage(client: Any) -> S3BlobStorage:
    """A storage under a fresh prefix of the shared bucket."""
    config = Config(
        bucket=BUCKET,
        prefix=f"t-{uuid.uuid4().hex[:12]}",
        part_size=PART,
        max_concurrency=2,
        cache_size=0,
    )
    return S3BlobStorage(config, client=client, check_bucket=False)


def keys_of(storage: S3BlobStorage) -> list[str]:
    """Every key under the storage's prefix."""
    pages = storage.client.get_paginator("list_objects_v2").paginate(
        Bucket=storage.config.bucket, Prefix=storage.paths.root
    )
    return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the test CA's certificate: what clients trust
    cert: Path  # the server's certificate, for 127.0.0.1 and localhost
    key: Path
    cert_dir: Path  # a directory holding only ca.crt (skopeo/podman --cert-dir)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def public_pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def make_tls(directory: Path) -> TlsFiles:
    """A CA and a server certificate it signed (ECDSA P-256, valid for a day)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("s3blobs test CA"))
        .issuer_name(_name("s3blobs test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_dir = directory / "certs.d"
    cert_dir.mkdir(exist_ok=True)
    files = TlsFiles(
        directory / "ca.pem", directory / "server.pem", directory / "server.key", cert_dir
    )
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (cert_dir / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(pem(key))
    return files


def bcrypt_entry(user: str, password: str, cost: int = 4, prefix: str = "$2y$") -> str:
    """An htpasswd line as ``htpasswd -B`` writes it ($2y$), or with another prefix."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()
    return f"{user}:{prefix}{hashed[4:]}"


def write_htpasswd(path: Path, users: dict[str, str], cost: int = 4) -> Path:
    path.write_text("".join(bcrypt_entry(u, p, cost) + "\n" for u, p in users.items()))
    return path


def basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def issue_token(
    key: Any,
    access: list[dict[str, Any]],
    *,
    subject: str = "alice",
    algorithm: str = "ES256",
    lifetime: int = 300,
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "aud": SERVICE,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
        "access": access,
        **claims,
    }
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def grant(name: str, *actions: str) -> dict[str, Any]:
    return {"type": "repository", "name": name, "actions": list(actions)}


def token_server(
    key: Any, passwords: dict[str, str], rights: dict[str, list[str]], issued: list[Any]
) -> Any:
    """A token server after the Docker token spec (a WSGI app): Basic credentials in, a JWT
    out granting, of the actions each ``scope`` asks, those the user has (none for an
    anonymous request). Each grant is appended to ``issued``."""
    from werkzeug.wrappers import Request, Response

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        subject = ""
        if request.authorization is not None:
            user = request.authorization.username or ""
            if passwords.get(user) != request.authorization.password:
                return Response("bad credentials", status=401)(environ, start_response)
            subject = user
        access = []
        for scope in request.args.getlist("scope"):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a in rights.get(subject, [])]
            if kind == "repository" and granted:
                access.append({"type": kind, "name": name, "actions": granted})
        if request.args.get("service") != SERVICE:
            return Response("unknown service", status=400)(environ, start_response)
        token = issue_token(key, access, subject=subject)
        issued.append({"subject": subject, "access": access})
        body = {"token": token, "access_token": token, "expires_in": 300}
        return Response(json.dumps(body), content_type="application/json")(environ, start_response)

    return app
