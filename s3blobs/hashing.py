"""Resumable SHA-256 and SHA-512: a hash whose state can be saved in one process
and restored in another, so a commit verifies its digest without reading the blob back.

hashlib cannot export its state, so this module drives libcrypto (the same library
Python's own ``_hashlib`` links) through ctypes: the hash runs at hashlib's speed and
ctypes releases the GIL during each call, so background part uploads keep running.
The saved state is the layout-independent format of Go's ``crypto/sha256`` and
``crypto/sha512`` ``MarshalBinary`` (the format the Go registry stores), never the raw
OpenSSL struct, so a state survives an OpenSSL upgrade.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import struct
from dataclasses import dataclass

from .errors import BlobDigestUnsupported


@dataclass(frozen=True)
class _Layout:
    name: str  # hashlib / digest algorithm name
    prefix: str  # libcrypto function prefix
    ctx_size: int  # sizeof(SHAxxx_CTX), with room to spare
    word: str  # struct code of one chaining word
    block: int  # block size in bytes
    magic: bytes  # Go's MarshalBinary magic

    @property
    def word_size(self) -> int:
        return struct.calcsize(self.word)

    @property
    def state_size(self) -> int:
        return len(self.magic) + 8 * self.word_size + self.block + 8

    # Offsets inside the OpenSSL context: h[8], Nl, Nh, block, num (all native order).
    @property
    def off_counts(self) -> int:
        return 8 * self.word_size

    @property
    def off_block(self) -> int:
        return 10 * self.word_size

    @property
    def off_num(self) -> int:
        return self.off_block + self.block


_LAYOUTS = {
    "sha256": _Layout("sha256", "SHA256", 112, "I", 64, b"sha\x03"),
    "sha512": _Layout("sha512", "SHA512", 216, "Q", 128, b"sha\x07"),
}


class _LibCrypto:
    def __init__(self) -> None:
        path = ctypes.util.find_library("crypto")
        if path is None:
            raise RuntimeError("libcrypto not found: s3blobs needs OpenSSL's libcrypto")
        self.lib = ctypes.CDLL(path)
        for layout in _LAYOUTS.values():
            for suffix, args in (
                ("_Init", [ctypes.c_void_p]),
                ("_Update", [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]),
                ("_Final", [ctypes.c_void_p, ctypes.c_void_p]),
            ):
                fn = getattr(self.lib, layout.prefix + suffix)
                fn.argtypes = args
                fn.restype = ctypes.c_int

    def call(self, layout: _Layout, suffix: str, *args: object) -> None:
        if getattr(self.lib, layout.prefix + suffix)(*args) != 1:
            raise RuntimeError(f"{layout.prefix}{suffix} failed")


@functools.cache
def _libcrypto() -> _LibCrypto:
    lib = _LibCrypto()
    _self_test(lib)
    return lib


class ResumableHash:
    """An incremental SHA-256 or SHA-512 whose state can be exported and restored."""

    def __init__(self, algorithm: str = "sha256", *, _lib: _LibCrypto | None = None) -> None:
        if algorithm not in _LAYOUTS:
            raise BlobDigestUnsupported(f"cannot compute digest algorithm {algorithm!r}")
        self._layout = _LAYOUTS[algorithm]
        self._lib = _lib or _libcrypto()
        self._ctx = ctypes.create_string_buffer(self._layout.ctx_size)
        self._lib.call(self._layout, "_Init", self._ctx)

    @property
    def algorithm(self) -> str:
        return self._layout.name

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        if not view.nbytes:
            return
        if view.readonly:
            # bytes are passed without a copy; other read-only buffers need one.
            buf: object = data if isinstance(data, bytes) else view.tobytes()
        else:
            buf = (ctypes.c_char * view.nbytes).from_buffer(view)
        self._lib.call(self._layout, "_Update", self._ctx, buf, view.nbytes)

    def digest(self) -> bytes:
        ctx = ctypes.create_string_buffer(self._ctx.raw, self._layout.ctx_size)
        out = ctypes.create_string_buffer(hashlib.new(self._layout.name).digest_size)
        self._lib.call(self._layout, "_Final", out, ctx)
        return out.raw

    def hexdigest(self) -> str:
        return self.digest().hex()

    def state(self) -> bytes:
        """The state in Go's MarshalBinary format: magic, h[8], pending block, length."""
        lay, raw = self._layout, self._ctx.raw
        words = struct.unpack_from(f"={8}{lay.word}", raw, 0)
        low, high = struct.unpack_from(f"=2{lay.word}", raw, lay.off_counts)
        bits = (high << (8 * lay.word_size)) | low
        (pending,) = struct.unpack_from("=I", raw, lay.off_num)
        block = raw[lay.off_block : lay.off_block + pending].ljust(lay.block, b"\0")
        return (
            lay.magic
            + struct.pack(f">8{lay.word}", *words)
            + block
            + struct.pack(">Q", (bits // 8) & 0xFFFFFFFFFFFFFFFF)
        )

    @classmethod
    def from_state(
        cls, algorithm: str, state: bytes, *, _lib: _LibCrypto | None = None
    ) -> ResumableHash:
        """Rebuild a hash from :meth:`state`; raises ValueError for a state it cannot use."""
        new = cls(algorithm, _lib=_lib)
        lay = new._layout
        if len(state) != lay.state_size or not state.startswith(lay.magic):
            raise ValueError(f"not a saved {algorithm} state")
        pos = len(lay.magic)
        words = struct.unpack_from(f">8{lay.word}", state, pos)
        pos += 8 * lay.word_size
        block = state[pos : pos + lay.block]
        (length,) = struct.unpack_from(">Q", state, pos + lay.block)
        pending = length % lay.block
        bits = length * 8
        mask = (1 << (8 * lay.word_size)) - 1
        ctx = bytearray(new._ctx.raw)
        struct.pack_into(f"=8{lay.word}", ctx, 0, *words)
        struct.pack_into(
            f"=2{lay.word}", ctx, lay.off_counts, bits & mask, bits >> (8 * lay.word_size)
        )
        ctx[lay.off_block : lay.off_block + lay.block] = block
        struct.pack_into("=I", ctx, lay.off_num, pending)
        ctypes.memmove(new._ctx, bytes(ctx), len(ctx))
        return new


def _self_test(lib: _LibCrypto) -> None:
    """Check, once per process, that the OpenSSL context layout is the one assumed."""
    sample = bytes(range(256)) * 3
    for algorithm in _LAYOUTS:
        for cut in (0, 1, 63, 64, 65, 127, 128, 129, 700):
            first = ResumableHash(algorithm, _lib=lib)
            first.update(sample[:cut])
            second = ResumableHash.from_state(algorithm, first.state(), _lib=lib)
            second.update(sample[cut:])
            if second.hexdigest() != hashlib.new(algorithm, sample).hexdigest():
                raise RuntimeError(
                    f"this libcrypto's {algorithm} context layout is not the one "
                    "s3blobs knows; resumable hashing is unavailable"
                )
