"""S3BLOBS_METRICS_ADDR, _LOG_FORMAT, _LOG_LEVEL, _NOTIFY_*: read, and refused by name."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from s3blobs import ConfigError
from s3blobs.registry.settings import OperationsSettings

URL = "https://scanner.example/hook"


def test_defaults_are_a_text_log_at_info_and_nothing_else() -> None:
    settings = OperationsSettings.from_env({})
    assert settings == OperationsSettings()
    assert settings.metrics_addr is None and settings.notify_urls == ()
    assert (settings.log_format, settings.log_level) == ("text", logging.INFO)


def test_every_variable_is_read(tmp_path: Path) -> None:
    headers = tmp_path / "headers.toml"
    headers.write_text(f'["{URL}"]\nAuthorization = "Bearer t0ken"\n["*"]\nX-Registry = "prod"\n')
    settings = OperationsSettings.from_env(
        {
            "S3BLOBS_METRICS_ADDR": "127.0.0.1:9090",
            "S3BLOBS_LOG_FORMAT": "JSON",
            "S3BLOBS_LOG_LEVEL": "warning",
            "S3BLOBS_NOTIFY_URLS": f"{URL}, http://127.0.0.1:8080/events",
            "S3BLOBS_NOTIFY_HEADERS": str(headers),
            "S3BLOBS_NOTIFY_PULLS": "yes",
        }
    )
    assert settings.metrics_addr == ("127.0.0.1", 9090)
    assert (settings.log_format, settings.log_level) == ("json", logging.WARNING)
    assert settings.notify_urls == (URL, "http://127.0.0.1:8080/events")
    assert settings.notify_headers == {
        URL: {"Authorization": "Bearer t0ken"},
        "*": {"X-Registry": "prod"},
    }
    assert settings.notify_pulls is True
    as_json = OperationsSettings.from_env(
        {"S3BLOBS_NOTIFY_URLS": URL, "S3BLOBS_NOTIFY_HEADERS": f'{{"{URL}": {{"A": "b"}}}}'}
    )
    assert as_json.notify_headers == {URL: {"A": "b"}}
    assert OperationsSettings.from_env({"S3BLOBS_METRICS_ADDR": ":9100"}).metrics_addr == (
        "0.0.0.0",
        9100,
    )
    assert OperationsSettings.from_env({"S3BLOBS_METRICS_ADDR": "[::1]:9100"}).metrics_addr == (
        "::1",
        9100,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("S3BLOBS_METRICS_ADDR", "9090"),
        ("S3BLOBS_METRICS_ADDR", "127.0.0.1:99999"),
        ("S3BLOBS_LOG_FORMAT", "xml"),
        ("S3BLOBS_LOG_LEVEL", "verbose"),
        ("S3BLOBS_NOTIFY_URLS", "ftp://example.com/x"),
        ("S3BLOBS_NOTIFY_PULLS", "maybe"),
        ("S3BLOBS_NOTIFY_HEADERS", '{"https://elsewhere.example/": {"A": "b"}}'),
        ("S3BLOBS_NOTIFY_HEADERS", '{"*": {"bad header": "x"}}'),
        ("S3BLOBS_NOTIFY_HEADERS", "/no/such/headers.toml"),
    ],
)
def test_bad_values_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        OperationsSettings.from_env({"S3BLOBS_NOTIFY_URLS": URL, variable: value})


def test_header_values_are_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        OperationsSettings.from_env(
            {"S3BLOBS_NOTIFY_URLS": URL, "S3BLOBS_NOTIFY_HEADERS": '{"*": {"A": "s3cret"'}
        )
    assert "s3cret" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        OperationsSettings.from_env({"S3BLOBS_NOTIFY_URLS": "https://hooks.example/T0/s3cret, x"})
    assert "s3cret" not in str(info.value) and "entry 2" in str(info.value)
