"""Per-request figures gathered for the price of a deque append, and folded into the
Prometheus metrics once a second.

An update of a prometheus_client metric takes a lock, and in multiprocess mode
(gunicorn's workers) also checks the process id and writes to a memory-mapped file: a
few of those per request were most of what the metrics cost. So the request path only
appends a tuple to a ``collections.deque`` (thread-safe, lock-free under the GIL), and
:class:`Folder` drains the deques and updates each series once per fold with the sum:
every ``interval`` seconds from a daemon thread, before a scrape is answered (the
:class:`FoldFirst` collector, registered ahead of the metrics), on demand
(``fold()``: tests, and anything that reads the metrics in process), and at exit.

Nothing is lost or counted twice: each item is popped once, by one fold at a time
(under the folder's lock); a forked child empties its copies of the deques (the
parent folds what it gathered) and starts its own thread.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable
from itertools import repeat, starmap
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def drain(pending: deque[T]) -> list[T]:
    """What ``pending`` holds now, removed from it (by one caller at a time: appends
    may come meanwhile, from any thread)."""
    # Only as many as there are now: appends that arrive meanwhile wait for the next
    # drain. popleft() called len times by starmap: in C, no Python frame per item.
    return list(starmap(pending.popleft, repeat((), len(pending))))


def observe_all(histogram: Any, values: list[float]) -> None:
    """``histogram.observe(value)`` for each value, as one update per bucket and one of
    the sum. prometheus_client has no public call for that; its histogram child keeps
    ``_upper_bounds``, ``_buckets`` (one value each, not cumulative) and ``_sum``, and
    observe() adds to the first bucket whose bound is >= the value. If a later version
    keeps them otherwise, each value is observed one by one (correct, only slower)."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    total.inc(sum(values))  # in their order, as observing each would add them
    values = sorted(values)
    # A bucket holds the values above the bound before it, up to its own: found by
    # bisecting the sorted values once per bound, not by a search per value.
    below = 0
    for bound, bucket in zip(bounds, buckets, strict=True):
        upto = bisect_right(values, bound)
        if upto > below:
            bucket.inc(upto - below)
            below = upto


class Folder:
    """Runs the fold functions: periodically once started, on demand, and at exit."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._folds: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.running = False  # the periodic fold, in this process (read it: a call less)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork_in_child)
        atexit.register(self.fold)

    def add(self, fold: Callable[[], None]) -> None:
        self._folds.append(fold)

    def fold(self) -> None:
        """Fold everything gathered so far into the metrics, now."""
        with self._lock:
            for fold in self._folds:
                try:
                    fold()
                except Exception:
                    # Watching the registry must never break it.
                    log.exception("folding the metrics failed (%s)", fold.__name__)

    def ensure_running(self) -> None:
        """Start the periodic fold in this process if it is not ``running``."""
        with self._lock:
            if not self.running:
                threading.Thread(target=self._run, name="s3blobs-metrics", daemon=True).start()
                self.running = True

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            self.fold()

    def _after_fork_in_child(self) -> None:
        # The lock may have been held by the parent's thread at the fork; the thread is
        # gone. The deques are emptied by their owners' own fork hooks.
        self._lock = threading.Lock()
        self.running = False


class FoldFirst:
    """A collector with no metrics of its own that folds when a registry is collected:
    registered before the metrics, it runs before they are read, so a scrape (or a
    test's ``REGISTRY.get_sample_value``) sees every request answered before it."""

    def __init__(self, folder: Folder) -> None:
        self.folder = folder

    def describe(self) -> Iterable[Any]:
        return []  # no names of its own (and no collect() at registration)

    def collect(self) -> Iterable[Any]:
        self.folder.fold()
        return []
