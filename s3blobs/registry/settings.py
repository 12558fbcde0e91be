"""What an operator configures about watching the registry: metrics, logs, events.

Read from ``S3BLOBS_METRICS_ADDR``, ``S3BLOBS_LOG_FORMAT``, ``S3BLOBS_LOG_LEVEL``,
``S3BLOBS_NOTIFY_URLS``, ``S3BLOBS_NOTIFY_HEADERS`` and ``S3BLOBS_NOTIFY_PULLS``;
a bad value is a ConfigError that names its variable and what it accepts.
Kept apart from :class:`s3blobs.Config`, which is about the bucket.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError

LOG_FORMATS = frozenset({"text", "json"})
LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
#: The key of S3BLOBS_NOTIFY_HEADERS whose headers go to every endpoint.
EVERY_ENDPOINT = "*"
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


@dataclass(frozen=True)
class OperationsSettings:
    """How the registry is watched; ``OperationsSettings()``: a text log at INFO, and
    no metrics listener, no events."""

    metrics_addr: tuple[str, int] | None = None
    log_format: str = "text"
    log_level: int = logging.INFO
    notify_urls: tuple[str, ...] = ()
    #: Extra request headers by endpoint URL, or '*' for every endpoint.
    notify_headers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    notify_pulls: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperationsSettings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            return env.get(name, "").strip()

        urls = parse_urls(get("S3BLOBS_NOTIFY_URLS"))
        return cls(
            metrics_addr=parse_addr("S3BLOBS_METRICS_ADDR", get("S3BLOBS_METRICS_ADDR")),
            log_format=_choice("S3BLOBS_LOG_FORMAT", get("S3BLOBS_LOG_FORMAT") or "text"),
            log_level=_level(get("S3BLOBS_LOG_LEVEL") or "info"),
            notify_urls=urls,
            notify_headers=parse_headers(get("S3BLOBS_NOTIFY_HEADERS"), urls),
            notify_pulls=_bool("S3BLOBS_NOTIFY_PULLS", get("S3BLOBS_NOTIFY_PULLS") or "false"),
        )


def parse_addr(name: str, raw: str) -> tuple[str, int] | None:
    """``host:port``, ``[v6]:port`` or ``:port`` (all interfaces); '' is None."""
    if not raw:
        return None
    match = re.fullmatch(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\s]*)):(?P<port>\d{1,5})", raw)
    if match is None or int(match.group("port")) > 65535:
        raise ConfigError(f"{name}={raw!r}: expected HOST:PORT, such as 127.0.0.1:9090")
    return match.group("v6") or match.group("host") or "0.0.0.0", int(match.group("port"))


def parse_urls(raw: str) -> tuple[str, ...]:
    urls = tuple(url.strip() for url in raw.split(",") if url.strip())
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # The value may hold a token: name the position, not the URL.
            position = urls.index(url) + 1
            raise ConfigError(
                f"S3BLOBS_NOTIFY_URLS: entry {position} is not an http:// or https:// URL"
            )
    return urls


def parse_headers(raw: str, urls: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Headers by endpoint URL (as in S3BLOBS_NOTIFY_URLS) or '*' (every endpoint),
    from a JSON object or the path of a TOML file of the same shape. Values are
    secrets (tokens): never echoed in an error."""
    name = "S3BLOBS_NOTIFY_HEADERS"
    if not raw:
        return {}
    table = _json_headers(raw) if raw.startswith("{") else _toml_headers(raw)
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: expected an object of endpoint URL (or '*') to headers")
    for endpoint, headers in table.items():
        if endpoint != EVERY_ENDPOINT and endpoint not in urls:
            # An endpoint URL may hold a token in its path: name only its host.
            host = urlsplit(endpoint).hostname or "?"
            raise ConfigError(
                f"{name}: a key (host {host}) is neither '*' nor exactly one of the "
                "S3BLOBS_NOTIFY_URLS"
            )
        if not isinstance(headers, dict) or not all(
            isinstance(key, str) and _HEADER_NAME.fullmatch(key) and isinstance(value, str)
            for key, value in headers.items()
        ):
            raise ConfigError(f"{name}: the headers of each endpoint are names to string values")
    return table


def _json_headers(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        # The message would quote the text, tokens included: say only where.
        raise ConfigError("S3BLOBS_NOTIFY_HEADERS: not valid JSON") from None


def _toml_headers(raw: str) -> Any:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise ConfigError(
            "S3BLOBS_NOTIFY_HEADERS: a TOML file needs Python 3.11; give a JSON object instead"
        ) from None
    path = Path(raw)
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"S3BLOBS_NOTIFY_HEADERS={raw!r}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"S3BLOBS_NOTIFY_HEADERS={raw!r}: not valid TOML: {exc}") from None


def _choice(name: str, raw: str) -> str:
    if raw.lower() not in LOG_FORMATS:
        raise ConfigError(f"{name}={raw!r}: expected text or json")
    return raw.lower()


def _level(raw: str) -> int:
    if raw.lower() not in LOG_LEVELS:
        raise ConfigError(
            f"S3BLOBS_LOG_LEVEL={raw!r}: expected debug, info, warning, error or critical"
        )
    return LOG_LEVELS[raw.lower()]


def _bool(name: str, raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: expected true or false")
