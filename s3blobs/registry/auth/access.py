"""The one interface of authorization: may this identity do these actions on this resource?

Authentication (``htpasswd``, ``token``) says *who* a request comes from, as an
:class:`Identity`; an :class:`AccessController` (``acl``, or the defaults below)
answers for a :class:`Scope`. A bearer token also carries the access its issuer
granted: the identity's ``grants``, which must cover a scope as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

REPOSITORY = "repository"
REGISTRY = "registry"


@dataclass(frozen=True)
class Scope:
    """Actions on one resource, as the token spec writes it: ``repository:<name>:pull,push``."""

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def repository(cls, name: str, *actions: str) -> Scope:
        return cls(REPOSITORY, name, actions)

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    def records(self) -> list[dict[str, str]]:
        """The access records an ``UNAUTHORIZED`` error body lists (as the Go registry)."""
        return [{"Type": self.type, "Name": self.name, "Action": a} for a in self.actions]


#: What a token needs to list repositories (``GET /v2/_catalog``).
CATALOG_SCOPE = Scope(REGISTRY, "catalog", ("*",))


@dataclass(frozen=True)
class Identity:
    """Who a request comes from.

    ``name`` is None for anonymous requests. ``verified`` is true once a credential
    checked out (a password, or a token: a token for an anonymous subject is verified
    and still nameless). ``grants`` is what a token's ``access`` claim allows, as
    ``(type, name, action)``; None when the credential limits nothing by itself.
    """

    name: str | None = None
    verified: bool = False
    grants: frozenset[tuple[str, str, str]] | None = None

    @property
    def anonymous(self) -> bool:
        return self.name is None

    def holds(self, scope: Scope) -> bool:
        """Whether the credential itself allows ``scope`` (``*`` grants every action)."""
        if self.grants is None:
            return True
        return all(
            (scope.type, scope.name, action) in self.grants
            or (scope.type, scope.name, "*") in self.grants
            for action in scope.actions
        )


ANONYMOUS = Identity()


class AccessController(Protocol):
    """The policy: whether ``identity`` may do every action of ``scope``."""

    def permits(self, identity: Identity, scope: Scope) -> bool: ...


class AllowAll:
    """No policy: every request may do everything (``S3BLOBS_AUTH=none`` without an ACL,
    and token auth without an ACL, where the token's own grants decide)."""

    def permits(self, identity: Identity, scope: Scope) -> bool:
        return True


class AuthenticatedUsers:
    """The default with passwords and no ACL: a signed-in user may do everything, an
    anonymous request nothing."""

    def permits(self, identity: Identity, scope: Scope) -> bool:
        return identity.verified and not identity.anonymous
