"""Every S3 key s3blobs reads or writes is built here, and nowhere else.

Layout, under the optional prefix::

    blobs/<alg>/<hex[0:2]>/<hex>                a blob's entry: its bytes, or a pointer
    data/<ms>-<random>                          the bytes of a blob uploaded in parts
    repositories/<name>/_layers/<alg>/<hex>     link: the blob belongs to <name>
    repositories/<name>/_manifests/...          revisions, tags and referrers
    _uploads/<writer id>/state                  an open upload's state
    _uploads/<writer id>/piece.<uuid>           a buffered tail, appended at each close
    _gc/fence, _gc/<run>/<hh>                   what a running gc is deleting (s3blobs.fence)

Every argument arrives validated (digests by :mod:`digests`, names by :mod:`names`,
writer ids by :func:`check_upload_token`), so no key can escape its place.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from .digests import Digest, parse_digest
from .errors import BlobError

UPLOADS = "_uploads/"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,1024}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
# A data object's name: its creation time (milliseconds since the epoch, 12 hex digits),
# then 80 random bits; or a bare uuid4 hex, as the first releases wrote.
_DATA_NAME = re.compile(r"(?:(?P<ms>[0-9a-f]{12})-[0-9a-f]{20})|[0-9a-f]{32}")


@dataclass(frozen=True)
class RepositoryKey:
    """What a key under ``repositories/`` is: a ``link``, a ``revision``, a ``tag`` or a
    ``referrer`` entry, of repository ``name``. ``digest`` is the linked blob, the
    revision's manifest or the referrer; ``subject`` the referrer's subject; ``tag``
    the tag's name."""

    name: str
    kind: str
    digest: str = ""
    subject: str = ""
    tag: str = ""


def is_valid_upload_token(token: object) -> bool:
    """True for a string that can be a writer id (URL-safe base64, at most 1 KiB)."""
    return isinstance(token, str) and _TOKEN.fullmatch(token) is not None


def is_valid_tag(tag: object) -> bool:
    """True for a tag by the OCI distribution grammar."""
    return isinstance(tag, str) and _TAG.fullmatch(tag) is not None


class Paths:
    """The key layout under one prefix."""

    def __init__(self, prefix: str = "") -> None:
        self.root = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.blobs_root = f"{self.root}blobs/"
        self.uploads_root = f"{self.root}{UPLOADS}"
        self.data_root = f"{self.root}data/"
        self.repositories_root = f"{self.root}repositories/"
        self.gc_root = f"{self.root}_gc/"

    # Blobs -------------------------------------------------------------------

    def blob(self, digest: Digest) -> str:
        return f"{self.blobs_root}{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"

    def digest_of_blob_key(self, key: str) -> str | None:
        """The digest whose entry is ``key``, or None for a key that is not an entry."""
        parts = key[len(self.blobs_root) :].split("/")
        if not key.startswith(self.blobs_root) or len(parts) != 3:
            return None
        return _digest_or_none(parts[0], parts[2], parts[1])

    def new_data_key(self) -> str:
        """A fresh data key that carries its creation time, so that garbage collection
        can tell the age of a multipart upload from its key alone (moto, and some
        S3-compatible stores, do not report a true ``Initiated`` time)."""
        return f"{self.data_root}{int(time.time() * 1000):012x}-{secrets.token_hex(10)}"

    def data(self, name: str) -> str:
        """The data key of a name taken from an entry's metadata (checked)."""
        if not _DATA_NAME.fullmatch(name):
            raise ValueError(f"not a data object name: {name[:80]!r}")
        return f"{self.data_root}{name}"

    def data_created_at(self, key: str) -> datetime | None:
        """When the data key was made, from its name; None for names without a time."""
        match = _DATA_NAME.fullmatch(key[len(self.data_root) :])
        if not key.startswith(self.data_root) or not match or not match.group("ms"):
            return None
        return datetime.fromtimestamp(int(match.group("ms"), 16) / 1000, tz=timezone.utc)

    def data_name(self, key: str) -> str:
        return key[len(self.data_root) :]

    # Repositories ------------------------------------------------------------

    def repository(self, name: str) -> str:
        return f"{self.repositories_root}{name}/"

    def layers_root(self, name: str) -> str:
        return f"{self.repository(name)}_layers/"

    def link(self, name: str, digest: Digest) -> str:
        return f"{self.layers_root(name)}{digest.algorithm}/{digest.hex}"

    def digest_of_link_key(self, name: str, key: str) -> str | None:
        parts = key[len(self.layers_root(name)) :].split("/")
        if not key.startswith(self.layers_root(name)) or len(parts) != 2:
            return None
        return _digest_or_none(parts[0], parts[1])

    def revision(self, name: str, digest: Digest) -> str:
        return f"{self.repository(name)}_manifests/revisions/{digest.algorithm}/{digest.hex}"

    def tags_root(self, name: str) -> str:
        return f"{self.repository(name)}_manifests/tags/"

    def tag(self, name: str, tag: str) -> str:
        if not is_valid_tag(tag):
            raise ValueError(f"invalid tag {tag[:200]!r}")
        return f"{self.tags_root(name)}{tag}"

    def referrers_root(self, name: str, subject: Digest) -> str:
        return f"{self.repository(name)}_manifests/referrers/{subject.algorithm}/{subject.hex}/"

    def referrer(self, name: str, subject: Digest, digest: Digest) -> str:
        return f"{self.referrers_root(name, subject)}{digest.algorithm}/{digest.hex}"

    def parse_repository_key(self, key: str) -> RepositoryKey | None:
        """What ``key`` under ``repositories/`` is; None for a key s3blobs did not write.

        Repository names are lower-case components that never start with '_', so the
        first ``/_layers/`` or ``/_manifests/`` in a key ends the name."""
        rest = key[len(self.repositories_root) :]
        if not key.startswith(self.repositories_root):
            return None
        for marker in ("/_layers/", "/_manifests/"):
            name, found, tail = rest.partition(marker)
            if found and "/_" not in name:
                return _repository_key(name, marker, tail.split("/"))
        return None

    # Uploads -----------------------------------------------------------------

    def upload_state(self, token: str) -> str:
        return f"{self.uploads_root}{_checked_token(token)}/state"

    def upload_token_of(self, key: str) -> str | None:
        """The writer id whose state or piece ``key`` is; None for any other key."""
        token, sep, _ = key[len(self.uploads_root) :].partition("/")
        if not key.startswith(self.uploads_root) or not sep or not is_valid_upload_token(token):
            return None
        return token

    def upload_of_state_key(self, key: str) -> str | None:
        """The writer id whose state is ``key``, or None for any other key."""
        token, sep, rest = key[len(self.uploads_root) :].partition("/")
        if not key.startswith(self.uploads_root) or rest != "state" or not sep:
            return None
        return token if is_valid_upload_token(token) else None

    def upload_piece(self, token: str, name: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{32}", name):
            raise ValueError(f"not a piece name: {name[:80]!r}")
        return f"{self.uploads_root}{_checked_token(token)}/piece.{name}"

    # Garbage collection --------------------------------------------------------

    def gc_fence(self) -> str:
        """The object a running gc keeps while it deletes (see :mod:`s3blobs.fence`)."""
        return f"{self.gc_root}fence"

    def gc_fence_shard(self, run: str, shard: str) -> str:
        """The digests of one shard (two hex digits) that the gc ``run`` is deleting."""
        if not re.fullmatch(r"[0-9a-f]{32}", run) or not re.fullmatch(r"[0-9a-f]{2}", shard):
            raise ValueError("not a gc run and shard")
        return f"{self.gc_root}{run}/{shard}"


def _repository_key(name: str, marker: str, parts: list[str]) -> RepositoryKey | None:
    if marker == "/_layers/":
        digest = _digest_or_none(*parts) if len(parts) == 2 else None
        return RepositoryKey(name, "link", digest) if digest else None
    kind, parts = parts[0], parts[1:]
    if kind == "revisions" and len(parts) == 2:
        digest = _digest_or_none(*parts)
        return RepositoryKey(name, "revision", digest) if digest else None
    if kind == "tags" and len(parts) == 1 and is_valid_tag(parts[0]):
        return RepositoryKey(name, "tag", tag=parts[0])
    if kind == "referrers" and len(parts) == 4:
        subject, digest = _digest_or_none(*parts[:2]), _digest_or_none(*parts[2:])
        if subject and digest:
            return RepositoryKey(name, "referrer", digest, subject=subject)
    return None


def _checked_token(token: str) -> str:
    if not is_valid_upload_token(token):
        raise ValueError("not a writer id")
    return token


def _digest_or_none(algorithm: str, hex_: str, fanout: str | None = None) -> str | None:
    if fanout is not None and fanout != hex_[:2]:
        return None
    try:
        return str(parse_digest(f"{algorithm}:{hex_}"))
    except BlobError:  # a key s3blobs did not write
        return None
