"""``GET /v2/_catalog``: the repositories, in lexical order, by pages.

S3 has no directories, but a listing with ``Delimiter="/"`` walks the key tree one
level per request: a repository is a path whose children include ``_layers`` or
``_manifests`` (a name component never starts with ``_``, so those cannot be
repositories themselves). The walk costs one ListObjectsV2 per path component in
the registry, so each page lists the whole tree and then takes its slice.

Only repositories the caller may pull are listed: the authorization layer leaves a
predicate in the environ (``MAY_PULL``); without one (no authorization layer: an
open registry) every repository is listed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from werkzeug.wrappers import Request, Response

from ..names import validate_repository_name
from ..s3 import s3_errors
from ..storage import S3BlobStorage
from .pagination import next_link, page_size, page_start

MAY_PULL = "s3blobs.may_pull"
_REPOSITORY_MARKERS = frozenset({"_layers", "_manifests"})


def repositories(storage: S3BlobStorage) -> list[str]:
    """Every repository name in the bucket, sorted."""
    root = storage.paths.repositories_root
    found, pending = set(), [""]
    while pending:
        below = pending.pop()
        for child in _children(storage, root + below):
            component = child[len(root) + len(below) : -1]
            if component.startswith("_"):
                if component in _REPOSITORY_MARKERS and below:
                    found.add(below[:-1])
            else:
                pending.append(below + component + "/")
    return sorted(found)


def _children(storage: S3BlobStorage, prefix: str) -> Iterator[str]:
    paginator = storage.client.get_paginator("list_objects_v2")
    pages = paginator.paginate(Bucket=storage.config.bucket, Prefix=prefix, Delimiter="/")
    with s3_errors("listing repositories"):
        for page in pages:
            for common in page.get("CommonPrefixes", ()):
                yield common["Prefix"]


def _valid_name(name: str) -> bool:
    try:
        validate_repository_name(name)
    except ValueError:
        return False
    return True


def catalog(storage: S3BlobStorage, request: Request) -> Response:
    """The catalog's answer: ``{"repositories": [...]}`` with ``n``/``last`` and Link."""
    n = page_size(request.args)
    last = page_start(request.args, _valid_name, "NAME_INVALID", "repository name")
    may_pull: Callable[[str], bool] = request.environ.get(MAY_PULL) or (lambda name: True)
    listed = (
        name for name in repositories(storage) if (not last or name > last) and may_pull(name)
    )
    names = list(islice(listed, None if n is None else n + 1))
    headers: dict[str, Any] = {}
    if n is not None and len(names) > n:
        names = names[:n]
        if names:
            headers["Link"] = next_link("/v2/_catalog", n, names[-1])
    body = json.dumps({"repositories": names}).encode()
    return Response(body, headers=headers, content_type="application/json")
