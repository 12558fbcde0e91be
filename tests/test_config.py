"""Config.from_env: defaults, parsing, and a named error for every bad value."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from s3blobs import Config, ConfigError, S3BlobStorage
from s3blobs.config import MiB

BASE = {"S3BLOBS_BUCKET": "my-registry"}


def test_defaults() -> None:
    config = Config.from_env(BASE)
    assert config.bucket == "my-registry"
    assert config.part_size == 16 * MiB
    assert config.max_concurrency == 4
    assert config.redirect is True
    assert config.presign_expiry == 1200
    assert config.prefix == "" and config.key_prefix == ""
    assert config.sse is None and config.storage_class is None
    assert config.cache_size > 0 and config.cache_ttl > 0


def test_every_variable_is_read() -> None:
    config = Config.from_env(
        {
            **BASE,
            "S3BLOBS_REGION": "eu-west-1",
            "S3BLOBS_ENDPOINT_URL": "http://127.0.0.1:9000",
            "S3BLOBS_PREFIX": "/registry/v2/",
            "S3BLOBS_PART_SIZE": "8MiB",
            "S3BLOBS_MAX_CONCURRENCY": "8",
            "S3BLOBS_REDIRECT": "false",
            "S3BLOBS_PRESIGN_EXPIRY": "600",
            "S3BLOBS_STORAGE_CLASS": "STANDARD_IA",
            "S3BLOBS_SSE": "aws:kms",
            "S3BLOBS_SSE_KMS_KEY_ID": "alias/registry",
            "S3BLOBS_ADDRESSING_STYLE": "path",
            "S3BLOBS_CACHE_SIZE": "0",
            "S3BLOBS_CACHE_TTL": "2.5",
        }
    )
    assert config.region == "eu-west-1"
    assert config.endpoint_url == "http://127.0.0.1:9000"
    assert config.prefix == "registry/v2" and config.key_prefix == "registry/v2/"
    assert config.part_size == 8 * MiB
    assert config.max_concurrency == 8
    assert config.redirect is False
    assert config.presign_expiry == 600
    assert config.storage_class == "STANDARD_IA"
    assert config.sse == "aws:kms" and config.sse_kms_key_id == "alias/registry"
    assert config.addressing_style == "path"
    assert config.cache_size == 0 and config.cache_ttl == 2.5


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("S3BLOBS_BUCKET", "No_Such Bucket"),
        ("S3BLOBS_ENDPOINT_URL", "ftp://x"),
        ("S3BLOBS_PREFIX", "a/../b"),
        ("S3BLOBS_PREFIX", "a b"),
        ("S3BLOBS_PART_SIZE", "4MiB"),
        ("S3BLOBS_PART_SIZE", "6GiB"),
        ("S3BLOBS_PART_SIZE", "lots"),
        ("S3BLOBS_MAX_CONCURRENCY", "0"),
        ("S3BLOBS_MAX_CONCURRENCY", "four"),
        ("S3BLOBS_REDIRECT", "maybe"),
        ("S3BLOBS_PRESIGN_EXPIRY", "-5"),
        ("S3BLOBS_PRESIGN_EXPIRY", "999999999"),
        ("S3BLOBS_STORAGE_CLASS", "CHEAP"),
        ("S3BLOBS_SSE", "rot13"),
        ("S3BLOBS_ADDRESSING_STYLE", "sideways"),
        ("S3BLOBS_CACHE_SIZE", "-1"),
        ("S3BLOBS_CACHE_TTL", "0"),
        ("S3BLOBS_CACHE_TTL", "soon"),
    ],
)
def test_bad_values_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({**BASE, variable: value})
    assert variable in str(info.value)


def test_bucket_is_required() -> None:
    with pytest.raises(ConfigError, match="S3BLOBS_BUCKET"):
        Config.from_env({})


def test_copy_threshold_is_refused_not_ignored() -> None:
    with pytest.raises(ConfigError, match="S3BLOBS_COPY_THRESHOLD"):
        Config.from_env({**BASE, "S3BLOBS_COPY_THRESHOLD": "32MiB"})


def test_kms_key_needs_kms_mode() -> None:
    with pytest.raises(ConfigError, match="S3BLOBS_SSE"):
        Config.from_env({**BASE, "S3BLOBS_SSE_KMS_KEY_ID": "alias/k"})


def test_booleans_and_sizes() -> None:
    for raw, value in (("1", True), ("yes", True), ("OFF", False), ("0", False)):
        assert Config.from_env({**BASE, "S3BLOBS_REDIRECT": raw}).redirect is value
    assert Config.from_env({**BASE, "S3BLOBS_PART_SIZE": "5242880"}).part_size == 5 * MiB
    assert Config.from_env({**BASE, "S3BLOBS_PART_SIZE": "1GiB"}).part_size == 1024 * MiB


def test_upload_buffer_budget() -> None:
    assert Config.from_env(BASE).max_buffer == 512 * MiB
    assert Config.from_env({**BASE, "S3BLOBS_MAX_BUFFER": "64MiB"}).max_buffer == 64 * MiB
    # by default, at least what one writer may hold: a part filling, one held back,
    # and the parts in flight
    big = Config.from_env({**BASE, "S3BLOBS_PART_SIZE": "1GiB", "S3BLOBS_MAX_CONCURRENCY": "2"})
    assert big.max_buffer == 4 * 1024 * MiB
    with pytest.raises(ConfigError, match="S3BLOBS_MAX_BUFFER"):
        Config.from_env({**BASE, "S3BLOBS_MAX_BUFFER": "4MiB"})


def test_credentials_never_appear(
    s3: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSECRETID")
    caplog.set_level(logging.DEBUG)
    config = Config.from_env({"S3BLOBS_BUCKET": "s3blobs-test"})
    storage = S3BlobStorage(config)
    shown = [repr(config), str(config), repr(storage), str(storage)]
    with pytest.raises(ConfigError) as info:
        Config.from_env({"S3BLOBS_BUCKET": "s3blobs-test", "S3BLOBS_SSE": "bad"})
    shown.append(str(info.value))
    for text in shown:
        assert secret not in text and "AKIDSECRETID" not in text
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("s3blobs")]
    assert not any(secret in message for message in ours)


def test_presigned_urls_use_sigv4(storage: S3BlobStorage) -> None:
    url = storage.client.generate_presigned_url(
        "get_object", Params={"Bucket": storage.config.bucket, "Key": "k"}, ExpiresIn=60
    )
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    assert "X-Amz-Credential=" in url and "Signature=" in url
