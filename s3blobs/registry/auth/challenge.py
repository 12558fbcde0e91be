"""Challenges (each writes its own ``WWW-Authenticate`` header) and the spec's
``UNAUTHORIZED`` / ``DENIED`` answers."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Protocol

from ..errors import RegistryError
from .access import Identity, Scope

WWW_AUTHENTICATE = "WWW-Authenticate"
INVALID_TOKEN = "invalid_token"
INSUFFICIENT_SCOPE = "insufficient_scope"


class Challenge(Protocol):
    def write(self, headers: MutableMapping[str, str]) -> None:
        """Set this challenge's ``WWW-Authenticate`` header."""


@dataclass(frozen=True)
class BasicChallenge:
    realm: str

    def write(self, headers: MutableMapping[str, str]) -> None:
        headers[WWW_AUTHENTICATE] = f'Basic realm="{self.realm}"'


@dataclass(frozen=True)
class BearerChallenge:
    """Where to get a token (``realm``), for which ``service``, with which ``scope``;
    ``error`` is ``invalid_token`` or ``insufficient_scope`` where one applies."""

    realm: str
    service: str
    scope: Scope | None = None
    error: str | None = None

    def write(self, headers: MutableMapping[str, str]) -> None:
        params = [f'realm="{self.realm}"', f'service="{self.service}"']
        if self.scope is not None:
            params.append(f'scope="{self.scope}"')
        if self.error:
            params.append(f'error="{self.error}"')
        headers[WWW_AUTHENTICATE] = "Bearer " + ",".join(params)


class Authenticator(Protocol):
    """Says who a request comes from: htpasswd (Basic) or token (Bearer)."""

    def anonymous(self) -> Identity:
        """The identity of a request that sent no credentials."""

    def authenticate(self, authorization: str) -> Identity:
        """The identity an ``Authorization`` header proves; AuthenticationFailed if none."""

    def challenge(self, scope: Scope | None = None, error: str | None = None) -> Challenge:
        """What to answer a request that must authenticate (again) for ``scope``."""


class AuthenticationFailed(Exception):
    """Credentials were sent and do not check out. ``error`` is the challenge's error
    parameter (``invalid_token`` for a bad bearer token), if any."""

    def __init__(self, reason: str, error: str | None = None) -> None:
        super().__init__(reason)
        self.error = error


def unauthorized(challenge: Challenge, scope: Scope | None) -> RegistryError:
    headers: dict[str, str] = {}
    challenge.write(headers)
    detail = scope.records() if scope is not None else None
    return RegistryError("UNAUTHORIZED", 401, "authentication required", detail, headers)


def denied(scope: Scope) -> RegistryError:
    return RegistryError(
        "DENIED", 403, "requested access to the resource is denied", scope.records()
    )
