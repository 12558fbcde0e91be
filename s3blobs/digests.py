"""Digest strings: parsing and validation, before any S3 request is made."""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import BlobDigestUnsupported, BlobInvalidDigest

#: hex length of each algorithm s3blobs stores; sha256 is canonical.
HEX_LENGTHS = {"sha256": 64, "sha512": 128}
CANONICAL = "sha256"

# The OCI image spec's grammar for the algorithm part of a digest.
_ALGORITHM = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*")
_LOWER_HEX = re.compile(r"[0-9a-f]+")


class Digest(NamedTuple):
    """A validated digest, split into its algorithm and its lower-case hex."""

    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def parse_digest(value: object) -> Digest:
    """Split and check ``value``.

    Raises :class:`BlobDigestUnsupported` for a well-formed digest of an algorithm
    s3blobs does not store, and :class:`BlobInvalidDigest` for anything malformed.
    """
    if not isinstance(value, str):
        raise BlobInvalidDigest(repr(value), "a digest is a string")
    algorithm, sep, hex_ = value.partition(":")
    if not sep or not _ALGORITHM.fullmatch(algorithm):
        raise BlobInvalidDigest(value, "expected <algorithm>:<hex>")
    if algorithm not in HEX_LENGTHS:
        raise BlobDigestUnsupported(f"unsupported digest algorithm {algorithm[:50]!r}")
    if not _LOWER_HEX.fullmatch(hex_):
        raise BlobInvalidDigest(value, "the encoded part must be lower-case hex")
    if len(hex_) != HEX_LENGTHS[algorithm]:
        raise BlobInvalidDigest(
            value, f"{algorithm} takes {HEX_LENGTHS[algorithm]} hex characters, got {len(hex_)}"
        )
    return Digest(algorithm, hex_)


def check_algorithm(algorithm: str) -> str:
    """Return ``algorithm`` if s3blobs can compute it, else raise BlobDigestUnsupported."""
    if algorithm not in HEX_LENGTHS:
        raise BlobDigestUnsupported(f"unsupported digest algorithm {algorithm[:50]!r}")
    return algorithm
