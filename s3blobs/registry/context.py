"""The request id: one per request, shared by every layer of the pipeline.

A client's ``X-Request-Id`` is kept when it is a plain token (so a proxy's id runs
through), anything else is replaced by a fresh one. The id goes back in the
response's ``X-Request-Id`` and in error bodies, and into the log lines written
while serving the request: a client quotes it, the operator finds the log.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

REQUEST_ID = "s3blobs.request_id"
REQUEST_ID_HEADER = "X-Request-Id"
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(environ: dict[str, Any]) -> str:
    """This request's id; the first layer that asks assigns it."""
    rid = environ.get(REQUEST_ID)
    if rid is None:
        sent = environ.get("HTTP_X_REQUEST_ID", "")
        rid = sent if _VALID.fullmatch(sent) else uuid.uuid4().hex
        environ[REQUEST_ID] = rid
    return str(rid)
