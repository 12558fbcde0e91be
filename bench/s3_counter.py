"""A moto S3 server that counts what it is asked: S3 operations and bytes written.

Counting on the server side measures every client alike (s3blobs, the Go registry):

    python -m bench.s3_counter PORT

``GET /__counts`` answers the counts as JSON; ``POST /__counts`` answers them and resets.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, unquote

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

#: A GET by a presigned URL: a client following the registry's redirect, not the registry.
PRESIGNED_GET = "GetObject by a client's presigned URL"
#: A HEAD by a presigned URL: a client following a HEAD's redirect (distribution does).
PRESIGNED_HEAD = "HeadObject by a client's presigned URL"
#: What clients ask S3 directly, not counted as the registry's requests.
PRESIGNED = (PRESIGNED_GET, PRESIGNED_HEAD)

ops: Counter[str] = Counter()
written = Counter[str]()
lock = threading.Lock()


def operation(method: str, path: str, query: dict[str, list[str]], environ: dict[str, Any]) -> str:
    is_bucket = path.strip("/").count("/") == 0
    copy = "HTTP_X_AMZ_COPY_SOURCE" in environ
    table = {
        "HEAD": "HeadBucket" if is_bucket else "HeadObject",
        "DELETE": "AbortMultipartUpload" if "uploadId" in query else "DeleteObject",
    }
    if method == "HEAD" and "X-Amz-Signature" in query:
        return PRESIGNED_HEAD
    if method in table:
        return table[method]
    if method == "GET":
        if is_bucket:
            if "uploads" in query:
                return "ListMultipartUploads"
            return "ListObjectsV2" if "list-type" in query else "ListObjects"
        if "X-Amz-Signature" in query:
            return PRESIGNED_GET
        return "ListParts" if "uploadId" in query else "GetObject"
    if method == "POST":
        if "delete" in query:
            return "DeleteObjects"
        return "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
    if method == "PUT":
        if is_bucket:
            return "PutBucket?" + "&".join(query)
        if "partNumber" in query:
            return "UploadPartCopy" if copy else "UploadPart"
        return "CopyObject" if copy else "PutObject"
    return method


def copied_bytes(environ: dict[str, Any]) -> int:
    ranged = environ.get("HTTP_X_AMZ_COPY_SOURCE_RANGE", "")
    if ranged.startswith("bytes="):
        start, end = ranged[6:].split("-")
        return int(end) - int(start) + 1
    from moto.s3.models import s3_backends

    bucket, _, key = unquote(environ["HTTP_X_AMZ_COPY_SOURCE"]).lstrip("/").partition("/")
    backend = s3_backends["123456789012"]["global"]
    source = backend.get_object(bucket, key.split("?")[0])
    return int(source.size) if source is not None else 0


def app(moto: Any) -> Any:
    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == "/__counts":
            with lock:
                body = json.dumps({"ops": ops, "written": written}).encode()
                if environ["REQUEST_METHOD"] == "POST":
                    ops.clear()
                    written.clear()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        op = operation(environ["REQUEST_METHOD"], path, query, environ)
        size = int(
            environ.get("HTTP_X_AMZ_DECODED_CONTENT_LENGTH") or environ.get("CONTENT_LENGTH") or 0
        )
        with lock:
            ops[op] += 1
            if op in ("PutObject", "UploadPart"):
                written["uploaded"] += size
        if op in ("CopyObject", "UploadPartCopy"):
            copied = copied_bytes(environ)
            with lock:
                written["copied"] += copied
        return moto(environ, start_response)

    return counting


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = int(sys.argv[1])
    moto = DomainDispatcherApplication(create_backend_app)
    make_server("127.0.0.1", port, app(moto), threaded=True).serve_forever()


if __name__ == "__main__":
    main()
