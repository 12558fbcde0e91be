"""ResumableHash: digests equal hashlib's, and the state is Go's MarshalBinary format."""

from __future__ import annotations

import hashlib
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3blobs import BlobDigestUnsupported, ResumableHash

SHA256_IV = [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
             0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19]  # fmt: skip


@given(
    data=st.binary(max_size=1000),
    cut=st.integers(0, 1000),
    algorithm=st.sampled_from(["sha256", "sha512"]),
)
def test_resumed_digest_equals_hashlib(data: bytes, cut: int, algorithm: str) -> None:
    first = ResumableHash(algorithm)
    first.update(data[:cut])
    second = ResumableHash.from_state(algorithm, first.state())
    second.update(data[cut:])
    assert second.hexdigest() == hashlib.new(algorithm, data).hexdigest()
    assert first.hexdigest() == hashlib.new(algorithm, data[:cut]).hexdigest()


def test_accepts_every_bytes_like() -> None:
    data = os.urandom(5000)
    h = ResumableHash()
    h.update(data[:1000])
    h.update(bytearray(data[1000:2000]))
    h.update(memoryview(data)[2000:3000])
    h.update(memoryview(bytearray(data))[3000:])
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()


def test_sha256_state_is_go_marshal_binary() -> None:
    empty = ResumableHash("sha256").state()
    assert len(empty) == 108 and empty[:4] == b"sha\x03"
    assert list(struct.unpack(">8I", empty[4:36])) == SHA256_IV
    assert empty[36:] == bytes(72)
    data = os.urandom(64 + 10)
    h = ResumableHash("sha256")
    h.update(data)
    state = h.state()
    assert state[36:46] == data[64:]  # the pending block, zero-padded
    assert state[46:100] == bytes(54)
    assert struct.unpack(">Q", state[100:]) == (74,)  # length in bytes


def test_sha512_state_is_go_marshal_binary() -> None:
    h = ResumableHash("sha512")
    h.update(b"x" * 130)
    state = h.state()
    assert len(state) == 204 and state[:4] == b"sha\x07"
    assert state[68:70] == b"xx" and state[70:196] == bytes(126)
    assert struct.unpack(">Q", state[196:]) == (130,)


def test_bad_input() -> None:
    with pytest.raises(BlobDigestUnsupported):
        ResumableHash("md5")
    with pytest.raises(ValueError):
        ResumableHash.from_state("sha256", b"sha\x03" + bytes(10))
    with pytest.raises(ValueError):
        ResumableHash.from_state("sha512", ResumableHash("sha256").state())
