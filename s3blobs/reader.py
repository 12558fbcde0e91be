"""A seekable, read-only file object over one S3 object, reading by ranged GETs."""

from __future__ import annotations

import io
from typing import Any

from .s3 import s3_errors

_FIRST_WINDOW = 64 * 1024
_MAX_WINDOW = 8 * 1024 * 1024


class BlobReader(io.RawIOBase):
    """Reads ``key`` on demand: nothing is fetched until read, and a seek costs nothing.

    Each GET asks for what the caller wants, at least a window that starts at 64 KiB
    after a seek and doubles (up to 8 MiB) while reads stay sequential: a 1 KiB read
    after a seek transfers 64 KiB, and a sequential read of a large blob costs one GET
    per 8 MiB.
    """

    def __init__(self, client: Any, bucket: str, key: str, size: int) -> None:
        super().__init__()
        self._client, self._bucket, self._key = client, bucket, key
        self._size = size
        self._pos = 0
        self._buffer = b""
        self._buffer_start = 0
        self._window = _FIRST_WINDOW

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence}")
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        self._checkClosed()
        out = memoryview(buffer).cast("B")
        if not out.nbytes or self._pos >= self._size:
            return 0
        offset = self._pos - self._buffer_start
        if not 0 <= offset < len(self._buffer):
            self._fill(out.nbytes)
            offset = 0
        count = min(out.nbytes, len(self._buffer) - offset)
        out[:count] = self._buffer[offset : offset + count]
        self._pos += count
        return count

    def _fill(self, wanted: int) -> None:
        sequential = self._pos == self._buffer_start + len(self._buffer) and self._buffer
        self._window = min(self._window * 2, _MAX_WINDOW) if sequential else _FIRST_WINDOW
        end = min(self._size, self._pos + max(wanted, self._window)) - 1
        with s3_errors(f"reading {self._key}"):
            response = self._client.get_object(
                Bucket=self._bucket, Key=self._key, Range=f"bytes={self._pos}-{end}"
            )
            self._buffer = response["Body"].read()
        self._buffer_start = self._pos

    def close(self) -> None:
        self._buffer = b""
        super().close()
