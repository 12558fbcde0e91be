"""ServeBlob: a blob as a WSGI response.

GET answers 307 with a presigned S3 URL, so the bytes never pass through the
registry; HEAD answers 200 from the descriptor alone (a redirected HEAD costs the
client a round trip for nothing). With redirects off the bytes are streamed from S3,
honouring Range (206, 416) and If-None-Match (304); werkzeug parses both headers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from werkzeug.datastructures import Headers
from werkzeug.http import parse_etags, parse_range_header
from werkzeug.wrappers import Response

from .config import Config
from .descriptor import Descriptor
from .errors import BlobUnknown
from .s3 import s3_errors
from .store import Location

STREAM_CHUNK = 1024 * 1024


def blob_headers(descriptor: Descriptor) -> Headers:
    return Headers(
        {
            "Docker-Content-Digest": descriptor.digest,
            "ETag": f'"{descriptor.digest}"',
            "Content-Type": descriptor.media_type,
            "Accept-Ranges": "bytes",
            "Cache-Control": "max-age=31536000",  # content-addressed: never changes
        }
    )


def head_response(headers: Headers, size: int, content_type: str | None = None) -> Response:
    """A bodiless answer that still tells the length of the body a GET would get."""
    response = Response(headers=headers, content_type=content_type)
    response.headers["Content-Length"] = str(size)  # after the (empty) body set it to 0
    return response


def serve(
    environ: dict[str, Any],
    descriptor: Descriptor,
    location: Location,
    client: Any,
    config: Config,
) -> Response:
    headers = blob_headers(descriptor)
    method = environ.get("REQUEST_METHOD", "GET").upper()
    if method == "HEAD":
        return head_response(headers, descriptor.size)
    if method != "GET":
        raise ValueError(f"serve_blob answers GET and HEAD, not {method}")
    if config.redirect:
        url = client.generate_presigned_url(
            "get_object",
            Params={"Bucket": config.bucket, "Key": location.key},
            ExpiresIn=config.presign_expiry,
        )
        headers["Location"] = url
        headers["Content-Length"] = "0"
        return Response(b"", status=307, headers=headers)
    return _stream(environ, descriptor, location, client, config, headers)


def _stream(
    environ: dict[str, Any],
    descriptor: Descriptor,
    location: Location,
    client: Any,
    config: Config,
    headers: Headers,
) -> Response:
    if parse_etags(environ.get("HTTP_IF_NONE_MATCH")).contains(descriptor.digest):
        return Response(b"", status=304, headers=headers)
    size = descriptor.size
    start, stop, status = 0, size, 200
    requested = parse_range_header(environ.get("HTTP_RANGE"))
    if environ.get("HTTP_RANGE"):
        bounds = requested.range_for_length(size) if requested else None
        if bounds is None:
            headers["Content-Range"] = f"bytes */{size}"
            return Response(b"", status=416, headers=headers)
        start, stop = bounds
        status = 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    headers["Content-Length"] = str(stop - start)
    if stop == start:
        return Response(b"", status=status, headers=headers)
    # The object is opened before the status line goes out, so that S3 trouble still
    # becomes a JSON 503; once bytes flow, a failure can only cut the body short.
    key = location.key
    with s3_errors(f"reading {key}", not_found=lambda: BlobUnknown(descriptor.digest)):
        response = client.get_object(
            Bucket=config.bucket, Key=key, Range=f"bytes={start}-{stop - 1}"
        )
    body = _chunks(response["Body"], key)
    return Response(body, status=status, headers=headers, direct_passthrough=True)


def _chunks(body: Any, key: str) -> Iterator[bytes]:
    try:
        with s3_errors(f"reading {key}"):
            yield from body.iter_chunks(STREAM_CHUNK)
    finally:
        body.close()
