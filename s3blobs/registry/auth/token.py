"""Bearer tokens, verified as the Go registry's token spec has it (``docs/spec/auth``).

A token server (the ``realm``) issues JWTs signed with its private key; the registry
holds only public keys or certificates (PEM) or a JWKS, and accepts a token when:

- its ``alg`` is one of the pinned algorithms (``S3BLOBS_AUTH_TOKEN_ALGORITHMS``) and
  fits the key (an RSA key verifies RS*/PS*, an EC key the ES* of its curve, an
  Ed25519 key EdDSA). The token's header never chooses: ``none`` and HS256 (an HMAC
  keyed with the public key, the classic confusion) are never accepted;
- its signature verifies with a trusted key (``kid`` narrows the choice where the
  JWKS names its keys);
- ``iss`` is the issuer, ``aud`` names this service, ``exp`` is present; ``exp`` and
  ``nbf`` allow 60 s of clock skew;
- its ``access`` claim is well formed: what it grants becomes the identity's grants,
  and each request's scope must be among them.

A client sends the same token with every request until it expires: a verified
token is remembered (keyed by its SHA-256) for at most ``cache_ttl`` seconds and
never past its own ``exp`` (plus the leeway), so the signature is checked once per
token rather than once per request.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cachetools import TTLCache
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ...errors import ConfigError
from .access import Identity, Scope
from .challenge import INVALID_TOKEN, AuthenticationFailed, BearerChallenge, Challenge

KEYS_VARIABLE = "S3BLOBS_AUTH_TOKEN_KEYS"
DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
LEEWAY = 60
_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)
_EC_ALGORITHM = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})


@dataclass(frozen=True)
class TrustedKey:
    key: Any  # a cryptography public key
    algorithms: frozenset[str]  # the pinned algorithms this key can verify
    kid: str | None = None


def algorithms_for(key: Any) -> frozenset[str]:
    """Every JWS algorithm a public key of this type verifies."""
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = _EC_ALGORITHM.get(key.curve.name)
        return frozenset({algorithm}) if algorithm else frozenset()
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return frozenset({"EdDSA"})
    return frozenset()


def load_keys(path: str | os.PathLike[str], algorithms: tuple[str, ...]) -> list[TrustedKey]:
    """The public keys of a PEM file (public keys, certificates) or a JWKS."""
    where = f"{KEYS_VARIABLE}={path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read it: {exc}") from None
    found = _jwks(text, where) if text.lstrip().startswith("{") else _pem(text, where)
    if not found:
        raise ConfigError(f"{where}: no public key or certificate in it")
    keys = []
    for number, (key, kid) in enumerate(found, start=1):
        usable = algorithms_for(key) & frozenset(algorithms)
        if not usable:
            raise ConfigError(
                f"{where}: key {number} ({type(key).__name__}) verifies none of "
                f"S3BLOBS_AUTH_TOKEN_ALGORITHMS={','.join(algorithms)}"
            )
        keys.append(TrustedKey(key, usable, kid))
    return keys


def _pem(text: str, where: str) -> list[tuple[Any, str | None]]:
    found: list[tuple[Any, str | None]] = []
    for match in _PEM.finditer(text):
        kind = match.group(1)
        try:
            if kind == "CERTIFICATE":
                found.append(
                    (x509.load_pem_x509_certificate(match.group(0).encode()).public_key(), None)
                )
            elif kind in ("PUBLIC KEY", "RSA PUBLIC KEY"):
                found.append((load_pem_public_key(match.group(0).encode()), None))
            elif "PRIVATE KEY" in kind:
                raise ConfigError(
                    f"{where}: holds a private key; give the registry only public keys "
                    "or certificates (the private key stays with the token server)"
                )
            else:
                raise ConfigError(f"{where}: unexpected PEM block {kind!r}")
        except ValueError as exc:
            raise ConfigError(f"{where}: a {kind} block does not load: {exc}") from None
    return found


def _jwks(text: str, where: str) -> list[tuple[Any, str | None]]:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: not JSON (a JWKS) nor PEM: {exc}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: a JWKS needs a 'keys' list")
    found: list[tuple[Any, str | None]] = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or entry.get("kty") == "oct" or "d" in entry:
            raise ConfigError(f"{where}: JWKS key {number} is not a public key")
        try:
            key = jwt.PyJWK(entry).key
        except jwt.PyJWTError as exc:
            raise ConfigError(f"{where}: JWKS key {number} does not load: {exc}") from None
        kid = entry.get("kid")
        found.append((key, kid if isinstance(kid, str) else None))
    return found


class TokenVerifier:
    """Checks a token and returns the identity it speaks for."""

    def __init__(
        self,
        keys: list[TrustedKey],
        issuer: str,
        service: str,
        algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS,
        leeway: int = LEEWAY,
        cache_ttl: float = 60.0,
        cache_size: int = 4096,
    ) -> None:
        self.keys, self.issuer, self.service = keys, issuer, service
        self.algorithms = frozenset(algorithms) & ASYMMETRIC
        self.leeway = leeway
        self._cache: TTLCache[bytes, tuple[Identity, float]] = TTLCache(cache_size, cache_ttl)
        self._lock = threading.Lock()

    def verify(self, token: str) -> Identity:
        """The identity of a valid token (remembered); AuthenticationFailed otherwise."""
        key = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and time.time() < cached[1]:
            return cached[0]
        identity, expires = self.check(token)
        with self._lock:
            self._cache[key] = (identity, expires)
        return identity

    def check(self, token: str) -> tuple[Identity, float]:
        """Verify ``token`` in full (no cache): its identity, and until when it holds."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationFailed("malformed token", INVALID_TOKEN) from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise AuthenticationFailed("token algorithm not accepted", INVALID_TOKEN)
        for trusted in self.keys:
            if algorithm not in trusted.algorithms:
                continue
            if trusted.kid is not None and kid is not None and trusted.kid != kid:
                continue
            try:
                claims = jwt.decode(
                    token,
                    trusted.key,
                    algorithms=[algorithm],
                    audience=self.service,
                    issuer=self.issuer,
                    leeway=self.leeway,
                    options={"require": ["exp", "iss", "aud"]},
                )
            except jwt.InvalidSignatureError:
                continue  # perhaps another trusted key signed it
            except jwt.PyJWTError as exc:
                raise AuthenticationFailed(f"token refused: {exc}", INVALID_TOKEN) from None
            return _identity(claims), float(claims["exp"]) + self.leeway
        raise AuthenticationFailed("token not signed by a trusted key", INVALID_TOKEN)


def _identity(claims: dict[str, Any]) -> Identity:
    subject = claims.get("sub")
    access = claims.get("access", [])
    if not isinstance(access, list):
        raise AuthenticationFailed("the access claim is not a list", INVALID_TOKEN)
    grants: set[tuple[str, str, str]] = set()
    for entry in access:
        if not isinstance(entry, dict):
            raise AuthenticationFailed("malformed access claim", INVALID_TOKEN)
        kind, name, actions = entry.get("type"), entry.get("name"), entry.get("actions")
        if not (
            isinstance(kind, str)
            and isinstance(name, str)
            and isinstance(actions, list)
            and all(isinstance(action, str) for action in actions)
        ):
            raise AuthenticationFailed("malformed access claim", INVALID_TOKEN)
        grants.update((kind, name, action) for action in actions)
    name = subject if isinstance(subject, str) and subject else None
    return Identity(name=name, verified=True, grants=frozenset(grants))


class BearerAuthenticator:
    """``Authorization: Bearer <token>``; challenges send the client to the realm."""

    def __init__(self, verifier: TokenVerifier, realm: str, service: str) -> None:
        self.verifier, self.realm, self.service = verifier, realm, service

    def anonymous(self) -> Identity:
        # Without a token nothing is granted: the client must fetch one.
        return Identity(grants=frozenset())

    def authenticate(self, authorization: str) -> Identity:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise AuthenticationFailed(f"expected a Bearer token, got {scheme[:20]!r}")
        return self.verifier.verify(token.strip())

    def challenge(self, scope: Scope | None = None, error: str | None = None) -> Challenge:
        return BearerChallenge(self.realm, self.service, scope, error)
