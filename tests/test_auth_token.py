"""Bearer tokens: trusted keys from PEM or JWKS, pinned algorithms, the claims the
token spec requires, and the access claim."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authutil import ISSUER, SERVICE, grant, issue_token, make_tls, pem, public_pem, signing_key
from s3blobs.errors import ConfigError
from s3blobs.registry.auth.access import Scope
from s3blobs.registry.auth.challenge import AuthenticationFailed
from s3blobs.registry.auth.token import (
    BearerAuthenticator,
    TokenVerifier,
    load_keys,
)

ALGORITHMS = ("RS256", "ES256", "EdDSA")


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return signing_key()


@pytest.fixture
def verifier(key: Any, tmp_path: Path) -> TokenVerifier:
    path = tmp_path / "keys.pem"
    path.write_bytes(public_pem(key))
    return TokenVerifier(load_keys(path, ALGORITHMS), ISSUER, SERVICE, ALGORITHMS)


def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(AuthenticationFailed) as failure:
        verifier.verify(token)
    assert failure.value.error == "invalid_token"
    return str(failure.value)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_good_token_gives_its_subject_and_grants(key: Any, verifier: TokenVerifier) -> None:
    token = issue_token(key, [grant("library/app", "pull", "push"), grant("other", "*")])
    identity = verifier.verify(token)
    assert identity.name == "alice" and identity.verified
    assert identity.holds(Scope.repository("library/app", "pull", "push"))
    assert not identity.holds(Scope.repository("library/app", "delete"))
    assert identity.holds(Scope.repository("other", "delete"))  # "*" grants every action
    assert not identity.holds(Scope.repository("library/other", "pull"))


def test_an_anonymous_token_is_verified_and_nameless(key: Any, verifier: TokenVerifier) -> None:
    identity = verifier.verify(issue_token(key, [grant("public", "pull")], subject=""))
    assert identity.anonymous and identity.verified


def test_alg_none_is_refused(verifier: TokenVerifier) -> None:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    claims = {"iss": ISSUER, "aud": SERVICE, "exp": int(time.time()) + 60, "access": []}
    assert "algorithm" in refused(verifier, f"{header}.{b64(json.dumps(claims).encode())}.")


def test_hs256_keyed_with_the_public_key_is_refused(key: Any, verifier: TokenVerifier) -> None:
    # The classic confusion: an HMAC whose secret is the (public) verification key.
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {
        "iss": ISSUER,
        "aud": SERVICE,
        "sub": "mallory",
        "exp": int(time.time()) + 60,
        "access": [grant("library/app", "push")],
    }
    signing_input = f"{header}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(public_pem(key), signing_input.encode(), hashlib.sha256).digest()
    assert "algorithm" in refused(verifier, f"{signing_input}.{b64(mac)}")


def test_a_key_not_in_the_file_is_refused(verifier: TokenVerifier) -> None:
    stranger = signing_key()
    assert "trusted key" in refused(verifier, issue_token(stranger, []))


def test_a_tampered_token_is_refused(key: Any, verifier: TokenVerifier) -> None:
    header, _, signature = issue_token(key, [grant("a", "pull")]).split(".")
    forged = {"iss": ISSUER, "aud": SERVICE, "exp": int(time.time()) + 60}
    forged["access"] = [grant("a", "push")]  # type: ignore[assignment]
    refused(verifier, f"{header}.{b64(json.dumps(forged).encode())}.{signature}")


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"iss": "someone-else"}, "issuer"),
        ({"aud": "another-service"}, "audience"),
        ({"aud": None}, "aud"),
        ({"iss": None}, "iss"),
        ({"exp": None}, "exp"),
        ({"exp": int(time.time()) - 61}, "expired"),
        ({"nbf": int(time.time()) + 120}, "yet valid"),
    ],
)
def test_claims_are_checked(
    key: Any, verifier: TokenVerifier, claims: dict[str, Any], why: str
) -> None:
    token = issue_token(key, [], **claims)
    assert why.lower() in refused(verifier, token).lower()


@pytest.mark.parametrize(
    "access",
    [
        "repository:a:pull",
        [{"type": "repository", "name": "a", "actions": "pull"}],
        [{"type": "repository", "name": 7, "actions": ["pull"]}],
        ["repository:a:pull"],
    ],
)
def test_a_malformed_access_claim_is_refused(
    key: Any, verifier: TokenVerifier, access: Any
) -> None:
    token = issue_token(key, access)
    assert "access" in refused(verifier, token)


def test_sixty_seconds_of_clock_skew_are_allowed(key: Any, verifier: TokenVerifier) -> None:
    now = int(time.time())
    assert verifier.verify(issue_token(key, [], exp=now - 30)).verified
    assert verifier.verify(issue_token(key, [], nbf=now + 30)).verified


def test_aud_may_be_a_list_naming_the_service(key: Any, verifier: TokenVerifier) -> None:
    assert verifier.verify(issue_token(key, [], aud=["other", SERVICE])).verified


def test_an_algorithm_outside_the_pinned_list_is_refused(key: Any, tmp_path: Path) -> None:
    path = tmp_path / "keys.pem"
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(public_pem(rsa_key))
    verifier = TokenVerifier(load_keys(path, ("RS256",)), ISSUER, SERVICE, ("RS256",))
    assert verifier.verify(issue_token(rsa_key, [], algorithm="RS256")).verified
    # The key could verify PS256, but PS256 was not pinned.
    assert "algorithm" in refused(verifier, issue_token(rsa_key, [], algorithm="PS256"))


def test_keys_from_certificates_and_several_kinds(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    ed = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "keys.pem"
    path.write_bytes(tls.cert.read_bytes() + public_pem(ed))
    keys = load_keys(path, ALGORITHMS)
    assert [sorted(k.algorithms) for k in keys] == [["ES256"], ["EdDSA"]]
    verifier = TokenVerifier(keys, ISSUER, SERVICE, ALGORITHMS)
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    server_key = load_pem_private_key(tls.key.read_bytes(), None)
    assert verifier.verify(issue_token(server_key, [])).verified
    assert verifier.verify(issue_token(ed, [], algorithm="EdDSA")).verified


def test_jwks_keys_and_kid(key: Any, tmp_path: Path) -> None:
    other = signing_key()
    entries = []
    for kid, k in (("first", key), ("second", other)):
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(k.public_key()))
        entries.append({**jwk, "kid": kid})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": entries}))
    verifier = TokenVerifier(load_keys(path, ALGORITHMS), ISSUER, SERVICE, ALGORITHMS)
    assert verifier.verify(issue_token(other, [], headers={"kid": "second"})).verified
    assert verifier.verify(issue_token(other, [])).verified  # no kid: every key is tried
    refused(verifier, issue_token(other, [], headers={"kid": "first"}))  # kid names another


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "no public key"),
        (b"hello", "no public key"),
        (None, "private key"),
        (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "not a public key"),
        (b'{"keys": "nope"}', "'keys' list"),
        (b"{not json", "not JSON"),
    ],
)
def test_bad_key_files(tmp_path: Path, content: bytes | None, why: str) -> None:
    path = tmp_path / "keys"
    path.write_bytes(content if content is not None else pem(signing_key()))
    with pytest.raises(ConfigError, match="S3BLOBS_AUTH_TOKEN_KEYS") as error:
        load_keys(path, ALGORITHMS)
    assert why in str(error.value)


def test_a_key_that_fits_no_pinned_algorithm_is_refused(key: Any, tmp_path: Path) -> None:
    path = tmp_path / "keys.pem"
    path.write_bytes(public_pem(key))  # EC P-256: ES256 only
    with pytest.raises(ConfigError, match="verifies none of S3BLOBS_AUTH_TOKEN_ALGORITHMS"):
        load_keys(path, ("RS256",))


def test_bearer_authenticator_and_challenge(key: Any, verifier: TokenVerifier) -> None:
    authenticator = BearerAuthenticator(verifier, "https://auth.example/token", SERVICE)
    token = issue_token(key, [grant("a", "pull")])
    assert authenticator.authenticate(f"Bearer {token}").name == "alice"
    with pytest.raises(AuthenticationFailed):
        authenticator.authenticate("Basic YTpi")
    assert not authenticator.anonymous().holds(Scope.repository("a", "pull"))
    headers: dict[str, str] = {}
    authenticator.challenge(Scope.repository("a/b", "pull", "push"), "insufficient_scope").write(
        headers
    )
    assert headers["WWW-Authenticate"] == (
        'Bearer realm="https://auth.example/token",service="s3blobs-test",'
        'scope="repository:a/b:pull,push",error="insufficient_scope"'
    )


def test_a_verified_token_is_remembered_until_it_expires(
    key: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys.pem"
    path.write_bytes(public_pem(key))
    verifier = TokenVerifier(load_keys(path, ALGORITHMS), ISSUER, SERVICE, ALGORITHMS, leeway=0)
    checks = []
    real_check = verifier.check

    def counting_check(token: str) -> Any:
        checks.append(token)
        return real_check(token)

    monkeypatch.setattr(verifier, "check", counting_check)
    token = issue_token(key, [grant("a", "pull")], exp=int(time.time()) + 1)
    assert verifier.verify(token).name == "alice"
    assert verifier.verify(token).name == "alice"
    assert len(checks) == 1  # the signature is checked once per token
    time.sleep(max(0.0, int(time.time()) + 1.05 - time.time()))
    with pytest.raises(AuthenticationFailed, match="expired"):
        verifier.verify(token)  # past its exp the cached answer is not used
    assert len(checks) == 2
    with pytest.raises(AuthenticationFailed):
        verifier.verify("garbage")
    with pytest.raises(AuthenticationFailed):
        verifier.verify("garbage")  # failures are never remembered
    assert len(checks) == 4
