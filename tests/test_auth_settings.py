"""Security settings from the environment, the listen-address rule, and ``s3blobs serve``'s
TLS and refusal."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from authutil import make_tls, public_pem, signing_key, write_htpasswd
from netutil import free_port
from s3blobs.cli import main
from s3blobs.errors import ConfigError
from s3blobs.registry.auth.access import AllowAll, AuthenticatedUsers
from s3blobs.registry.auth.acl import AclPolicy
from s3blobs.registry.auth.htpasswd import BasicAuthenticator
from s3blobs.registry.auth.settings import SecuritySettings, check_listen_address
from s3blobs.registry.auth.token import BearerAuthenticator


def test_default_is_an_open_registry() -> None:
    settings = SecuritySettings.from_env({})
    assert settings.mode == "none" and settings.authenticator is None
    assert isinstance(settings.access, AllowAll) and not settings.open_on_purpose
    assert settings.ssl_context() is None


def test_htpasswd(tmp_path: Path) -> None:
    path = write_htpasswd(tmp_path / "h", {"alice": "pw"})
    settings = SecuritySettings.from_env(
        {"S3BLOBS_AUTH": "htpasswd", "S3BLOBS_AUTH_HTPASSWD": str(path)}
    )
    assert isinstance(settings.authenticator, BasicAuthenticator)
    assert isinstance(settings.access, AuthenticatedUsers)


def test_token_with_acl(tmp_path: Path) -> None:
    keys = tmp_path / "keys.pem"
    keys.write_bytes(public_pem(signing_key()))
    acl = tmp_path / "acl.toml"
    acl.write_text('[[rule]]\nrepositories = ["**"]\nusers = ["*"]\nactions = ["pull"]\n')
    settings = SecuritySettings.from_env(
        {
            "S3BLOBS_AUTH": "token",
            "S3BLOBS_AUTH_TOKEN_REALM": "https://auth.example/token",
            "S3BLOBS_AUTH_TOKEN_SERVICE": "registry",
            "S3BLOBS_AUTH_TOKEN_ISSUER": "issuer",
            "S3BLOBS_AUTH_TOKEN_KEYS": str(keys),
            "S3BLOBS_AUTH_TOKEN_ALGORITHMS": "ES256",
            "S3BLOBS_ACL": str(acl),
        }
    )
    assert isinstance(settings.authenticator, BearerAuthenticator)
    assert settings.authenticator.verifier.algorithms == {"ES256"}
    assert isinstance(settings.access, AclPolicy)


TOKEN = {
    "S3BLOBS_AUTH": "token",
    "S3BLOBS_AUTH_TOKEN_REALM": "https://auth.example/token",
    "S3BLOBS_AUTH_TOKEN_SERVICE": "registry",
    "S3BLOBS_AUTH_TOKEN_ISSUER": "issuer",
    "S3BLOBS_AUTH_TOKEN_KEYS": "/nonexistent",
}


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"S3BLOBS_AUTH": "ldap"}, "S3BLOBS_AUTH="),
        ({"S3BLOBS_AUTH": "htpasswd"}, "S3BLOBS_AUTH_HTPASSWD"),
        (
            {"S3BLOBS_AUTH": "htpasswd", "S3BLOBS_AUTH_HTPASSWD": "/nonexistent"},
            "S3BLOBS_AUTH_HTPASSWD=",
        ),
        # A password file without S3BLOBS_AUTH would leave the registry open: refused.
        ({"S3BLOBS_AUTH_HTPASSWD": "/etc/htpasswd"}, "S3BLOBS_AUTH_HTPASSWD is set"),
        ({**TOKEN, "S3BLOBS_AUTH": "none"}, "S3BLOBS_AUTH_TOKEN_ISSUER is set"),
        ({"S3BLOBS_AUTH": "token"}, "S3BLOBS_AUTH_TOKEN_REALM"),
        ({**TOKEN, "S3BLOBS_AUTH_TOKEN_REALM": "ftp://x"}, "S3BLOBS_AUTH_TOKEN_REALM="),
        ({**TOKEN, "S3BLOBS_AUTH_TOKEN_SERVICE": 's"'}, "S3BLOBS_AUTH_TOKEN_SERVICE="),
        (
            {**TOKEN, "S3BLOBS_AUTH_TOKEN_ALGORITHMS": "RS256,HS256"},
            "S3BLOBS_AUTH_TOKEN_ALGORITHMS: HS256",
        ),
        ({**TOKEN, "S3BLOBS_AUTH_TOKEN_ALGORITHMS": "none"}, "S3BLOBS_AUTH_TOKEN_ALGORITHMS: none"),
        (TOKEN, "S3BLOBS_AUTH_TOKEN_KEYS="),
        ({"S3BLOBS_ACL": "/nonexistent"}, "S3BLOBS_ACL="),
        ({"S3BLOBS_TLS_CERT": "/etc/cert.pem"}, "go together"),
        (
            {"S3BLOBS_TLS_CERT": "/nonexistent", "S3BLOBS_TLS_KEY": "/nonexistent"},
            "S3BLOBS_TLS_CERT=",
        ),
    ],
)
def test_mistakes_name_the_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(variable)):
        SecuritySettings.from_env(environ)


def test_tls_from_environment_or_command_line(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    from_env = SecuritySettings.from_env(
        {"S3BLOBS_TLS_CERT": str(tls.cert), "S3BLOBS_TLS_KEY": str(tls.key)}
    )
    assert from_env.ssl_context() is not None
    flags = SecuritySettings.from_env({}, tls_cert=str(tls.cert), tls_key=str(tls.key))
    assert flags.tls_cert == str(tls.cert)
    with pytest.raises(ConfigError, match="cannot load"):
        SecuritySettings.from_env({}, tls_cert=str(tls.key), tls_key=str(tls.cert))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"])
def test_loopback_is_fine_without_auth(host: str) -> None:
    check_listen_address(host, SecuritySettings.from_env({}))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "registry.example"])
def test_beyond_loopback_needs_auth_or_an_explicit_none(host: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"without authentication.*S3BLOBS_AUTH=none"):
        check_listen_address(host, SecuritySettings.from_env({}))
    check_listen_address(host, SecuritySettings.from_env({"S3BLOBS_AUTH": "none"}))
    path = write_htpasswd(tmp_path / "h", {"a": "b"})
    check_listen_address(
        host,
        SecuritySettings.from_env({"S3BLOBS_AUTH": "htpasswd", "S3BLOBS_AUTH_HTPASSWD": str(path)}),
    )


def test_serve_refuses_an_open_public_address(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("S3BLOBS_")]:
        monkeypatch.delenv(name)
    assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    error = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0 without authentication" in error
    assert "could push" in error  # it says why


def test_serve_help_lists_the_security_variables(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for text in (
        "--tls-cert",
        "--tls-key",
        "S3BLOBS_AUTH ",
        "S3BLOBS_AUTH_HTPASSWD",
        "S3BLOBS_AUTH_TOKEN_REALM",
        "S3BLOBS_AUTH_TOKEN_SERVICE",
        "S3BLOBS_AUTH_TOKEN_ISSUER",
        "S3BLOBS_AUTH_TOKEN_KEYS",
        "S3BLOBS_AUTH_TOKEN_ALGORITHMS",
        "S3BLOBS_ACL",
        "S3BLOBS_TLS_CERT",
        "S3BLOBS_TLS_KEY",
    ):
        assert text in out


@pytest.mark.e2e
def test_serve_answers_https_with_tls_flags(tmp_path: Path) -> None:
    """``s3blobs serve --tls-cert --tls-key`` with htpasswd auth: HTTPS, challenge, login."""
    tls = make_tls(tmp_path)
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"alice": "secret"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3BLOBS_")}
    env.update(S3BLOBS_AUTH="htpasswd", S3BLOBS_AUTH_HTPASSWD=str(htpasswd))
    port = free_port()
    command = [sys.executable, "-m", "s3blobs", "serve", "--port", str(port)]
    command += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    watchdog = threading.Timer(60, proc.kill)  # a server that never says it started
    watchdog.start()
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().decode() for _ in range(3)]
        assert f"registry on https://127.0.0.1:{port}" in lines[-1], lines
        url = f"https://127.0.0.1:{port}/v2/"
        anonymous = requests.get(url, verify=str(tls.ca), timeout=10)
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="s3blobs"'
        signed_in = requests.get(url, verify=str(tls.ca), auth=("alice", "secret"), timeout=10)
        assert signed_in.status_code == 200
        assert signed_in.headers["X-Content-Type-Options"] == "nosniff"
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, timeout=10)  # not trusted without the test CA
    finally:
        watchdog.cancel()
        proc.terminate()
        proc.wait(timeout=10)
