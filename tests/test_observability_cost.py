"""What makes observability cheap keeps it exact: request ids from a generator that
reseeds in forked workers, log lines written in batches (never lost, problems never
late), and metrics gathered per request and folded in once a second (nothing lost or
counted twice, across threads and forks)."""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from werkzeug.test import EnvironBuilder

from netutil import free_port, wait_for_port
from obsutil import sample
from s3blobs import S3BlobStorage
from s3blobs.registry import metrics
from s3blobs.registry.auth.wsgi import IDENTITY
from s3blobs.registry.context import request_id
from s3blobs.registry.logbatch import BatchingHandler
from s3blobs.registry.logformat import (
    JsonFormatter,
    TextFormatter,
    install_logging,
    uninstall_logging,
)
from s3blobs.registry.metricfold import observe_all
from s3blobs.registry.metrics import RegistryMetrics, fold_metrics
from s3blobs.registry.requestlog import ACCESS_FORMAT, Exchange, access_arguments
from s3blobs.registry.settings import OperationsSettings

ROOT = Path(__file__).resolve().parent.parent


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


# Batched log lines --------------------------------------------------------------------


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(f"s3blobs.test.batch.{name}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    return logger


def test_lines_wait_for_their_batch_and_are_written_within_the_delay() -> None:
    stream = io.StringIO()
    handler = BatchingHandler(stream, max_delay=0.3)
    log = _logger(handler, "delay")
    try:
        log.info("first")
        log.info("second")
        assert stream.getvalue() == ""  # gathered, not written one by one
        deadline = time.monotonic() + 5
        while not stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stream.getvalue() == "first\nsecond\n"
        log.info("later")  # the flusher keeps working after its first batch
        time.sleep(0.3 + 0.5)
        assert stream.getvalue().endswith("second\nlater\n")
    finally:
        handler.close()


def test_a_warning_is_written_at_once_after_what_came_before() -> None:
    stream = io.StringIO()
    handler = BatchingHandler(stream, max_delay=60)
    log = _logger(handler, "warning")
    try:
        log.info("answered")
        log.warning("trouble")
        assert stream.getvalue() == "answered\ntrouble\n"
    finally:
        handler.close()


def test_a_full_batch_is_written_without_waiting_and_close_writes_the_rest() -> None:
    stream = io.StringIO()
    handler = BatchingHandler(stream, max_delay=60, max_bytes=1000)
    log = _logger(handler, "size")
    for number in range(90):
        log.info("line %03d %s", number, "x" * 40)  # 50 bytes a line: 20 fill a batch
    written = stream.getvalue().splitlines()
    assert len(written) == 80 and written[0] == "line 000 " + "x" * 40
    handler.close()
    assert len(stream.getvalue().splitlines()) == 90


def test_a_forked_child_writes_its_own_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with open(path, "w") as stream:
        handler = BatchingHandler(stream, max_delay=60)
        log = _logger(handler, "fork")
        log.info("parent, before the fork")  # gathered, not yet written
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                log.info("child")
                handler.flush()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        handler.close()
    assert sorted(path.read_text().splitlines()) == ["child", "parent, before the fork"]


def test_other_handlers_still_get_every_access_line(storage: S3BlobStorage) -> None:
    from obsutil import BufferedClient, captured_log
    from s3blobs.registry import make_app

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logging.getLogger("s3blobs.access").addHandler(keep)
    client = BufferedClient(make_app(storage))
    try:
        with captured_log() as log:
            for number in range(3):
                client.get("/v2/", headers={"X-Request-Id": f"other-{number}"})
    finally:
        logging.getLogger("s3blobs.access").removeHandler(keep)
    assert [getattr(record, "request_id", None) for record in records] == [
        "other-0",
        "other-1",
        "other-2",
    ]
    assert [record.getMessage().split()[:3] for record in records] == [["GET", "/v2/", "200"]] * 3
    assert all(record.process == os.getpid() and record.thread for record in records)
    assert log.getvalue().count("GET /v2/ 200") == 3  # ours wrote them too, at uninstall


@pytest.mark.slow
def test_gunicorn_writes_every_line_before_it_exits_on_sigterm(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    """Requests answered just before SIGTERM: their lines are still gathered in the
    worker when the signal comes, and are in the log once gunicorn has exited."""
    port = free_port()
    command = [
        *(sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1"),
        *("--threads", "2", f"--bind=127.0.0.1:{port}", "s3blobs.registry:create_app()"),
    ]
    log_path = tmp_path / "log"
    with open(log_path, "wb") as log:
        env = {**os.environ, **server_env, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=ROOT)
    try:
        wait_for_port(port, proc, "gunicorn")
        with requests.Session() as session:
            for number in range(20):
                answer = session.get(
                    f"http://127.0.0.1:{port}/v2/",
                    headers={"X-Request-Id": f"sigterm-{number}"},
                    timeout=10,
                )
                assert answer.status_code == 200
    finally:
        proc.terminate()  # at once: the last lines are still in the worker's batch
        assert proc.wait(timeout=30) == 0
    text = log_path.read_text()
    for number in range(20):
        assert f"[sigterm-{number}] GET /v2/ 200" in text, text[-2000:]


# Folded metrics -----------------------------------------------------------------------


def _exchange(path: str = "/v2/", status: int = 200, duration: float = 0.003) -> Exchange:
    exchange = Exchange(EnvironBuilder(path=path, method="GET").get_environ())
    exchange.status, exchange.duration, exchange.bytes_out = status, duration, 2
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

    def serve() -> None:
        exchange = _exchange()
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
    assert duration_sum - before_sum == pytest.approx(2 * each * 0.003)
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


# The access line written straight from the exchange ----------------------------------


def _access_exchange() -> Exchange:
    environ = EnvironBuilder(
        path="/v2/lib/app/password=hunter2/blobs/sha256:abc",
        method="PUT",
        query_string="digest=sha256:abc&token=t0ken",
        headers={"X-Request-Id": "fast-1"},
    ).get_environ()
    environ[IDENTITY] = SimpleNamespace(name="alice")
    exchange = Exchange(environ)
    exchange.status, exchange.duration = 201, 0.0123
    exchange.bytes_in, exchange.bytes_out, exchange.s3_requests = 1234, 0, 3
    return exchange


@pytest.mark.parametrize("formatter", [TextFormatter, JsonFormatter])
def test_the_direct_access_line_is_the_records_line(formatter: type[logging.Formatter]) -> None:
    exchange = _access_exchange()
    access = logging.getLogger("s3blobs.access")
    record = access.makeRecord(
        access.name,
        logging.INFO,
        __file__,
        0,
        ACCESS_FORMAT,
        access_arguments(exchange),
        None,
        extra={"request_id": exchange.id, "exchange": exchange},
    )
    direct = formatter().format_access(exchange, record.created)  # type: ignore[attr-defined]
    assert direct == formatter().format(record)
    assert "fast-1" in direct and "hunter2" not in direct and "t0ken" not in direct


def test_a_handler_given_another_formatter_gets_records(storage: S3BlobStorage) -> None:
    from obsutil import BufferedClient
    from s3blobs.registry import make_app

    stream = io.StringIO()
    handler = install_logging(OperationsSettings(), stream)
    handler.setFormatter(logging.Formatter("%(levelname)s|%(process)d|%(message)s"))
    try:
        BufferedClient(make_app(storage)).get("/v2/")
    finally:
        uninstall_logging(handler)
    assert f"INFO|{os.getpid()}|GET /v2/ 200 in=0 out=2 " in stream.getvalue()


_PIECES = st.sampled_from(
    [
        *("a", "Z", "0", "/", ":", "@", "=", " ", "-", ".", "%", "&", "?", "'", '"', "\n"),
        *("authorization", "Signature=", "credential=", "x-amz-security-token=", "Bearer "),
        *("basic", "Passw", "secret", "token", "://u:", "password:", "hunter2", "Basic "),
    ]
)
# Often plain: a suspect word in one field must be found even when no other has one.
_TEXT = st.one_of(st.just("x"), st.lists(_PIECES, max_size=12).map("".join))
_ID = st.lists(
    st.sampled_from(["a", "9", ".", "_", ":", "-", "password", "Authorization", "secret"]),
    min_size=1,
    max_size=8,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(
    method=st.one_of(st.sampled_from(["GET", "PUT"]), _TEXT.filter(bool)),
    path=_TEXT,
    query=_TEXT,
    user=_TEXT,
    sent_id=_ID,
)
def test_the_direct_text_line_is_scrubbed_as_the_records_line(
    method: str, path: str, query: str, user: str, sent_id: str
) -> None:
    """Whatever a client puts in the fields it chooses, the line written straight from
    the exchange (scrubbed only when a field is suspect) is the record's line (whose
    whole text is scrubbed)."""
    environ = EnvironBuilder(path="/v2/", headers={"X-Request-Id": sent_id}).get_environ()
    environ.update(REQUEST_METHOD=method, PATH_INFO="/v2/" + path, QUERY_STRING=query)
    environ[IDENTITY] = SimpleNamespace(name=user)
    exchange = Exchange(environ)
    exchange.status, exchange.duration = 200, 0.5
    access = logging.getLogger("s3blobs.access")
    record = access.makeRecord(
        access.name,
        logging.INFO,
        __file__,
        0,
        ACCESS_FORMAT,
        access_arguments(exchange),
        None,
        extra={"request_id": exchange.id, "exchange": exchange},
    )
    assert TextFormatter().format_access(exchange, record.created) == TextFormatter().format(record)
