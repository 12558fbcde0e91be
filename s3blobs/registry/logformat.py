"""The log's shape: text or JSON lines, each with the request id, none with a secret.

``install_logging(settings)`` puts one handler on the root logger: every line,
from any module, gets the id of the request being served (a logging.Filter
reading the current request's contextvar), and is scrubbed of what must never
be written (Authorization values, presigned URL signatures and credentials,
passwords in URLs). botocore, urllib3 and werkzeug stay at WARNING whatever the
level: botocore's DEBUG output carries signed request headers.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from .logbatch import BatchingHandler
from .requestlog import (
    ACCESS_LOG,
    CREATED,
    DIGITS,
    NUMBER_TEXT,
    PATH,
    QUERY,
    REQUEST_ID,
    AccessSink,
    Summary,
    access_fields,
    access_message,
    access_record,
    current_exchange,
    forget_access_sink,
    logged_path,
    msecs,
)
from .settings import OperationsSettings

#: Libraries whose INFO/DEBUG output would repeat our access line or print secrets.
QUIET_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3", "werkzeug", "moto")

_SECRETS = [
    # A header's whole value, whatever its scheme (AWS4-HMAC-SHA256 carries the key id).
    re.compile(r"((?:Proxy-)?Authorization['\"]?\s*[:=]\s*(?:b?['\"])?)[^'\"\r\n]+", re.I),
    re.compile(r"((?:X-Amz-)?(?:Signature|Credential|Security-Token)=)[^\s,&'\"]+", re.I),
    re.compile(r"\b((?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]+", re.I),
    re.compile(
        r"((?:password|passwd|secret|access_token|refresh_token|client_secret)"
        r"['\"]?\s*[:=]\s*['\"]?)[^\s&'\",;}]+",
        re.I,
    ),
    # A password in a URL: scheme://user:PASSWORD@host
    re.compile(r"(://[^/\s:@'\"]+:)[^/\s@'\"]+(?=@)"),
]
# Checked first, as plain substrings of the lower-cased line (a regex alternation
# costs ten times more): most lines hold none of them.
_SUSPECT_WORDS = (
    "authorization",
    "signature=",
    "credential=",
    "security-token=",
    "bearer",
    "basic",
    "passw",
    "secret",
    "token",
    "@",
)


def scrub(text: str) -> str:
    """``text`` with every credential-looking value replaced by REDACTED."""
    if not _suspect(text):
        return text
    for pattern in _SECRETS:
        text = pattern.sub(r"\1REDACTED", text)
    return text


def _suspect(text: str) -> bool:
    """Whether ``text`` holds a word that every secret pattern needs."""
    lowered = text.lower()
    for word in _SUSPECT_WORDS:  # noqa: SIM110 (a loop, not any(generator): a frame less)
        if word in lowered:
            return True
    return False


@functools.lru_cache(maxsize=4096)
def _logged_and_suspect(method: str, path: str, query: str, user: str) -> tuple[str, bool]:
    """The access line's logged path, and whether the fields a client chooses (the
    method, the path as logged, the user) hold a suspect word: remembered, they repeat.

    Scrubbing is checked for by field: most lines need none. The rest of the line (time,
    level, logger, numbers, and the words between the fields) holds no suspect word, and
    none can straddle a field's edge: each field is followed by a space, a ']', or the
    line's end, none of which is in a word, and the words before a field end in ' ',
    '[' or 'user=', which start none (so the fields are joined by a space, in no word).
    The path is judged as logged: percent-encoding can make a word ('\xba' is '%C2%BA')."""
    logged = logged_path(path, query)
    return logged, _suspect(f"{method} {logged} {user}")


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (the request being served, or '-') to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            exchange = current_exchange()
            record.request_id = exchange.id if exchange is not None else "-"
        return True


_ACCESS_NAME = ACCESS_LOG.name
# "000" to "999", looked up: formatting with a width costs ten times more.
_MILLISECONDS = tuple(f"{ms:03d}" for ms in range(1000))


class TextFormatter(logging.Formatter):
    """``2026-11-27T10:00:00.123Z INFO s3blobs.access [id] GET /v2/ 200 ...``"""

    def __init__(self) -> None:
        super().__init__()
        # (a second, as a float, and its text): one attribute, so two threads formatting
        # at once (one formatter may serve several handlers, each with its own lock)
        # never mix them up.
        self._stamp = (-2.0, "")

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", "-")
        line = self._prefix(record.created, record.levelname, record.name)
        line += f"[{request_id}] {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return scrub(line)

    def format_access(self, summary: Summary) -> str:
        """What format() makes of the access line's record, without the record."""
        [line] = self.format_access_lines([summary])
        return line

    def format_access_lines(self, summaries: Iterable[Summary], end: str = "") -> list[str]:
        """format_access of each, ``end`` added, in one loop: a line per request, this
        is most of what the access log costs."""
        lines = []
        start, stamp = self._stamp
        for (
            created,
            request_id,
            method,
            path,
            query,
            status,
            bytes_in,
            bytes_out,
            duration,
            s3_requests,
            user,
            _,
        ) in summaries:
            fraction = created - start
            if not 0.0 <= fraction < 1.0:
                start, stamp = self._second(created)
                fraction = created - start
            logged, suspect = _logged_and_suspect(method, path, query, user)
            tenths = int(duration * 10000.0 + 0.5)  # of a millisecond
            line = (
                # The message as access_message makes it, inline: a call a line less.
                f"{stamp}.{_MILLISECONDS[int(fraction * 1000)]}Z INFO {_ACCESS_NAME} "
                f"[{request_id}] {method} {logged} {NUMBER_TEXT[status]} "
                f"in={NUMBER_TEXT[bytes_in]} out={NUMBER_TEXT[bytes_out]} "
                f"{NUMBER_TEXT[tenths // 10]}.{DIGITS[tenths % 10]}ms "
                f"s3={NUMBER_TEXT[s3_requests]} user={user}{end}"
            )
            # A request id is [A-Za-z0-9._:-] (context._VALID): without a ':' no
            # pattern can match it. (No pattern matches the end, a line's terminator.)
            if suspect or (":" in request_id and _suspect(request_id)):
                line = scrub(line)
            lines.append(line)
        return lines

    def _prefix(self, created: float, levelname: str, name: str) -> str:
        start, stamp = self._stamp
        fraction = created - start
        if not 0.0 <= fraction < 1.0:
            start, stamp = self._second(created)
            fraction = created - start
        return f"{stamp}.{_MILLISECONDS[int(fraction * 1000)]}Z {levelname} {name} "

    def _second(self, created: float) -> tuple[float, str]:
        # One line per request: the time's text up to the second is made once a second,
        # and the second is recognised by comparing floats (int() of a float is dear:
        # one is left, for the milliseconds, which are a LogRecord's msecs).
        second = int(created)
        stamp = self._stamp = (
            float(second),
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)),
        )
        return stamp


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request_id, message, and for
    access lines method, path, status, bytes_in, bytes_out, duration_seconds,
    s3_requests, user."""

    def format(self, record: logging.LogRecord) -> str:
        line = self._fields(record.created, record.msecs, record.levelname, record.name)
        line["request_id"] = getattr(record, "request_id", "-")
        line["message"] = scrub(record.getMessage())
        summary = getattr(record, "access", None)
        if summary is not None:  # an access line (see access_record)
            line.update(_scrubbed_fields(summary))
        if record.exc_info:
            line["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(line)

    def format_access(self, summary: Summary) -> str:
        """What format() makes of the access line's record, without the record."""
        created, path = summary[CREATED], logged_path(summary[PATH], summary[QUERY])
        line = self._fields(created, msecs(created), "INFO", ACCESS_LOG.name)
        line["request_id"] = summary[REQUEST_ID]
        line["message"] = scrub(access_message(summary, path))
        line.update(_scrubbed_fields(summary, path))
        return json.dumps(line)

    def format_access_lines(self, summaries: Iterable[Summary], end: str = "") -> list[str]:
        """format_access of each, ``end`` added."""
        return [self.format_access(summary) + end for summary in summaries]

    @staticmethod
    def _fields(created: float, msecs: float, levelname: str, name: str) -> dict[str, Any]:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        return {"time": f"{stamp}.{int(msecs):03d}Z", "level": levelname, "logger": name}


def _scrubbed_fields(summary: Summary, logged: str | None = None) -> dict[str, Any]:
    """The access line's fields; the path and user scrubbed as the message is."""
    fields = access_fields(summary, logged)
    fields["path"], fields["user"] = scrub(fields["path"]), scrub(fields["user"])
    return fields


def _ours(formatter: logging.Formatter | None) -> TextFormatter | JsonFormatter | None:
    """The formatter, if it is exactly one of ours (a subclass may format otherwise: it
    gets the record)."""
    if type(formatter) is TextFormatter or type(formatter) is JsonFormatter:
        return formatter
    return None


class _Handler(BatchingHandler):
    """Ours, so a second install replaces it instead of doubling every line; it takes
    the access lines' summaries themselves (see requestlog.access_sink)."""

    def access_line_sink(self) -> AccessSink | None:
        """``hand_over``, that gathers a finished request's summary, its line to be
        formatted when the batch is written; None while this handler has another level
        or filter than install_logging gave it (the access line is a record, then)."""
        return self.hand_over if self._as_installed() else None

    def _as_installed(self) -> bool:
        # install_logging's RequestIdFilter only: the summary has the id it adds.
        filters = self.filters
        return (
            self.level <= logging.INFO and len(filters) == 1 and type(filters[0]) is RequestIdFilter
        )

    def _write(self) -> None:
        super()._write()
        # Each batch, the access lines' way is decided again: a handler added since
        # gets the next batch's (requestlog.access_sink).
        forget_access_sink()

    def render(self, item: object) -> str:
        """An access line handed over, formatted as format() would its record (by the
        formatter's own format() when it is not one of ours); the level and filters this
        handler was given since it was handed over judge the record ("" if refused)."""
        assert type(item) is tuple
        formatter = _ours(self.formatter)
        if formatter is not None and self._as_installed():
            return formatter.format_access(item) + self.terminator
        record = access_record(item)
        if record.levelno < self.level or not self.filter(record):
            return ""
        return self.format(record) + self.terminator

    def render_run(self, items: list[Any]) -> list[str]:
        """Access lines handed over one after another, formatted in one go."""
        formatter = _ours(self.formatter)
        if formatter is not None and self._as_installed():
            try:
                return formatter.format_access_lines(items, self.terminator)
            except Exception:
                pass  # one at a time, then: only a line that cannot be rendered is lost
        return super().render_run(items)


def install_logging(settings: OperationsSettings, stream: TextIO | None = None) -> logging.Handler:
    """Log to ``stream`` (stderr) in the configured format and level; returns the handler.
    Lines are written in batches, at most ``logbatch.MAX_DELAY`` seconds late, WARNING
    and worse at once (see :mod:`.logbatch`); ``handler.flush()`` writes them now."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        uninstall_logging(handler)
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.setLevel(settings.log_level)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    forget_access_sink()
    for name in QUIET_LIBRARIES:
        library = logging.getLogger(name)
        library.setLevel(max(settings.log_level, logging.WARNING))
        # A library's own handler (werkzeug adds one) would print unscrubbed lines.
        for own in list(library.handlers):
            library.removeHandler(own)
    return handler


def uninstall_logging(handler: logging.Handler) -> None:
    """Remove the handler, after writing the lines it still holds."""
    logging.getLogger().removeHandler(handler)
    forget_access_sink()
    handler.close()
