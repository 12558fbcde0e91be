"""Repository names and canonical references, checked by the OCI distribution grammar."""

from __future__ import annotations

import re

from .digests import Digest, parse_digest
from .errors import BlobError, ReferenceInvalid, RepositoryNameInvalid

MAX_NAME_LENGTH = 255
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")


def validate_repository_name(name: object) -> str:
    """Return ``name`` if it is a valid repository name, else raise RepositoryNameInvalid."""
    if not isinstance(name, str) or not name:
        raise RepositoryNameInvalid("a repository name is a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise RepositoryNameInvalid(
            f"repository name is {len(name)} characters; at most {MAX_NAME_LENGTH}"
        )
    if not _NAME.fullmatch(name):
        raise RepositoryNameInvalid(
            f"invalid repository name {name!r}: lower-case path components "
            "[a-z0-9]+ separated by '.', '_', '__' or '-', joined by '/'"
        )
    return name


def parse_reference(reference: object) -> tuple[str, Digest]:
    """Split a canonical reference ``<name>@<digest>``; raise ReferenceInvalid if malformed."""
    if not isinstance(reference, str):
        raise ReferenceInvalid("a reference is a string '<name>@<digest>'")
    name, sep, digest = reference.partition("@")
    if not sep:
        raise ReferenceInvalid(f"reference {reference[:300]!r} has no '@<digest>'")
    try:
        return validate_repository_name(name), parse_digest(digest)
    except (RepositoryNameInvalid, BlobError) as exc:
        raise ReferenceInvalid(f"invalid reference {reference[:300]!r}: {exc}") from exc
