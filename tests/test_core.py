"""Digests, descriptors, repository names and references."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3blobs import (
    BlobDigestUnsupported,
    BlobError,
    BlobInvalidDigest,
    BlobMounted,
    Descriptor,
    ReferenceInvalid,
    RepositoryNameInvalid,
    parse_digest,
    parse_reference,
    validate_repository_name,
)
from s3blobs.errors import (
    BlobExists,
    BlobInvalidLength,
    BlobUnknown,
    BlobUploadUnknown,
)

SHA256 = "sha256:" + hashlib.sha256(b"x").hexdigest()
SHA512 = "sha512:" + hashlib.sha512(b"x").hexdigest()


def test_valid_digests_parse() -> None:
    assert str(parse_digest(SHA256)) == SHA256
    assert parse_digest(SHA512).algorithm == "sha512"
    assert parse_digest(SHA512).hex == SHA512[7:]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "sha256",
        "sha256:",
        ":" + "a" * 64,
        "sha256:" + "A" * 64,  # upper case
        "sha256:" + "a" * 63,  # short
        "sha256:" + "a" * 65,  # long
        "sha256:" + "g" * 64,  # not hex
        "sha512:" + "a" * 64,  # sha256 length under sha512
        "SHA256:" + "a" * 64,
        "sha256:../../etc/passwd",
        "sha256:" + "a" * 62 + "/x",
    ],
)
def test_malformed_digests_are_invalid(bad: str) -> None:
    with pytest.raises(BlobInvalidDigest) as info:
        parse_digest(bad)
    assert info.value.digest == bad
    assert info.value.reason


@pytest.mark.parametrize("digest", ["md5:" + "a" * 32, "sha384:" + "a" * 96, "blake3:" + "a" * 64])
def test_unknown_algorithms_are_unsupported(digest: str) -> None:
    with pytest.raises(BlobDigestUnsupported):
        parse_digest(digest)


def test_non_string_digest_is_invalid() -> None:
    with pytest.raises(BlobInvalidDigest):
        parse_digest(None)


def test_errors_share_one_base() -> None:
    descriptor = Descriptor("a/b", 1, SHA256)
    for error in (
        BlobExists(),
        BlobDigestUnsupported(),
        BlobUnknown(),
        BlobUploadUnknown(),
        BlobInvalidLength(),
        BlobInvalidDigest(SHA256, "r"),
        BlobMounted("a@" + SHA256, descriptor),
    ):
        assert isinstance(error, BlobError)
    mounted = BlobMounted("a@" + SHA256, descriptor)
    assert mounted.from_ == "a@" + SHA256 and mounted.descriptor is descriptor


def test_descriptor_json_uses_wire_names_and_omits_empty_fields() -> None:
    plain = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", 32, SHA256)
    assert plain.to_dict() == {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "size": 32,
        "digest": SHA256,
    }
    full = Descriptor(
        "application/x",
        3,
        SHA256,
        urls=("https://a/b",),
        annotations={"k": "v"},
        platform={"architecture": "amd64", "os": "linux"},
    )
    wire = full.to_dict()
    assert wire["urls"] == ["https://a/b"] and wire["annotations"] == {"k": "v"}
    assert wire["platform"]["os"] == "linux"
    assert Descriptor.from_json(full.to_json()) == full
    assert Descriptor.from_json(plain.to_json()) == plain


def test_descriptor_is_frozen_and_hashable() -> None:
    descriptor = Descriptor("a/b", 1, SHA256, annotations={"a": "b"})
    with pytest.raises(AttributeError):
        descriptor.size = 2  # type: ignore[misc]
    assert {descriptor: 1}[Descriptor("a/b", 1, SHA256, annotations={"a": "b"})] == 1


@given(
    media_type=st.text(min_size=1, max_size=40),
    size=st.integers(min_value=0, max_value=2**62),
    annotations=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
    urls=st.lists(st.text(min_size=1, max_size=20), max_size=3),
)
def test_descriptor_round_trips(
    media_type: str, size: int, annotations: dict[str, str], urls: list[str]
) -> None:
    descriptor = Descriptor(media_type, size, SHA512, tuple(urls), annotations)
    assert Descriptor.from_json(descriptor.to_json()) == descriptor


def test_descriptor_validation() -> None:
    Descriptor("a/b", 0, SHA256).validate()
    with pytest.raises(BlobInvalidDigest):
        Descriptor("a/b", -1, SHA256).validate()
    with pytest.raises(BlobInvalidDigest):
        Descriptor("a/b", 1, "sha256:zz").validate()
    with pytest.raises(ValueError):
        Descriptor.from_json("[1, 2]")
    with pytest.raises(ValueError):
        Descriptor.from_json('{"mediaType": "a/b"}')


@pytest.mark.parametrize(
    "name", ["a", "library/ubuntu", "a0/b-c/d__e/f.g", "x--y", "a" * 255, "a/" * 127 + "a"]
)
def test_valid_repository_names(name: str) -> None:
    assert validate_repository_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../x",
        "a/../b",
        "a//b",
        "/a",
        "a/",
        "Upper",
        "a" * 256,
        "a" * 300,
        "-a",
        "a-",
        "a..b",
        "a___b",
        "a/./b",
        "a b",
        "a\x00b",
        "_manifests/../x",
        "a%2fb",
    ],
)
def test_invalid_repository_names(name: str) -> None:
    with pytest.raises(RepositoryNameInvalid):
        validate_repository_name(name)
    assert issubclass(RepositoryNameInvalid, ValueError)


def test_references() -> None:
    name, digest = parse_reference("library/app@" + SHA256)
    assert name == "library/app" and str(digest) == SHA256
    for bad in ("x@sha256:zz", "../x@" + SHA256, "library/app", "library/app@", "@" + SHA256, 5):
        with pytest.raises(ReferenceInvalid):
            parse_reference(bad)
