"""Memory for upload bytes: grown a MiB at a time, and bounded for the whole process.

An open writer holds only what it has received since its last part (rounded up to a
MiB), not a whole part from its first byte, so stalled uploads cost what they sent.
Every MiB is reserved from the storage's :class:`BufferBudget`
(``S3BLOBS_MAX_BUFFER``): past it a write raises :class:`UploadBufferFull` and the
registry answers 429 with ``Retry-After`` instead of letting the process run out of
memory. Parts hand their chunks to the upload thread as they are, never copied.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .config import MiB
from .errors import UploadBufferFull

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

CHUNK = MiB


class BufferBudget:
    """Bytes that upload buffers may hold at once in this process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def reserve(self, size: int) -> None:
        with self._lock:
            if self._used + size > self.limit:
                raise UploadBufferFull(
                    "the registry is holding as many upload bytes as it may "
                    "(S3BLOBS_MAX_BUFFER); retry shortly"
                )
            self._used += size

    def release(self, size: int) -> None:
        with self._lock:
            self._used -= size


class PartBuffer:
    """The bytes received since the last part, in chunks of at most a MiB."""

    def __init__(self, capacity: int, budget: BufferBudget) -> None:
        self._capacity = capacity
        self._budget = budget
        self._chunks: list[bytearray] = []
        self._filled = 0  # bytes written into the chunks
        self.reserved = 0  # bytes of budget the chunks hold

    def __len__(self) -> int:
        return self._filled

    def append(self, view: memoryview) -> None:
        """Copy ``view`` in (at most what the part still has room for)."""
        pos = 0
        while pos < view.nbytes:
            if self._filled == self.reserved:
                size = min(CHUNK, self._capacity - self.reserved)
                self._budget.reserve(size)
                self._chunks.append(bytearray(size))
                self.reserved += size
            chunk = self._chunks[-1]
            offset = self._filled - (self.reserved - len(chunk))
            take = min(len(chunk) - offset, view.nbytes - pos)
            chunk[offset : offset + take] = view[pos : pos + take]
            self._filled += take
            pos += take

    def views(self) -> list[memoryview]:
        """The received bytes, in order, without copying them."""
        out, left = [], self._filled
        for chunk in self._chunks:
            view = memoryview(chunk)[: min(len(chunk), left)]
            left -= view.nbytes
            if view.nbytes:
                out.append(view)
        return out

    def take(self) -> tuple[list[memoryview], int]:
        """Hand the bytes over with the budget they hold (the taker releases it), and
        start empty."""
        taken = (self.views(), self.reserved)
        self._chunks, self._filled, self.reserved = [], 0, 0
        return taken

    def clear(self) -> None:
        self._budget.release(self.reserved)
        self._chunks, self._filled, self.reserved = [], 0, 0


class ChunkReader(io.RawIOBase):
    """A seekable read-only file over a list of buffers, for a request body that
    botocore may read twice (checksum, then send) without the parts being joined."""

    def __init__(self, chunks: Sequence[ReadableBuffer]) -> None:
        super().__init__()
        self._chunks = [memoryview(c).cast("B") for c in chunks]
        self._size = sum(c.nbytes for c in self._chunks)
        self._pos = 0

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: WriteableBuffer) -> int:
        out = memoryview(buffer).cast("B")
        written, start = 0, 0
        for chunk in self._chunks:
            end = start + chunk.nbytes
            if self._pos < end and written < out.nbytes:
                offset = self._pos - start
                take = min(chunk.nbytes - offset, out.nbytes - written)
                out[written : written + take] = chunk[offset : offset + take]
                written += take
                self._pos += take
            start = end
        return written
