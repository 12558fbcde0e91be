"""The registry's routes, and what each method on each route needs.

One table answers both questions the pipeline asks of a request: which handler
serves it (``RegistryApp`` dispatches ``<route>_<method>`` only for the methods
listed here) and which access it needs (the authorization layer reads the same
entry). A new route or method with no entry here is neither served nor reachable,
so it cannot be added without saying what it needs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The health check's path: answered before the API's routes, outside /v2/.
HEALTH_PATH = "/healthz"

#: What a request needs. ``pull``, ``push`` and ``delete`` are actions on the
#: repository named in the path; ``login`` is any valid identity (``/v2/``, where
#: clients learn how to authenticate); ``catalog`` is the listing of repositories.
PULL, PUSH, DELETE = "pull", "push", "delete"
LOGIN, CATALOG = "login", "catalog"
REPOSITORY_ACTIONS = (PULL, PUSH, DELETE)

ROUTE = "s3blobs.route"
_NAME = r"(?P<name>.+?)"


@dataclass(frozen=True)
class Route:
    name: str
    pattern: re.Pattern[str]
    needs: Mapping[str, str]  # HTTP method -> PULL, PUSH, DELETE, LOGIN or CATALOG


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    params: dict[str, str]

    @property
    def repository(self) -> str | None:
        return self.params.get("name")

    def need(self, method: str) -> str | None:
        """What ``method`` needs here; None for a method this route does not serve."""
        return self.route.needs.get(method.upper())


def _route(name: str, pattern: str, needs: Mapping[str, str]) -> Route:
    return Route(name, re.compile(pattern), needs)


ROUTES: tuple[Route, ...] = (
    _route("base", r"/v2/?", {"GET": LOGIN, "HEAD": LOGIN}),
    _route("catalog", r"/v2/_catalog", {"GET": CATALOG}),
    _route("uploads", rf"/v2/{_NAME}/blobs/uploads/?", {"POST": PUSH}),
    _route(
        "upload",
        rf"/v2/{_NAME}/blobs/uploads/(?P<upload>[^/]+)",
        {"GET": PULL, "PATCH": PUSH, "PUT": PUSH, "DELETE": DELETE},
    ),
    _route(
        "blob",
        rf"/v2/{_NAME}/blobs/(?P<digest>[^/]+)",
        {"GET": PULL, "HEAD": PULL, "DELETE": DELETE},
    ),
    _route(
        "manifest",
        rf"/v2/{_NAME}/manifests/(?P<reference>[^/]+)",
        {"GET": PULL, "HEAD": PULL, "PUT": PUSH, "DELETE": DELETE},
    ),
    _route("tags", rf"/v2/{_NAME}/tags/list", {"GET": PULL}),
    _route("referrers", rf"/v2/{_NAME}/referrers/(?P<digest>[^/]+)", {"GET": PULL}),
)


def match_route(environ: dict[str, Any]) -> RouteMatch | None:
    """The route of this request (found once, then kept in the environ for later layers)."""
    if ROUTE in environ:
        found: RouteMatch | None = environ[ROUTE]
        return found
    # As werkzeug presents it: WSGI hands the path over as latin-1, the client sent UTF-8.
    raw = environ.get("PATH_INFO", "")
    path = "/" + raw.encode("latin-1", "replace").decode("utf-8", "replace").lstrip("/")
    found = None
    for route in ROUTES:
        match = route.pattern.fullmatch(path)
        if match:
            found = RouteMatch(route, match.groupdict())
            break
    environ[ROUTE] = found
    return found
