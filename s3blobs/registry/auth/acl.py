"""Per-repository access rules from a TOML file (``S3BLOBS_ACL``).

::

    [groups]
    admins = ["alice"]

    [[rule]]
    repositories = ["**"]               # every repository
    users = ["@admins"]
    actions = ["pull", "push", "delete"]

    [[rule]]
    repositories = ["public/**", "team-*/app"]
    users = ["*", "anonymous"]          # any signed-in user, and requests without one
    actions = ["pull"]

A glob's ``*`` matches within one path component, ``**`` across components
(``library/**`` matches ``library/a`` and ``library/a/b``, not ``library``). ``users``
holds names, ``@group``, ``*`` (any authenticated user) and ``anonymous`` (anyone:
what a request without credentials may do, a signed-in user may do as well).
Access is granted when, for each action asked, some rule that matches the
repository and the user grants it. The file is checked when loaded: an unknown
key, action, group or a malformed glob is an error naming the rule.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from ...errors import ConfigError
from ..routes import REPOSITORY_ACTIONS
from .access import REPOSITORY, Identity, Scope

VARIABLE = "S3BLOBS_ACL"
ANY_USER, ANONYMOUS = "*", "anonymous"
RULE_KEYS = frozenset({"repositories", "users", "actions"})
_GLOB = re.compile(r"[a-z0-9._/*-]+")
_GROUP = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Rule:
    patterns: tuple[re.Pattern[str], ...]
    users: frozenset[str]  # names, ANY_USER, ANONYMOUS (groups already expanded)
    actions: frozenset[str]

    def matches(self, identity: Identity, repository: str) -> bool:
        if not any(pattern.fullmatch(repository) for pattern in self.patterns):
            return False
        if ANONYMOUS in self.users:
            return True
        if identity.anonymous or not identity.verified:
            return False
        return ANY_USER in self.users or identity.name in self.users


class AclPolicy:
    """An :class:`~.access.AccessController` from rules; see the module's docstring."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AclPolicy:
        where = f"{VARIABLE}={path}"
        try:
            document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: cannot read it: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from None
        return cls.from_dict(document, where)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], where: str = VARIABLE) -> AclPolicy:
        unknown = set(document) - {"groups", "rule"}
        if unknown:
            raise ConfigError(
                f"{where}: unknown top-level key(s) {sorted(unknown)}; expected [groups] "
                "and [[rule]] tables"
            )
        groups = _groups(document.get("groups", {}), where)
        rules = document.get("rule", [])
        if not isinstance(rules, list):
            raise ConfigError(f"{where}: 'rule' must be [[rule]] tables")
        return cls([_rule(number, raw, groups, where) for number, raw in enumerate(rules, 1)])

    def permits(self, identity: Identity, scope: Scope) -> bool:
        if scope.type != REPOSITORY or not scope.actions:
            return False
        matching = [rule for rule in self.rules if rule.matches(identity, scope.name)]
        return all(any(action in rule.actions for rule in matching) for action in scope.actions)


def _groups(raw: Any, where: str) -> dict[str, frozenset[str]]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: [groups] must be a table of name = [members]")
    groups = {}
    for name, members in raw.items():
        if not _GROUP.fullmatch(name):
            raise ConfigError(f"{where}: group name {name!r}: letters, digits, '.', '_', '-'")
        if not isinstance(members, list) or not all(isinstance(m, str) and m for m in members):
            raise ConfigError(f"{where}: group {name!r} must be a list of user names")
        groups[name] = frozenset(members)
    return groups


def _rule(number: int, raw: Any, groups: dict[str, frozenset[str]], where: str) -> Rule:
    here = f"{where}: rule {number}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{here}: must be a table")
    unknown = set(raw) - RULE_KEYS
    missing = RULE_KEYS - set(raw)
    if unknown:
        raise ConfigError(f"{here}: unknown key(s) {sorted(unknown)}; expected {sorted(RULE_KEYS)}")
    if missing:
        raise ConfigError(f"{here}: missing {sorted(missing)}")
    for key in RULE_KEYS:
        value = raw[key]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{here}: {key} must be a non-empty list of strings")
    bad_actions = set(raw["actions"]) - set(REPOSITORY_ACTIONS)
    if bad_actions:
        raise ConfigError(
            f"{here}: unknown action(s) {sorted(bad_actions)}; expected "
            + ", ".join(REPOSITORY_ACTIONS)
        )
    users: set[str] = set()
    for user in raw["users"]:
        if user.startswith("@"):
            if user[1:] not in groups:
                raise ConfigError(f"{here}: group {user[1:]!r} is not in [groups]")
            users |= groups[user[1:]]
        elif not user.strip() or user != user.strip() or ":" in user:
            raise ConfigError(f"{here}: user {user!r} is not a user name")
        else:
            users.add(user)
    return Rule(
        tuple(_compile(glob, here) for glob in raw["repositories"]),
        frozenset(users),
        frozenset(raw["actions"]),
    )


def _compile(glob: str, here: str) -> re.Pattern[str]:
    """``**`` matches across path components, ``*`` within one; nothing else is special."""
    if not _GLOB.fullmatch(glob) or "***" in glob:
        raise ConfigError(
            f"{here}: repository glob {glob!r}: lower-case names with '*' and '**' only"
        )
    pieces = []
    for i, across in enumerate(glob.split("**")):
        if i:
            pieces.append(".*")
        pieces.append("[^/]*".join(re.escape(within) for within in across.split("*")))
    return re.compile("".join(pieces))
