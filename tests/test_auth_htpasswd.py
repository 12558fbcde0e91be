"""htpasswd: bcrypt only, refused schemes named by line, re-read on change, equal work for
unknown users, and the verified-credential cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from authutil import basic, bcrypt_entry, write_htpasswd
from s3blobs.errors import ConfigError
from s3blobs.registry.auth import htpasswd as htpasswd_module
from s3blobs.registry.auth.challenge import AuthenticationFailed
from s3blobs.registry.auth.htpasswd import BasicAuthenticator, HtpasswdFile


class CountingCheckpw:
    """Wraps bcrypt.checkpw (the real one runs) to see how many checks, at what cost."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.costs: list[int] = []
        real = bcrypt.checkpw

        def checkpw(password: bytes, hashed: bytes) -> bool:
            self.costs.append(int(hashed[4:6]))
            return bool(real(password, hashed))

        monkeypatch.setattr(htpasswd_module.bcrypt, "checkpw", checkpw)


def test_both_bcrypt_prefixes_verify(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(
        "# a comment\n\n"
        + bcrypt_entry("alice", "wonderland", prefix="$2y$")
        + "\n"
        + bcrypt_entry("bob", "builder", prefix="$2b$")
        + "\n"
    )
    passwords = HtpasswdFile(path)
    assert passwords.verify("alice", "wonderland")
    assert passwords.verify("bob", "builder")
    assert not passwords.verify("alice", "builder")
    assert not passwords.verify("carol", "wonderland")


@pytest.mark.parametrize(
    "entry",
    [
        "carol:$apr1$abcdefgh$0123456789abcdefghijkl",  # Apache MD5
        "carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",  # SHA-1
        "carol:abXYZ1234abcd",  # crypt
        "carol:plaintext",
        "carol:$2a$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",  # not $2y$/$2b$
    ],
)
def test_other_schemes_are_refused_naming_the_line_not_the_hash(tmp_path: Path, entry: str) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(bcrypt_entry("alice", "x") + "\n# note\n" + entry + "\n")
    with pytest.raises(ConfigError) as refused:
        HtpasswdFile(path)
    message = str(refused.value)
    assert "S3BLOBS_AUTH_HTPASSWD" in message and "line 3" in message and "carol" in message
    assert entry.split(":", 1)[1] not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("no-colon-here\n", "line 1"), (":$2y$04$" + "a" * 53 + "\n", "line 1")],
)
def test_malformed_lines(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        HtpasswdFile(path)


def test_duplicate_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(bcrypt_entry("alice", "a") + "\n" + bcrypt_entry("alice", "b") + "\n")
    with pytest.raises(ConfigError, match=r"line 2.*twice"):
        HtpasswdFile(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="S3BLOBS_AUTH_HTPASSWD"):
        HtpasswdFile(tmp_path / "nope")


def test_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = write_htpasswd(tmp_path / "htpasswd", {"alice": "one"})
    passwords = HtpasswdFile(path)
    assert passwords.verify("alice", "one")
    write_htpasswd(path, {"alice": "two", "bob": "three"})
    os.utime(path, ns=(1, 1))  # a change even if it landed in the same clock tick
    assert not passwords.verify("alice", "one")  # the cached success went with the old file
    assert passwords.verify("alice", "two") and passwords.verify("bob", "three")


def test_a_broken_rewrite_fails_closed(tmp_path: Path) -> None:
    path = write_htpasswd(tmp_path / "htpasswd", {"alice": "one"})
    passwords = HtpasswdFile(path)
    assert passwords.verify("alice", "one")
    path.write_text("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    assert not passwords.verify("alice", "one")
    write_htpasswd(path, {"alice": "one"})  # fixed: back in business
    assert passwords.verify("alice", "one")


def test_unknown_user_costs_the_same_bcrypt_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_htpasswd(tmp_path / "htpasswd", {"alice": "secret"}, cost=6)
    passwords = HtpasswdFile(path)
    checks = CountingCheckpw(monkeypatch)
    assert not passwords.verify("nobody", "secret")
    assert not passwords.verify("alice", "wrong")
    assert checks.costs == [6, 6]  # one bcrypt check each, at the file's cost


def test_a_verified_credential_is_cached_by_a_keyed_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_htpasswd(tmp_path / "htpasswd", {"alice": "secret"})
    passwords = HtpasswdFile(path)
    checks = CountingCheckpw(monkeypatch)
    for _ in range(5):
        assert passwords.verify("alice", "secret")
    assert len(checks.costs) == 1  # bcrypt once; then remembered
    for _ in range(3):
        assert not passwords.verify("alice", "Secret")
    assert len(checks.costs) == 4  # failures are never remembered
    cache: Any = passwords._cache
    assert all(b"secret" not in key and len(key) == 32 for key in cache)


def test_cache_entries_expire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_htpasswd(tmp_path / "htpasswd", {"alice": "secret"})
    passwords = HtpasswdFile(path, cache_ttl=0.01)
    checks = CountingCheckpw(monkeypatch)
    assert passwords.verify("alice", "secret")
    import time

    time.sleep(0.05)
    assert passwords.verify("alice", "secret")
    assert len(checks.costs) == 2


def test_long_passwords_are_truncated_like_htpasswd(tmp_path: Path) -> None:
    long = "p" * 80
    path = tmp_path / "htpasswd"
    # What Apache's htpasswd -B stores for a long password: bcrypt of its first 72 bytes.
    hashed = bcrypt.hashpw(long.encode()[:72], bcrypt.gensalt(4)).decode()
    path.write_text(f"alice:{hashed}\n")
    assert HtpasswdFile(path).verify("alice", long)


def test_basic_authenticator(tmp_path: Path) -> None:
    authenticator = BasicAuthenticator(
        HtpasswdFile(write_htpasswd(tmp_path / "h", {"alice": "pw:with:colons"}))
    )
    identity = authenticator.authenticate(basic("alice", "pw:with:colons"))
    assert identity.name == "alice" and identity.verified and identity.grants is None
    for header in (
        basic("alice", "nope"),
        basic("mallory", "pw:with:colons"),
        "Basic !!!notbase64",
        "Basic " + "YWxpY2U=",  # "alice": no colon
        "Bearer abc",
        "Digest x",
    ):
        with pytest.raises(AuthenticationFailed):
            authenticator.authenticate(header)
    headers: dict[str, str] = {}
    authenticator.challenge().write(headers)
    assert headers == {"WWW-Authenticate": 'Basic realm="s3blobs"'}
