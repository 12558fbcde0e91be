"""Authentication and authorization as layers of the registry's WSGI pipeline.

``Authentication`` says who a request comes from (an :class:`Identity` in the
environ; a credential that does not check out is remembered, to be answered 401).
``Authorization`` runs after routing: the route table (``routes.py``) says what the
route and method need, the access controller says whether the identity may, and
the request reaches its handler only then. A cross-repository mount also needs
``pull`` on the source repository; without it the mount is dropped from the request,
which then starts an ordinary upload (202) and links nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode

from werkzeug.wrappers import Request

from ...errors import RepositoryNameInvalid
from ...names import validate_repository_name
from ..catalog import MAY_PULL
from ..context import request_id
from ..errors import RegistryError, translate
from ..hardening import WSGIApp, answer
from ..routes import CATALOG, LOGIN, PULL, RouteMatch, match_route
from .access import ANONYMOUS, CATALOG_SCOPE, AccessController, Identity, Scope
from .challenge import (
    INSUFFICIENT_SCOPE,
    AuthenticationFailed,
    Authenticator,
    denied,
    unauthorized,
)

log = logging.getLogger(__name__)

IDENTITY = "s3blobs.identity"
AUTH_FAILURE = "s3blobs.auth_failure"


class Authentication:
    """Puts the request's :class:`Identity` in ``environ["s3blobs.identity"]``."""

    def __init__(self, app: WSGIApp, authenticator: Authenticator | None) -> None:
        self.app, self.authenticator = app, authenticator

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        identity = ANONYMOUS
        if self.authenticator is not None:
            header = environ.get("HTTP_AUTHORIZATION", "").strip()
            try:
                identity = (
                    self.authenticator.authenticate(header)
                    if header
                    else self.authenticator.anonymous()
                )
            except AuthenticationFailed as exc:
                log.info("request %s: authentication failed: %s", request_id(environ), exc)
                environ[AUTH_FAILURE] = exc
                identity = self.authenticator.anonymous()
        environ[IDENTITY] = identity
        return self.app(environ, start_response)


class Authorization:
    """Lets a request through to its handler only if the identity may do what its
    route and method need (an unknown route or method goes on, to its 404 or 405)."""

    def __init__(
        self, app: WSGIApp, access: AccessController, authenticator: Authenticator | None
    ) -> None:
        self.app, self.access, self.authenticator = app, access, authenticator

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        identity: Identity = environ.get(IDENTITY, ANONYMOUS)
        matched = match_route(environ)
        need = matched.need(environ.get("REQUEST_METHOD", "GET")) if matched else None
        try:
            scope = _scope(matched, need)
        except RepositoryNameInvalid as exc:
            error = translate(exc)
            assert error is not None
            return answer(error, environ, start_response)
        failure: AuthenticationFailed | None = environ.get(AUTH_FAILURE)
        if failure is not None and self.authenticator is not None:
            challenge = self.authenticator.challenge(scope, failure.error)
            return answer(unauthorized(challenge, scope), environ, start_response)
        if matched is None or need is None:
            return self.app(environ, start_response)
        if not self.allows(identity, need, scope):
            return answer(self.refusal(identity, scope), environ, start_response)
        environ[MAY_PULL] = lambda name: self.may_list(identity, name)
        if matched.route.name == "uploads":
            self.drop_unauthorized_mount(environ, identity)
        return self.app(environ, start_response)

    def allows(self, identity: Identity, need: str, scope: Scope | None) -> bool:
        if self.authenticator is None and need in (LOGIN, CATALOG):
            return True  # an open registry
        if need == LOGIN:
            return identity.verified
        if need == CATALOG:
            return identity.verified and identity.holds(CATALOG_SCOPE)
        assert scope is not None
        return identity.holds(scope) and self.access.permits(identity, scope)

    def refusal(self, identity: Identity, scope: Scope | None) -> RegistryError:
        """401 with a challenge while the client can still do something about it (sign
        in, or fetch a token with more scope); 403 when it is who it is and may not."""
        if self.authenticator is not None:
            if not identity.verified:
                return unauthorized(self.authenticator.challenge(scope), scope)
            if scope is not None and not identity.holds(scope):
                challenge = self.authenticator.challenge(scope, INSUFFICIENT_SCOPE)
                return unauthorized(challenge, scope)
        return denied(scope or CATALOG_SCOPE)

    def may_list(self, identity: Identity, name: str) -> bool:
        """Whether the catalog shows ``name`` to ``identity``: only what it may pull (a
        token that holds the catalog scope lists what the policy lets it pull)."""
        pull = Scope.repository(name, PULL)
        held = identity.holds(pull) or identity.holds(CATALOG_SCOPE)
        return held and self.access.permits(identity, pull)

    def drop_unauthorized_mount(self, environ: dict[str, Any], identity: Identity) -> None:
        """``POST ?mount=&from=`` mounts only from a repository the caller may pull;
        otherwise the POST goes on without the mount: an ordinary upload."""
        # Parsed as the handler will parse it; not kept in the environ (RegistryApp says why).
        args = Request(environ, populate_request=False).args
        sources = args.getlist("from")
        if not sources:
            return
        # Every source must pass: with ``from`` given twice, which one counts is the
        # handler's business, so no choice of it may reach a repository not pullable.
        if not all(self._may_pull(identity, source) for source in sources):
            kept = [
                (key, value)
                for key, value in args.items(multi=True)
                if key not in ("mount", "from")
            ]
            environ["QUERY_STRING"] = urlencode(kept)

    def _may_pull(self, identity: Identity, name: str) -> bool:
        try:
            scope = Scope.repository(validate_repository_name(name), PULL)
        except RepositoryNameInvalid:
            return False
        return self.allows(identity, PULL, scope)


def _scope(matched: RouteMatch | None, need: str | None) -> Scope | None:
    """The access a request needs, as a token scope (None where no repository is named)."""
    if matched is None or need is None:
        return None
    if need == CATALOG:
        return CATALOG_SCOPE
    name = matched.repository
    if name is None or need == LOGIN:
        return None
    return Scope.repository(validate_repository_name(name), need)
