"""A logging handler that writes its lines in batches instead of one write per line.

A registry writes a line per request; written one at a time, each costs a write
syscall and a flush, which in a gunicorn worker (threads handing the GIL to one
another) was the larger part of what the access line cost. :class:`BatchingHandler`
keeps lines in memory and writes them together: when
``max_bytes`` have gathered, when a small flusher thread wakes (every ``max_delay``
seconds: a line is never later than that, an idle server's last lines included), and
at once, after what was gathered before it, for a WARNING or worse (problems are never
late). ``flush()`` and ``close()`` write what is left, and so does ``logging.shutdown``
at interpreter exit (a gunicorn worker's graceful exit on SIGTERM runs it).

A batch may also hold items to be formatted only when it is written (``render``: the
finished request of an access line, see logformat), handed over with ``hand_over``
without the handler's lock (an append to a ``collections.deque`` is atomic): that is
all an access line costs the request. The flusher writes them within ``max_delay``;
a line gathered later (under the lock) moves them into the batch first, so lines are
written in the order they came.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from typing import TextIO

from .metricfold import drain

#: How late a line may be written, at most (seconds), and how much is gathered at most.
MAX_DELAY = 0.25
MAX_BYTES = 64 * 1024
#: What an item still to be rendered is taken to weigh, towards MAX_BYTES.
RENDERED_SIZE = 200

# Every live handler, for the fork hook below.
_HANDLERS: weakref.WeakSet[BatchingHandler] = weakref.WeakSet()


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler whose lines are written in batches (see the module)."""

    def __init__(
        self, stream: TextIO, max_delay: float = MAX_DELAY, max_bytes: int = MAX_BYTES
    ) -> None:
        super().__init__(stream)
        self.max_delay = max_delay
        self.max_bytes = max_bytes
        # Formatted lines (str), and runs of items to render (a list, rendered together).
        self._lines: list[str | list[object]] = []
        self._handed_over: deque[object] = deque()  # items to render, not yet in _lines
        self._closed = False
        self._set_size(0)
        self._closing = threading.Event()  # wakes the flusher to end
        self._flusher: threading.Thread | None = None
        _HANDLERS.add(self)

    def emit(self, record: logging.LogRecord) -> None:
        # Handler.handle calls this with self.lock held: the buffer needs no lock of its own.
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self.gather(line, record.levelno)

    def hand_over(self, item: object) -> None:
        """Add an item ``render`` makes a line of when the batch is written, without
        the lock (any thread, any time: see the module)."""
        handed_over = self._handed_over
        handed_over.append(item)
        # The batch is full by the size gather() counts, or the handler closed (read
        # without the lock: a write may be a line late, never lost).
        if len(handed_over) >= self._room:
            self.flush()
        elif self._flusher is None:
            self._start_flusher()

    def gather(self, line: object, level: int) -> None:
        """Add a formatted line (a str, its terminator included), or an item ``render``
        makes one of when the batch is written, to the batch; with self.lock held."""
        lines = self._lines
        self._take_handed_over()  # they came first
        if type(line) is str:
            lines.append(line)
            self._set_size(self._size + len(line))
        else:
            lines.append([line])
            self._set_size(self._size + RENDERED_SIZE)
        if level >= logging.WARNING or self._room <= 0:
            self._write()
        elif self._flusher is None:
            self._start_flusher()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def close(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()
            self._closed = True
            self._set_size(0)  # no room left: whatever comes now is written at once
        self._closing.set()  # the flusher sees it and ends
        flusher = self._flusher
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(timeout=self.max_delay + 5)
        super().close()

    def render(self, item: object) -> str:
        """The line (its terminator included) of an item gathered unformatted."""
        raise TypeError(f"{type(self).__name__} cannot render {type(item).__name__}")

    def render_run(self, items: list[object]) -> list[str]:
        """The lines of a run of items handed over one after another, in order: by
        ``render``, one at a time (a subclass may render a run in one go). An item that
        cannot be rendered is reported, as a record that cannot be formatted is, and
        costs only its own line."""
        lines = []
        for item in items:
            try:
                lines.append(self.render(item))
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": f"unrenderable {item!r}"}))
        return lines

    def _take_handed_over(self) -> None:
        """Move the items handed over so far into the batch, in order (under self.lock)."""
        if self._handed_over:
            run = drain(self._handed_over)
            self._lines.append(run)
            self._set_size(self._size + RENDERED_SIZE * len(run))

    def _write(self) -> None:
        """Write what has gathered, in one write and one flush (called under self.lock)."""
        self._take_handed_over()
        if not self._lines:
            return
        text = "".join(self._rendered(self._lines))
        count = len(self._lines)
        self._lines.clear()
        self._set_size(0)
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:
            # As a StreamHandler does for one line: report (if logging.raiseExceptions) and go on.
            self.handleError(logging.makeLogRecord({"msg": f"{count} batched log lines"}))

    def _rendered(self, batch: list[str | list[object]]) -> list[str]:
        lines: list[str] = []
        for line_or_run in batch:
            if isinstance(line_or_run, str):
                lines.append(line_or_run)
            else:
                lines += self.render_run(line_or_run)
        return lines

    def _set_size(self, size: int) -> None:
        """The batch's size (in bytes, an item still to render counted as RENDERED_SIZE),
        and how many more items fill it (none, once closed): hand_over compares a count."""
        self._size = size
        self._room = 0 if self._closed else -((size - self.max_bytes) // RENDERED_SIZE)

    def _start_flusher(self) -> None:
        """A batch has begun: start the flusher (there is none before the first line, nor
        after a fork), which writes it within max_delay."""
        with self.lock:  # type: ignore[union-attr]
            # Called without the lock: two threads may both have found none.
            if self._flusher is None and not self._closed:
                flusher = threading.Thread(
                    target=self._flush_batches, name="s3blobs-log", daemon=True
                )
                self._flusher = flusher
                flusher.start()

    def _flush_batches(self) -> None:
        # Wakes every max_delay (the request path never wakes it: that would cost every
        # line a check), and writes what has gathered.
        while not self._closing.wait(self.max_delay):
            if self._lines or self._handed_over:
                self.flush()

    def _after_fork_in_child(self) -> None:
        # The parent writes the lines it had gathered; the child starts empty, and
        # without a flusher (threads do not survive a fork): the next line starts one.
        self._lines = []
        self._handed_over = deque()
        self._set_size(0)
        self._closing = threading.Event()
        self._flusher = None


def _reset_after_fork() -> None:
    for handler in list(_HANDLERS):
        handler._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
