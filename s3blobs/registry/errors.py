"""The OCI distribution spec's error responses, and which s3blobs error maps to which."""

from __future__ import annotations

import json
from typing import Any

from werkzeug.wrappers import Response

from ..errors import (
    BlobDigestUnsupported,
    BlobInvalidDigest,
    BlobInvalidLength,
    BlobTooLarge,
    BlobUnknown,
    BlobUploadClosed,
    BlobUploadConflict,
    BlobUploadUnknown,
    ReferenceInvalid,
    RepositoryNameInvalid,
    StorageError,
    StorageThrottled,
)

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}


class RegistryError(Exception):
    """An error the registry answers with the spec's JSON body."""

    def __init__(
        self,
        code: str,
        status: int,
        message: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message
        self.detail = detail
        self.headers = headers or {}

    def response(self, method: str = "GET") -> Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        body = b"" if method == "HEAD" else json.dumps({"errors": [error]}).encode()
        return Response(
            body,
            status=self.status,
            headers={**API_VERSION, **self.headers},
            content_type="application/json",
        )


def name_unknown(name: str) -> RegistryError:
    return RegistryError("NAME_UNKNOWN", 404, "repository name not known to registry", name)


def manifest_unknown(reference: str) -> RegistryError:
    return RegistryError("MANIFEST_UNKNOWN", 404, "manifest unknown", reference)


def manifest_invalid(why: str) -> RegistryError:
    return RegistryError("MANIFEST_INVALID", 400, "manifest invalid", why)


def upload_invalid(why: str) -> RegistryError:
    return RegistryError("BLOB_UPLOAD_INVALID", 400, "blob upload invalid", why)


def digest_invalid(why: str) -> RegistryError:
    return RegistryError(
        "DIGEST_INVALID", 400, "provided digest did not match uploaded content", why
    )


def translate(exc: Exception, request_id: str = "") -> RegistryError | None:
    """The spec's answer to an s3blobs error; None for anything unexpected.

    Storage failures say nothing of their cause (S3's message names the endpoint,
    the bucket and keys): the client gets the request id, the log gets the cause."""
    table: list[tuple[type[Exception], str, int, str]] = [
        (BlobUnknown, "BLOB_UNKNOWN", 404, "blob unknown to registry"),
        (BlobUploadUnknown, "BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry"),
        (
            BlobInvalidDigest,
            "DIGEST_INVALID",
            400,
            "provided digest did not match uploaded content",
        ),
        (BlobDigestUnsupported, "DIGEST_INVALID", 400, "digest algorithm not supported"),
        (BlobInvalidLength, "SIZE_INVALID", 400, "provided length did not match content length"),
        (BlobTooLarge, "SIZE_INVALID", 413, "blob too large for the configured part size"),
        (RepositoryNameInvalid, "NAME_INVALID", 400, "invalid repository name"),
        (ReferenceInvalid, "NAME_INVALID", 400, "invalid reference"),
        (BlobUploadConflict, "BLOB_UPLOAD_INVALID", 409, "upload changed by another request"),
        (BlobUploadClosed, "BLOB_UPLOAD_INVALID", 409, "upload is not open"),
    ]
    for kind, code, status, message in table:
        if isinstance(exc, kind):
            return RegistryError(code, status, message, str(exc))
    detail = {"requestId": request_id}
    if isinstance(exc, StorageThrottled):
        return RegistryError(
            "TOOMANYREQUESTS", 429, "too many requests", detail, {"Retry-After": "1"}
        )
    if isinstance(exc, StorageError):
        return RegistryError(
            "UNAVAILABLE", 503, "storage unavailable", detail, {"Retry-After": "5"}
        )
    return None
