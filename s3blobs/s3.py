"""The boto3 client, and the translation of S3's answers into named errors."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.config
import botocore.loaders
import botocore.session
from botocore.exceptions import BotoCoreError, ClientError

from .config import Config
from .errors import StorageError, StorageThrottled

log = logging.getLogger(__name__)

NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchUpload"})
PRECONDITION_FAILED = frozenset({"412", "PreconditionFailed"})
# A conditional write that raced another one on the same key (S3 answers 409).
CONFLICT = frozenset({"409", "ConditionalRequestConflict"})
THROTTLED = frozenset(
    {
        "SlowDown",
        "503",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "TooManyRequests",
    }
)


def make_client(config: Config) -> Any:
    """One S3 client per storage, built eagerly: boto3 clients are thread-safe once made."""
    client_config = botocore.config.Config(
        signature_version="s3v4",  # presigned URLs must be SigV4
        s3={"addressing_style": config.addressing_style},
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=max(10, 4 * config.max_concurrency),
        user_agent_extra="s3blobs",
    )
    session = botocore.session.get_session()
    # A fresh session (credentials are resolved anew for each client), sharing one
    # loader of botocore's JSON models: reading them costs ~0.3 s per client otherwise.
    session.register_component("data_loader", _model_loader())
    return boto3.session.Session(botocore_session=session).client(
        "s3",
        region_name=config.region,
        endpoint_url=config.endpoint_url,
        config=client_config,
    )


@functools.cache
def _model_loader() -> Any:
    return botocore.loaders.create_loader()


def error_code(exc: BaseException) -> str:
    """S3's error code for a ClientError ('' for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in NOT_FOUND


def is_precondition_failed(exc: BaseException) -> bool:
    return error_code(exc) in PRECONDITION_FAILED | CONFLICT


def storage_error(action: str, exc: BaseException) -> StorageError:
    """The named error for an S3 failure that the contract has no other name for."""
    code = error_code(exc)
    if code in THROTTLED:
        return StorageThrottled(f"{action}: S3 is throttling requests ({code})")
    if isinstance(exc, ClientError):
        message = exc.response.get("Error", {}).get("Message", "")
        return StorageError(f"{action}: S3 answered {code}: {message}".rstrip(": "))
    return StorageError(f"{action}: {type(exc).__name__}: {exc}")


@contextmanager
def s3_errors(
    action: str,
    *,
    not_found: Callable[[], Exception] | None = None,
    precondition_failed: Callable[[], Exception] | None = None,
) -> Iterator[None]:
    """Turn what botocore raises (after its retries) into named errors.

    A 404 becomes ``not_found()`` and a failed condition (412, or 409 for a race)
    ``precondition_failed()`` where the caller names them; anything else that S3 or
    the network did becomes StorageError.
    """
    try:
        yield
    except ClientError as exc:
        if not_found is not None and is_not_found(exc):
            raise not_found() from None
        if precondition_failed is not None and is_precondition_failed(exc):
            raise precondition_failed() from None
        raise storage_error(action, exc) from exc
    except BotoCoreError as exc:
        raise storage_error(action, exc) from exc


def list_objects(
    client: Any, bucket: str, prefix: str, action: str, start_after: str = ""
) -> Iterator[dict[str, Any]]:
    """The objects under ``prefix`` in key order, fetched a page (1,000) at a time as
    the caller goes on: one that stops early makes no further request."""
    args = {
        "Bucket": bucket,
        "Prefix": prefix,
        **({"StartAfter": start_after} if start_after else {}),
    }
    with s3_errors(action):
        for page in client.get_paginator("list_objects_v2").paginate(**args):
            yield from page.get("Contents", ())


def delete_keys(client: Any, bucket: str, keys: list[str], action: str) -> None:
    """Delete objects, 1,000 per DeleteObjects request. Keys S3 could not delete are
    logged: what is left behind is garbage that lifecycle rules or gc remove."""
    for start in range(0, len(keys), 1000):
        batch = [{"Key": key} for key in keys[start : start + 1000]]
        with s3_errors(action):
            response = client.delete_objects(
                Bucket=bucket, Delete={"Objects": batch, "Quiet": True}
            )
        for error in response.get("Errors", ()):
            log.warning("%s: could not delete %s: %s", action, error.get("Key"), error.get("Code"))


def encryption_args(config: Config) -> dict[str, str]:
    """The storage class and server-side encryption arguments of every object write."""
    args: dict[str, str] = {}
    if config.storage_class:
        args["StorageClass"] = config.storage_class
    if config.sse:
        args["ServerSideEncryption"] = config.sse
    if config.sse_kms_key_id:
        args["SSEKMSKeyId"] = config.sse_kms_key_id
    return args
