"""What makes the metrics and request ids cheap keeps them exact: ids from a generator
that reseeds in forked workers, and figures gathered per request and folded in once a
second (nothing lost or counted twice, across threads and forks)."""

from __future__ import annotations

import multiprocessing
import re
import threading
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram
from werkzeug.test import EnvironBuilder

from obsutil import sample
from s3blobs import S3BlobStorage
from s3blobs.registry import metrics
from s3blobs.registry.context import request_id
from s3blobs.registry.metricfold import observe_all
from s3blobs.registry.metrics import RegistryMetrics, fold_metrics
from s3blobs.registry.requestlog import DURATION, Exchange

# Request ids -------------------------------------------------------------------------


def _ids(count: int, queue: Any) -> None:
    queue.put([request_id({}) for _ in range(count)])


def test_forked_workers_generate_different_ids() -> None:
    request_id({})  # the parent's generator has been used before the fork, as in gunicorn
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    children = [fork.Process(target=_ids, args=(500, queue)) for _ in range(2)]
    for child in children:
        child.start()
    first, second = (set(queue.get(timeout=30)) for _ in children)
    for child in children:
        child.join(timeout=10)
    assert len(first) == len(second) == 500
    assert not first & second
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in first)


# Folded metrics -----------------------------------------------------------------------


def _exchange(path: str = "/v2/", status: int = 200, duration: float = 0.003) -> Exchange:
    """A finished exchange that took ``duration`` seconds (and a few microseconds)."""
    exchange = Exchange(EnvironBuilder(path=path, method="GET").get_environ())
    exchange.status, exchange.bytes_out = status, 2
    exchange.started -= duration
    exchange.finish()
    return exchange


def _answered() -> float:
    return sample("s3blobs_http_requests_total", route="base", method="GET", status="200")


def test_two_threads_and_a_folder_lose_and_double_nothing(storage: S3BlobStorage) -> None:
    observer = RegistryMetrics(storage)
    before = _answered()
    before_sum = sample("s3blobs_http_request_duration_seconds_sum", route="base", method="GET")
    before_fast = sample(
        "s3blobs_http_request_duration_seconds_bucket", route="base", method="GET", le="0.005"
    )
    each = 5000
    stop = threading.Event()

    def fold_all_the_time() -> None:
        while not stop.is_set():
            fold_metrics()

    durations = []

    def serve() -> None:
        exchange = _exchange()
        durations.append(exchange.finished[DURATION])
        for _ in range(each):
            observer.observe(exchange)

    folder = threading.Thread(target=fold_all_the_time)
    servers = [threading.Thread(target=serve) for _ in range(2)]
    folder.start()
    for thread in servers:
        thread.start()
    for thread in servers:
        thread.join(timeout=60)
    stop.set()
    folder.join(timeout=60)
    # read at once: the scrape folds what the folding thread had not yet
    assert _answered() - before == 2 * each
    duration_sum = sample("s3blobs_http_request_duration_seconds_sum", route="base", method="GET")
    assert duration_sum - before_sum == pytest.approx(each * sum(durations))
    fast = sample(
        "s3blobs_http_request_duration_seconds_bucket", route="base", method="GET", le="0.005"
    )
    assert fast - before_fast == 2 * each


def test_the_figures_are_folded_in_within_a_second_without_a_scrape(
    storage: S3BlobStorage,
) -> None:
    observer = RegistryMetrics(storage)
    series = metrics.HTTP_REQUESTS.labels("base", "GET", "299")
    before = series._value.get()  # the metric itself: reading it folds nothing
    for _ in range(3):
        observer.observe(_exchange(status=299))
    deadline = time.monotonic() + 5
    while series._value.get() - before < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert series._value.get() - before == 3


def _observe_in_child(storage: S3BlobStorage, queue: Any) -> None:
    try:
        inherited = len(metrics._ANSWERED)
        start = _answered()
        observer = RegistryMetrics(storage)
        for _ in range(7):
            observer.observe(_exchange())
        queue.put((inherited, _answered() - start))
    except BaseException as exc:  # pragma: no cover (reported to the parent)
        queue.put(repr(exc))


def test_a_fork_after_start_counts_each_request_once(storage: S3BlobStorage) -> None:
    observer = RegistryMetrics(storage)
    fold_metrics()
    before = _answered()
    for _ in range(5):
        observer.observe(_exchange())  # not folded yet when the fork comes (most likely)
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    child = fork.Process(target=_observe_in_child, args=(storage, queue))
    child.start()
    inherited, counted = queue.get(timeout=30)
    child.join(timeout=10)
    assert inherited == 0  # the parent's unfolded requests stayed the parent's
    assert counted == 7
    assert _answered() - before == 5


def test_folding_a_histogram_equals_observing_each_value() -> None:
    values = [0.0005, 0.001, 0.0011, 0.3, 0.3, 7.0, 100.0, 0.0]
    one_by_one, folded = CollectorRegistry(), CollectorRegistry()
    buckets = (0.001, 0.01, 0.5, 10)
    single = Histogram("cost_seconds", "each", buckets=buckets, registry=one_by_one)
    bulk = Histogram("cost_seconds", "each", buckets=buckets, registry=folded)
    for value in values:
        single.observe(value)
    observe_all(bulk, values)

    def samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
        return [
            (found.name, found.labels, found.value)
            for family in registry.collect()
            for found in family.samples
            if not found.name.endswith("_created")
        ]

    assert samples(folded) == samples(one_by_one)

    class Plain:  # a histogram whose internals are not the ones known: observed one by one
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, value: float) -> None:
            self.seen.append(value)

    plain = Plain()
    observe_all(plain, values)
    assert plain.seen == values
