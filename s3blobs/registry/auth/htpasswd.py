"""Basic authentication against an Apache htpasswd file of bcrypt entries.

Only bcrypt (``$2y$``, ``$2b$``: what ``htpasswd -B`` writes) is accepted: Apache's
other schemes (MD5-crypt, SHA-1, crypt, plain) are fast to brute-force, so a file
holding one is refused at load, naming the line and never the hash.

bcrypt is slow by design (tens to hundreds of milliseconds a check), and a client
sends its credentials with every request: a verified credential is remembered for
``cache_ttl`` seconds, keyed by an HMAC of it under a key that lives only in this
process, never by the password itself. Failures are not remembered. A user the file
does not hold costs the same bcrypt work as a wrong password, so response times do
not tell which user names exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
from cachetools import TTLCache

from ...errors import ConfigError
from .access import Identity, Scope
from .challenge import AuthenticationFailed, BasicChallenge, Challenge

log = logging.getLogger(__name__)

VARIABLE = "S3BLOBS_AUTH_HTPASSWD"
REALM = "s3blobs"
_BCRYPT = re.compile(r"\$2[by]\$(?P<cost>\d\d)\$[./A-Za-z0-9]{53}")
# bcrypt uses the first 72 bytes of a password (bcrypt 5 raises on longer ones;
# Apache's htpasswd -B truncates, so a long password must be truncated to match).
_BCRYPT_MAX_PASSWORD = 72


@dataclass(frozen=True)
class _Loaded:
    """One reading of the file: the entries, and a dummy hash of their cost."""

    signature: tuple[int, int, int]
    hashes: dict[str, bytes] = field(default_factory=dict)
    dummy: bytes = b""


class HtpasswdFile:
    """The users of an htpasswd file, re-read whenever the file changes."""

    def __init__(
        self, path: str | os.PathLike[str], cache_ttl: float = 60.0, cache_size: int = 1024
    ) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._cache: TTLCache[bytes, str] = TTLCache(maxsize=cache_size, ttl=cache_ttl)
        self._cache_key = secrets.token_bytes(32)
        self._loaded = self._load()  # raises ConfigError at start for a bad file

    def verify(self, user: str, password: str) -> bool:
        """Whether ``password`` is ``user``'s (constant bcrypt work for unknown users)."""
        loaded = self._current()
        key = hmac.new(self._cache_key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            if self._cache.get(key) == user:
                return True
        secret = password.encode()[:_BCRYPT_MAX_PASSWORD]
        stored = loaded.hashes.get(user)
        # An unknown user is checked against a dummy hash of the same cost: equal work.
        ok = bcrypt.checkpw(secret, stored if stored is not None else loaded.dummy)
        if ok and stored is not None:
            with self._lock:
                if self._loaded is loaded:  # not a credential of a file since replaced
                    self._cache[key] = user
            return True
        return False

    def _current(self) -> _Loaded:
        """The entries, re-read first if the file changed (size, time or inode)."""
        signature = self._signature()
        loaded = self._loaded
        if signature == loaded.signature:
            return loaded
        with self._lock:
            if self._loaded.signature == signature:
                return self._loaded
            try:
                self._loaded = self._load()
            except (ConfigError, OSError) as exc:
                # Fail closed: a broken file authenticates nobody until it is fixed.
                log.error("%s: %s; no user can sign in until the file is fixed", VARIABLE, exc)
                self._loaded = _Loaded(signature, {}, _dummy_hash(4))
            self._cache.clear()
            return self._loaded

    def _signature(self) -> tuple[int, int, int]:
        try:
            stat = self.path.stat()
        except OSError:
            return (-1, -1, -1)
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def _load(self) -> _Loaded:
        signature = self._signature()
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{VARIABLE}={self.path}: cannot read it: {exc}") from None
        hashes: dict[str, bytes] = {}
        costs = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{VARIABLE}={self.path}, line {number}"
            user, sep, hashed = line.partition(":")
            if not sep or not user:
                raise ConfigError(f"{where}: expected 'user:bcrypt-hash'")
            match = _BCRYPT.fullmatch(hashed)
            if not match:
                # Name the line and the user, never the hash.
                raise ConfigError(
                    f"{where}: the entry of user {user!r} is not bcrypt ($2y$ or $2b$); "
                    "create it with 'htpasswd -B' (other schemes are refused)"
                )
            if user in hashes:
                raise ConfigError(f"{where}: user {user!r} appears twice")
            hashes[user] = hashed.encode()
            costs.append(int(match.group("cost")))
        if not 4 <= max(costs, default=4) <= 31:
            raise ConfigError(f"{VARIABLE}={self.path}: a bcrypt cost is outside 4..31")
        return _Loaded(signature, hashes, _dummy_hash(max(costs, default=10)))


def _dummy_hash(cost: int) -> bytes:
    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=max(4, cost)))


class BasicAuthenticator:
    """``Authorization: Basic`` against an :class:`HtpasswdFile`."""

    def __init__(self, passwords: HtpasswdFile, realm: str = REALM) -> None:
        self.passwords = passwords
        self.realm = realm

    def anonymous(self) -> Identity:
        return Identity()

    def authenticate(self, authorization: str) -> Identity:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            raise AuthenticationFailed(f"expected Basic credentials, got {scheme[:20]!r}")
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationFailed("malformed Basic credentials") from None
        user, sep, password = decoded.partition(":")
        if not sep or not user:
            raise AuthenticationFailed("malformed Basic credentials")
        if not self.passwords.verify(user, password):
            raise AuthenticationFailed("wrong user name or password")
        return Identity(name=user, verified=True)

    def challenge(self, scope: Scope | None = None, error: str | None = None) -> Challenge:
        return BasicChallenge(self.realm)
