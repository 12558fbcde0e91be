"""The security settings: ``S3BLOBS_AUTH*``, ``S3BLOBS_ACL``, ``S3BLOBS_TLS_*``.

Everything is read and checked at start (files loaded, keys parsed, rules compiled),
so a mistake stops the registry with the variable's name instead of surfacing as
refused logins later.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ...errors import ConfigError
from .access import AccessController, AllowAll, AuthenticatedUsers
from .acl import AclPolicy
from .challenge import Authenticator
from .htpasswd import BasicAuthenticator, HtpasswdFile
from .token import (
    ASYMMETRIC,
    DEFAULT_ALGORITHMS,
    BearerAuthenticator,
    TokenVerifier,
    load_keys,
)

MODES = ("none", "htpasswd", "token")
TOKEN_VARIABLES = ("REALM", "SERVICE", "ISSUER", "KEYS")
# A value written into a challenge header between double quotes.
_HEADER_SAFE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e ]+")

HELP = """\
security (environment):
  S3BLOBS_AUTH                    none (default), htpasswd or token
  S3BLOBS_AUTH_HTPASSWD           htpasswd file of bcrypt entries (htpasswd -B), re-read on change
  S3BLOBS_AUTH_TOKEN_REALM        token server URL clients are sent to (Bearer challenge)
  S3BLOBS_AUTH_TOKEN_SERVICE      this registry's name in tokens ('aud')
  S3BLOBS_AUTH_TOKEN_ISSUER       the token server's name in tokens ('iss')
  S3BLOBS_AUTH_TOKEN_KEYS         PEM public keys / certificates, or a JWKS, trusted to sign
  S3BLOBS_AUTH_TOKEN_ALGORITHMS   accepted signature algorithms (RS256,ES256,EdDSA)
  S3BLOBS_ACL                     TOML access rules per repository (default: users may do
                                  everything, anonymous requests nothing)
  S3BLOBS_TLS_CERT, S3BLOBS_TLS_KEY  serve HTTPS with this certificate (chain) and key
A non-loopback --host needs authentication, or S3BLOBS_AUTH=none set explicitly."""


@dataclass(frozen=True)
class SecuritySettings:
    """Who may do what, and TLS. ``SecuritySettings()`` is an open registry."""

    mode: str = "none"
    authenticator: Authenticator | None = None
    access: AccessController = field(default_factory=AllowAll)
    #: True when S3BLOBS_AUTH=none was set on purpose (see check_listen_address).
    open_on_purpose: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> SecuritySettings:
        """Read and check every security variable; ``tls_cert``/``tls_key`` (the
        command line's) win over ``S3BLOBS_TLS_*``."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            return env.get(f"S3BLOBS_{name}", "").strip()

        raw_mode = get("AUTH")
        mode = raw_mode.lower() or "none"
        if mode not in MODES:
            raise ConfigError(f"S3BLOBS_AUTH={raw_mode!r}: expected none, htpasswd or token")
        _refuse_unused(env, mode)
        authenticator: Authenticator | None = None
        access: AccessController = AllowAll()
        if mode == "htpasswd":
            path = get("AUTH_HTPASSWD")
            if not path:
                raise ConfigError("S3BLOBS_AUTH=htpasswd needs S3BLOBS_AUTH_HTPASSWD (a file)")
            authenticator = BasicAuthenticator(HtpasswdFile(path))
            access = AuthenticatedUsers()
        elif mode == "token":
            authenticator = _bearer(get)
        if get("ACL"):
            access = AclPolicy.load(get("ACL"))
        cert, key = tls_cert or get("TLS_CERT") or None, tls_key or get("TLS_KEY") or None
        settings = cls(mode, authenticator, access, raw_mode.lower() == "none", cert, key)
        settings.ssl_context()  # a certificate that does not load stops the start
        return settings

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server side of TLS (1.2 or later), or None for plain HTTP."""
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError(
                "S3BLOBS_TLS_CERT and S3BLOBS_TLS_KEY (--tls-cert, --tls-key) go together"
            )
        if not self.tls_cert or not self.tls_key:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"S3BLOBS_TLS_CERT={self.tls_cert} / S3BLOBS_TLS_KEY={self.tls_key}: "
                f"cannot load the certificate and key: {exc}"
            ) from None
        return context


def _bearer(get: Callable[[str], str]) -> BearerAuthenticator:
    values = {name: get(f"AUTH_TOKEN_{name}") for name in TOKEN_VARIABLES}
    missing = [f"S3BLOBS_AUTH_TOKEN_{n}" for n, v in values.items() if not v]
    if missing:
        raise ConfigError("S3BLOBS_AUTH=token needs " + ", ".join(missing))
    realm, service = values["REALM"], values["SERVICE"]
    if not re.match(r"https?://[^/\s]+", realm) or not _HEADER_SAFE.fullmatch(realm):
        raise ConfigError(f"S3BLOBS_AUTH_TOKEN_REALM={realm!r}: expected an http(s) URL")
    if not _HEADER_SAFE.fullmatch(service):
        raise ConfigError(f"S3BLOBS_AUTH_TOKEN_SERVICE={service!r}: printable, no quotes")
    listed = get("AUTH_TOKEN_ALGORITHMS")
    algorithms = tuple(a.strip() for a in listed.split(",") if a.strip()) or DEFAULT_ALGORITHMS
    refused = [a for a in algorithms if a not in ASYMMETRIC]
    if refused:
        raise ConfigError(
            f"S3BLOBS_AUTH_TOKEN_ALGORITHMS: {', '.join(refused)} not accepted; choose from "
            + ",".join(sorted(ASYMMETRIC))
            + " (none and HMAC algorithms are never accepted)"
        )
    keys = load_keys(values["KEYS"], algorithms)
    verifier = TokenVerifier(keys, values["ISSUER"], service, algorithms)
    return BearerAuthenticator(verifier, realm, service)


def _refuse_unused(env: Mapping[str, str], mode: str) -> None:
    """A variable of another mode is a mistake that would leave the registry open or
    differently secured than its operator believes: stop and say so."""
    used = {"htpasswd": ("S3BLOBS_AUTH_HTPASSWD",), "token": ("S3BLOBS_AUTH_TOKEN_",)}
    for other, prefixes in used.items():
        if other == mode:
            continue
        for name in sorted(env):
            if name.startswith(prefixes) and env[name].strip():
                raise ConfigError(
                    f"{name} is set but S3BLOBS_AUTH={mode}: set S3BLOBS_AUTH={other}"
                )


def check_listen_address(host: str, settings: SecuritySettings) -> None:
    """Refuse to serve an open registry beyond this machine unless told to on purpose."""
    if settings.mode != "none" or settings.open_on_purpose or _is_loopback(host):
        return
    raise ConfigError(
        f"refusing to listen on {host} without authentication: anyone who can reach it "
        "could push, overwrite tags and delete. Set S3BLOBS_AUTH=htpasswd or token, "
        "listen on 127.0.0.1, or set S3BLOBS_AUTH=none to serve an open registry on purpose"
    )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere
