"""The TOML access policy: globs, groups, ``*`` and ``anonymous``, and load-time checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from s3blobs.errors import ConfigError
from s3blobs.registry.auth.access import ANONYMOUS, CATALOG_SCOPE, Identity, Scope
from s3blobs.registry.auth.acl import AclPolicy

POLICY = """
[groups]
admins = ["alice"]
ci = ["builder", "robot"]

[[rule]]
repositories = ["**"]
users = ["@admins"]
actions = ["pull", "push", "delete"]

[[rule]]
repositories = ["team-*/app", "ci/**"]
users = ["@ci"]
actions = ["pull", "push"]

[[rule]]
repositories = ["internal/*"]
users = ["*"]
actions = ["pull"]

[[rule]]
repositories = ["public/**"]
users = ["anonymous"]
actions = ["pull"]

[[rule]]
repositories = ["ci/**"]
users = ["dave"]
actions = ["delete"]
"""


def user(name: str) -> Identity:
    return Identity(name=name, verified=True)


@pytest.fixture
def policy(tmp_path: Path) -> AclPolicy:
    path = tmp_path / "acl.toml"
    path.write_text(POLICY)
    return AclPolicy.load(path)


@pytest.mark.parametrize(
    ("who", "repository", "actions", "allowed"),
    [
        (user("alice"), "any/thing/at/all", ("pull", "push", "delete"), True),
        (user("robot"), "team-a/app", ("pull", "push"), True),
        (user("robot"), "team-a/app", ("delete",), False),
        (user("robot"), "team-a/b/app", ("pull",), False),  # * stays inside one component
        (user("robot"), "team/app", ("pull",), False),
        (user("robot"), "ci/x/y/z", ("push",), True),  # ** crosses components
        (user("robot"), "ci", ("pull",), False),  # ci/** is below ci, not ci itself
        (user("carol"), "internal/tools", ("pull",), True),  # * is any signed-in user
        (user("carol"), "internal/tools/deep", ("pull",), False),
        (user("carol"), "internal/tools", ("push",), False),
        (ANONYMOUS, "internal/tools", ("pull",), False),
        (ANONYMOUS, "public/a/b", ("pull",), True),
        (ANONYMOUS, "public/a/b", ("push",), False),
        (user("carol"), "public/a", ("pull",), True),  # what anonymous may, a user may
        (Identity(name="carol"), "internal/tools", ("pull",), False),  # not verified
        (user("dave"), "ci/x", ("delete",), True),
        (user("dave"), "ci/x", ("pull",), False),
        # Each action may come from a different rule.
        (user("robot"), "ci/x", ("pull", "push"), True),
        (user("nobody"), "elsewhere", ("pull",), False),
    ],
)
def test_decisions(
    policy: AclPolicy, who: Identity, repository: str, actions: tuple[str, ...], allowed: bool
) -> None:
    assert policy.permits(who, Scope.repository(repository, *actions)) is allowed


def test_only_repository_scopes(policy: AclPolicy) -> None:
    assert not policy.permits(user("alice"), CATALOG_SCOPE)
    assert not policy.permits(user("alice"), Scope.repository("a"))  # no action asked


def test_no_rules_deny_everything() -> None:
    assert not AclPolicy.from_dict({}).permits(user("alice"), Scope.repository("a", "pull"))


def rule(repositories: str = '["a"]', users: str = '["x"]', actions: str = '["pull"]') -> str:
    return f"[[rule]]\nrepositories = {repositories}\nusers = {users}\nactions = {actions}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (rule() + "action = 1\n", "rule 1: unknown key"),
        (rule() + rule(actions='["read"]'), "rule 2: unknown action"),
        (rule(users='["@ghosts"]'), "rule 1: group 'ghosts'"),
        (rule(repositories='["A/**"]'), "rule 1: repository glob"),
        (rule(repositories='["a/***"]'), "rule 1: repository glob"),
        (rule(repositories="[]"), "rule 1: repositories must be"),
        ('[[rule]]\nrepositories = ["a"]\nactions = ["pull"]\n', "rule 1: missing ['users']"),
        (rule(users='[" x"]'), "rule 1: user"),
        ("[rules]\nx = 1\n", "unknown top-level key"),
        ('[groups]\nadmins = "alice"\n', "group 'admins'"),
        ("[[rule]\n", "not valid TOML"),
    ],
)
def test_mistakes_are_refused_naming_the_rule(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "acl.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        AclPolicy.load(path)
    assert "S3BLOBS_ACL=" in str(error.value) and expected in str(error.value)


def test_the_readme_example_loads_and_means_what_it_says() -> None:
    import re

    import tomllib

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Securing the registry", 1)[1]
    match = re.search(r"```toml\n(.*?)```", section, re.S)
    assert match, "the README lost its ACL example"
    policy = AclPolicy.from_dict(tomllib.loads(match.group(1)))
    assert policy.permits(user("alice"), Scope.repository("any/where", "delete"))
    assert policy.permits(user("builder"), Scope.repository("team-a/app", "pull", "push"))
    assert not policy.permits(user("builder"), Scope.repository("team-a/app", "delete"))
    assert policy.permits(ANONYMOUS, Scope.repository("public/base/image", "pull"))
    assert not policy.permits(ANONYMOUS, Scope.repository("team-a/app", "pull"))
