"""What makes the access log cheap keeps it whole and clean: lines written in batches
(never lost, problems never late, nothing lost at gunicorn's SIGTERM), the access line
formatted from its entry when its batch is written, equal to the record's line and
scrubbed alike, and a request finished only once the server has sent its answer."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from hypothesis import example, given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder

from netutil import free_port, wait_for_port
from obsutil import BufferedClient, captured_log
from s3blobs import S3BlobStorage
from s3blobs.registry import make_app
from s3blobs.registry.auth.wsgi import IDENTITY
from s3blobs.registry.logbatch import BatchingHandler
from s3blobs.registry.logformat import (
    JsonFormatter,
    TextFormatter,
    install_logging,
    uninstall_logging,
)
from s3blobs.registry.requestlog import DURATION, Exchange, RequestLog, Summary, access_record
from s3blobs.registry.settings import OperationsSettings

ROOT = Path(__file__).resolve().parent.parent
TEXT_ACCESS_LINE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO s3blobs\.access \[\w+\] GET /v2/ 200 "
    r"in=0 out=2 \d+\.\dms s3=0 user=-"
)


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


def test_an_item_that_cannot_be_rendered_costs_only_its_own_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = io.StringIO()
    handler = BatchingHandler(stream, max_delay=60)
    log = _logger(handler, "render")
    log.info("before")
    with handler.lock:  # type: ignore[union-attr]
        handler.gather(object(), logging.INFO)  # a BatchingHandler renders nothing
    log.info("after")
    handler.close()
    assert stream.getvalue() == "before\nafter\n"
    assert "cannot render object" in capsys.readouterr().err  # logging's report


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


# The access line written straight from the request's summary --------------------------


def _access_summary() -> Summary:
    environ = EnvironBuilder(
        path="/v2/lib/app/password=hunter2/blobs/sha256:abc",
        method="PUT",
        query_string="digest=sha256:abc&token=t0ken",
        headers={"X-Request-Id": "fast-1"},
    ).get_environ()
    environ[IDENTITY] = SimpleNamespace(name="alice")
    exchange = Exchange(environ)
    exchange.status = 201
    exchange.bytes_in, exchange.bytes_out, exchange.s3_requests = 1234, 0, 3
    return exchange.finish()


def test_a_summary_that_cannot_be_rendered_costs_only_its_own_line_of_a_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Summaries handed over one after another are rendered as a run; one that cannot be
    (here a tuple too short) is reported, and the lines around it are still written."""
    stream = io.StringIO()
    handler = install_logging(OperationsSettings(), stream)
    try:
        good = _access_summary()
        for item in (good, ("not", "a", "summary"), good):
            handler.hand_over(item)
        handler.flush()
    finally:
        uninstall_logging(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and all("[fast-1] PUT " in line for line in lines)
    assert "unrenderable ('not', 'a', 'summary')" in capsys.readouterr().err


@pytest.mark.parametrize("formatter", [TextFormatter, JsonFormatter])
def test_the_direct_access_line_is_the_records_line(formatter: type[logging.Formatter]) -> None:
    summary = _access_summary()
    record = access_record(summary)
    direct = formatter().format_access(summary)  # type: ignore[attr-defined]
    assert direct == formatter().format(record)
    assert "fast-1" in direct and "hunter2" not in direct and "t0ken" not in direct


def test_a_handler_given_another_formatter_gets_records(storage: S3BlobStorage) -> None:
    stream = io.StringIO()
    handler = install_logging(OperationsSettings(), stream)
    handler.setFormatter(logging.Formatter("%(levelname)s|%(process)d|%(message)s"))
    try:
        BufferedClient(make_app(storage)).get("/v2/")
    finally:
        uninstall_logging(handler)
    assert f"INFO|{os.getpid()}|GET /v2/ 200 in=0 out=2 " in stream.getvalue()


@contextlib.contextmanager
def alone_on_the_access_log(handler: logging.Handler) -> Iterator[None]:
    """``handler`` as the access log's only one (pytest's log capture, on the root
    logger, would otherwise get every record: then no line is written from its entry)."""
    root, access = logging.getLogger(), logging.getLogger("s3blobs.access")
    root.removeHandler(handler)
    access.addHandler(handler)
    access.propagate = False
    try:
        yield
    finally:
        access.propagate = True
        access.removeHandler(handler)
        handler.close()


def test_access_lines_are_formatted_by_the_formatter_the_handler_has_when_it_writes(
    storage: S3BlobStorage,
) -> None:
    stream = io.StringIO()
    handler = install_logging(OperationsSettings(), stream)
    client = BufferedClient(make_app(storage))
    with alone_on_the_access_log(handler):
        client.get("/v2/", headers={"X-Request-Id": "a"})
        with handler.lock:  # type: ignore[union-attr]
            handed_over = list(handler._handed_over)
            assert not handler._lines and len(handed_over) == 1
            assert type(handed_over[0]) is tuple  # the request's summary
        handler.flush()
        client.get("/v2/", headers={"X-Request-Id": "b"})
        handler.setFormatter(JsonFormatter())  # after b gathered, before it is written
        handler.flush()
        client.get("/v2/", headers={"X-Request-Id": "c"})
        handler.setFormatter(logging.Formatter("%(request_id)s|%(message)s"))
        client.get("/v2/", headers={"X-Request-Id": "d"})  # the same batch as c
    a, b, c, d = stream.getvalue().splitlines()
    assert TEXT_ACCESS_LINE.fullmatch(a) and "[a] GET /v2/ 200 in=0 out=2 " in a
    assert json.loads(b)["request_id"] == "b" and json.loads(b)["path"] == "/v2/"
    assert c.startswith("c|GET /v2/ 200 in=0 out=2 ")  # by the record, as format() would
    assert d.startswith("d|GET /v2/ 200 in=0 out=2 ")


def request_ids_written(stream: io.StringIO) -> list[str]:
    """The request id of each line written to ``stream``, in order."""
    return [line.split("[")[1].split("]")[0] for line in stream.getvalue().splitlines()]


def test_a_handler_added_on_the_access_logs_way_gets_its_lines_from_the_next_batch_on(
    storage: S3BlobStorage,
) -> None:
    """Where access lines go is decided once a batch: a handler added while one gathers
    gets the lines after it is written, and none is lost to the handler that took them."""
    stream = io.StringIO()
    handler = install_logging(OperationsSettings(), stream)
    handler.max_delay = 60  # type: ignore[attr-defined]  # no flusher between the requests
    client = BufferedClient(make_app(storage))
    kept: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(getattr(record, "request_id", "?"))

    keep = Keep()
    with alone_on_the_access_log(handler):
        client.get("/v2/", headers={"X-Request-Id": "a"})
        logging.getLogger("s3blobs.access").addHandler(keep)
        try:
            client.get("/v2/", headers={"X-Request-Id": "b"})  # a's batch: taken by ours
            assert kept == [] and len(handler._handed_over) == 2
            handler.flush()  # the batch is written: the next line finds its way again
            client.get("/v2/", headers={"X-Request-Id": "c"})
            handler.flush()
        finally:
            logging.getLogger("s3blobs.access").removeHandler(keep)
    assert kept == ["c"]
    assert request_ids_written(stream) == ["a", "b", "c"]


def test_a_level_or_filter_given_to_the_handler_judges_lines_already_handed_over(
    storage: S3BlobStorage,
) -> None:
    stream = io.StringIO()
    handler = install_logging(OperationsSettings(), stream)
    handler.max_delay = 60  # type: ignore[attr-defined]  # no flusher between the requests
    client = BufferedClient(make_app(storage))
    with alone_on_the_access_log(handler):
        for request_id in ("a", "b"):
            client.get("/v2/", headers={"X-Request-Id": request_id})
        handler.addFilter(lambda record: getattr(record, "request_id", "") != "a")
        handler.flush()  # a and b were handed over before the filter: it judges them now
        client.get("/v2/", headers={"X-Request-Id": "a"})  # a record now, refused
        client.get("/v2/", headers={"X-Request-Id": "c"})
        handler.setLevel(logging.WARNING)
        client.get("/v2/", headers={"X-Request-Id": "d"})  # refused by the level
    assert request_ids_written(stream) == ["b", "c"]


def test_a_request_is_finished_once_the_server_has_sent_its_answer() -> None:
    """A HEAD's headers go out after the last iteration of its (empty) body: the access
    line and the observers wait for close(), which every WSGI server calls."""
    finished: list[Exchange] = []

    def head(environ: dict[str, object], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "5")])
        return []

    environ = EnvironBuilder(path="/v2/", method="HEAD").get_environ()
    body = RequestLog(head, [finished.append])(environ, lambda *args: None)
    assert list(body) == [] and finished == []
    body.close()  # type: ignore[attr-defined]
    body.close()  # type: ignore[attr-defined]
    assert [exchange.status for exchange in finished] == [200]


_PIECES = st.sampled_from(
    [
        *("a", "Z", "0", "/", ":", "@", "=", " ", "-", ".", "%", "&", "?", "'", '"', "\n"),
        *("authorization", "Signature=", "credential=", "x-amz-security-token=", "Bearer "),
        *("basic", "Passw", "secret", "token", "://u:", "password:", "hunter2", "Basic "),
        "\xbasic",  # logged as '%C2%BAsic': a word the path as sent does not hold
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
@example(method="GET", path="\xbasic", query="", user="-", sent_id="a")  # 'BAsic 200'
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
    exchange.status = 200
    summary = exchange.finish()
    assert TextFormatter().format_access(summary) == TextFormatter().format(access_record(summary))


@settings(max_examples=300, deadline=None)
@given(
    status=st.integers(100, 599),
    bytes_in=st.integers(0, 2**40),
    bytes_out=st.integers(0, 2**40),
    duration=st.floats(0, 3600, allow_nan=False),
    s3_requests=st.integers(0, 5000),
)
def test_the_numbers_of_the_direct_text_line_are_the_records_and_plain_decimals(
    status: int, bytes_in: int, bytes_out: int, duration: float, s3_requests: int
) -> None:
    """The access line's numbers are looked up when small and made when not: either
    way the line written straight from the summary is the record's, each number is its
    decimal text, and the duration is in milliseconds to a tenth (half up)."""
    environ = EnvironBuilder(path="/v2/", headers={"X-Request-Id": "n-1"}).get_environ()
    exchange = Exchange(environ)
    exchange.status, exchange.bytes_in, exchange.bytes_out = status, bytes_in, bytes_out
    exchange.s3_requests = s3_requests
    exchange.started -= duration
    summary = exchange.finish()
    line = TextFormatter().format_access(summary)
    assert line == TextFormatter().format(access_record(summary))
    *_, status_text, received, sent, took, asked, who = line.split(" ")
    assert [status_text, received, sent, asked, who] == [
        str(status),
        f"in={bytes_in}",
        f"out={bytes_out}",
        f"s3={s3_requests}",
        "user=-",
    ]
    whole, tenth = took.removesuffix("ms").split(".")
    assert len(tenth) == 1
    assert abs(int(whole) + int(tenth) / 10 - summary[DURATION] * 1000) <= 0.05 + 1e-6
