"""The request id: one per request, shared by every layer of the pipeline.

A client's ``X-Request-Id`` is kept when it is a plain token (so a proxy's id runs
through), anything else is replaced by a fresh one. The id goes back in the
response's ``X-Request-Id`` and in error bodies, and into the log lines written
while serving the request: a client quotes it, the operator finds the log.
"""

from __future__ import annotations

import random
import re
from typing import Any

REQUEST_ID = "s3blobs.request_id"
REQUEST_ID_HEADER = "X-Request-Id"
#: In the environ when a layer outside (RequestLog) adds REQUEST_ID_HEADER to every
#: answer: the layers inside then leave it out (set by werkzeug, a header costs a search
#: of the others; and a second one would repeat it).
REQUEST_ID_ADDED = "s3blobs.request_id_added"
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Not uuid4: it asks the kernel for randomness (a getrandom syscall that releases the
# GIL) on every request. The random module's generator needs no syscall, and it
# reseeds itself in a forked child (random.py registers that with os.register_at_fork),
# so gunicorn's workers never share a sequence. An id only has to be unique, not secret.
_random_bits = random.getrandbits


def request_id(environ: dict[str, Any]) -> str:
    """This request's id; the first layer that asks assigns it."""
    rid: str | None = environ.get(REQUEST_ID)  # only this function puts it there
    if rid is None:
        sent = environ.get("HTTP_X_REQUEST_ID")
        # 32 hex digits; to_bytes().hex() costs half of formatting the number with a width.
        rid = sent if sent and _VALID.fullmatch(sent) else _random_bits(128).to_bytes(16).hex()
        environ[REQUEST_ID] = rid
    return rid
