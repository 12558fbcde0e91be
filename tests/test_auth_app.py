"""Authentication and authorization through the registry's pipeline (``make_app``): every
route's action, exact challenges and bodies, mounts, the catalog, security headers."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client, TestResponse

from authutil import (
    ISSUER,
    SERVICE,
    basic,
    grant,
    isolated_storage,
    issue_token,
    keys_of,
    mocked_bucket,
    public_pem,
    signing_key,
    write_htpasswd,
)
from s3blobs import S3BlobStorage
from s3blobs.registry import RegistryApp, make_app
from s3blobs.registry.auth.access import AuthenticatedUsers
from s3blobs.registry.auth.acl import AclPolicy
from s3blobs.registry.auth.htpasswd import BasicAuthenticator, HtpasswdFile
from s3blobs.registry.auth.settings import SecuritySettings
from s3blobs.registry.auth.token import BearerAuthenticator, TokenVerifier, load_keys
from s3blobs.registry.routes import LOGIN, ROUTES

REALM = "https://auth.test/token"
USERS = {name: f"{name}-password" for name in ("admin", "puller", "pusher", "deleter", "mover")}
ACL = """
[[rule]]
repositories = ["**"]
users = ["admin"]
actions = ["pull", "push", "delete"]

[[rule]]
repositories = ["acl/**"]
users = ["puller"]
actions = ["pull"]

[[rule]]
repositories = ["acl/**"]
users = ["pusher"]
actions = ["push"]

[[rule]]
repositories = ["acl/**"]
users = ["deleter"]
actions = ["delete"]

[[rule]]
repositories = ["mine/**"]
users = ["mover"]
actions = ["pull", "push"]

[[rule]]
repositories = ["public/**"]
users = ["anonymous"]
actions = ["pull"]
"""
DIGEST = "sha256:" + hashlib.sha256(b"some blob").hexdigest()
# A request for each route; a new route fails test_every_route_is_checked until added here.
SAMPLES = {
    "base": "/v2/",
    "catalog": "/v2/_catalog",
    "uploads": "/v2/acl/app/blobs/uploads/",
    "upload": "/v2/acl/app/blobs/uploads/abc",
    "blob": f"/v2/acl/app/blobs/{DIGEST}",
    "manifest": "/v2/acl/app/manifests/v1",
    "tags": "/v2/acl/app/tags/list",
    "referrers": f"/v2/acl/app/referrers/{DIGEST}",
}
ACTION_USERS = {"pull": "puller", "push": "pusher", "delete": "deleter"}


@pytest.fixture(scope="module")
def shared_s3() -> Iterator[Any]:
    with mocked_bucket() as client:
        yield client


@pytest.fixture
def storage(shared_s3: Any) -> S3BlobStorage:
    return isolated_storage(shared_s3)


@pytest.fixture
def htpasswd_settings(tmp_path: Path) -> SecuritySettings:
    passwords = HtpasswdFile(write_htpasswd(tmp_path / "htpasswd", USERS))
    acl = tmp_path / "acl.toml"
    acl.write_text(ACL)
    return SecuritySettings("htpasswd", BasicAuthenticator(passwords), AclPolicy.load(acl))


@pytest.fixture
def client(storage: S3BlobStorage, htpasswd_settings: SecuritySettings) -> Client:
    return Client(make_app(storage, htpasswd_settings))


@pytest.fixture(scope="module")
def token_key() -> Any:
    return signing_key()


@pytest.fixture
def token_client(storage: S3BlobStorage, token_key: Any, tmp_path: Path) -> Client:
    keys = tmp_path / "keys.pem"
    keys.write_bytes(public_pem(token_key))
    verifier = TokenVerifier(load_keys(keys, ("ES256",)), ISSUER, SERVICE, ("ES256",))
    authenticator = BearerAuthenticator(verifier, REALM, SERVICE)
    from s3blobs.registry.auth.access import AllowAll

    return Client(make_app(storage, SecuritySettings("token", authenticator, AllowAll())))


def as_user(name: str) -> dict[str, str]:
    return {"Authorization": basic(name, USERS[name])}


def bearer(key: Any, *access: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(key, list(access))}"}


def errors(response: TestResponse) -> list[dict[str, Any]]:
    assert response.headers["Content-Type"] == "application/json"
    return list(json.loads(response.data)["errors"])


def send(client: Client, method: str, path: str, headers: dict[str, str]) -> TestResponse:
    """The answer, which carries one request id, whoever made it (the handler, a layer
    that refused the request, or the request log outside them all)."""
    response = client.open(path, method=method, headers=headers, data=b"")
    assert len(response.headers.getlist("X-Request-Id")) == 1, (method, path, response.headers)
    return response


def test_answers_made_by_each_layer_carry_one_request_id(client: Client) -> None:
    malformed = client.put("/v2/acl/app/manifests/v1", environ_overrides={"CONTENT_LENGTH": "x"})
    assert malformed.status_code == 400  # refused by hardening, outside authentication
    assert len(malformed.headers.getlist("X-Request-Id")) == 1
    cases = [
        ("GET", "/healthz", {}, None),  # the health layer
        ("GET", "/v2/acl/app/tags/list", {}, 401),  # authentication's challenge
        ("GET", "/v2/acl/app/tags/list", as_user("pusher"), 403),  # authorization
        ("GET", "/v2/acl/app/tags/list", as_user("puller"), 404),  # the registry app
        ("GET", "/v2/nothing/here", as_user("admin"), 404),  # no route
    ]
    for method, path, headers, status in cases:
        response = send(client, method, path, headers)
        assert status is None or response.status_code == status, (path, response.data)


def test_every_handler_is_in_the_route_table() -> None:
    handlers = {
        name
        for name in dir(RegistryApp)
        if re.fullmatch(r"[a-z]+_(get|head|post|put|patch|delete)", name)
    }
    table = {f"{route.name}_{method.lower()}" for route in ROUTES for method in route.needs}
    assert handlers == table


def test_every_route_is_checked() -> None:
    assert set(SAMPLES) == {route.name for route in ROUTES}


def test_each_route_and_method_needs_its_action(client: Client) -> None:
    """One user per action (ACL on acl/**): only the one holding the action gets through;
    anonymous requests are challenged."""
    checked = 0
    for route in ROUTES:
        for method, need in route.needs.items():
            if need not in ACTION_USERS:
                continue
            checked += 1
            path, where = SAMPLES[route.name], (route.name, method, need)
            allowed = send(client, method, path, as_user(ACTION_USERS[need]))
            assert allowed.status_code not in (401, 403), (*where, allowed.data)
            for action, user in ACTION_USERS.items():
                if action == need:
                    continue
                refused = send(client, method, path, as_user(user))
                assert refused.status_code == 403, (*where, user)
                if method != "HEAD":
                    [error] = errors(refused)
                    assert error["code"] == "DENIED", where
                    assert error["detail"] == [
                        {"Type": "repository", "Name": "acl/app", "Action": need}
                    ]
            anonymous = send(client, method, path, {})
            assert anonymous.status_code == 401, where
            assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="s3blobs"'
            assert anonymous.headers["Docker-Distribution-API-Version"] == "registry/2.0"
            assert anonymous.headers["X-Request-Id"]
            if method != "HEAD":
                assert errors(anonymous)[0]["code"] == "UNAUTHORIZED"
    assert checked == 14  # every route and method that names a repository


def test_login_route(client: Client) -> None:
    assert next(r for r in ROUTES if r.name == "base").needs["GET"] == LOGIN
    response = client.get("/v2/")
    assert response.status_code == 401 and errors(response)[0]["code"] == "UNAUTHORIZED"
    assert response.headers["WWW-Authenticate"] == 'Basic realm="s3blobs"'
    wrong = client.get("/v2/", headers={"Authorization": basic("admin", "nope")})
    assert wrong.status_code == 401
    # Any valid identity may knock, whatever it may do.
    assert client.get("/v2/", headers=as_user("deleter")).status_code == 200


def test_bad_credentials_are_401_even_where_anonymous_may_pull(
    client: Client, storage: S3BlobStorage
) -> None:
    storage.repository("public/app").put("application/octet-stream", b"some blob")
    path = f"/v2/public/app/blobs/{DIGEST}"
    assert client.head(path).status_code == 200  # anonymous pull, by the ACL
    assert client.head(path, headers={"Authorization": basic("admin", "x")}).status_code == 401
    assert client.head(path, headers={"Authorization": "Basic %%%"}).status_code == 401


def test_no_presigned_url_before_authorization(client: Client, storage: S3BlobStorage) -> None:
    storage.repository("acl/app").put("application/octet-stream", b"some blob")
    path = f"/v2/acl/app/blobs/{DIGEST}"
    for headers in ({}, as_user("pusher")):
        response = client.get(path, headers=headers)
        assert response.status_code in (401, 403) and "Location" not in response.headers
        assert b"X-Amz" not in response.data and b"http" not in response.data
    assert client.get(path, headers=as_user("puller")).status_code == 307


def test_mount_needs_pull_on_the_source(client: Client, storage: S3BlobStorage) -> None:
    storage.repository("secret/app").put("application/octet-stream", b"some blob")
    query = {"mount": DIGEST, "from": "secret/app"}
    response = client.post(
        "/v2/mine/app/blobs/uploads/", query_string=query, headers=as_user("mover")
    )
    assert response.status_code == 202  # an ordinary upload instead
    assert not [k for k in keys_of(storage) if "/repositories/mine/app/_layers/" in k]
    assert client.head(f"/v2/mine/app/blobs/{DIGEST}", headers=as_user("mover")).status_code == 404
    # Naming the source twice does not help: every one named must be pullable.
    for twice in ("from=secret/app&from=mine/app", "from=mine/app&from=secret/app"):
        response = client.post(
            f"/v2/mine/app/blobs/uploads/?mount={DIGEST}&{twice}", headers=as_user("mover")
        )
        assert response.status_code == 202
    assert client.head(f"/v2/mine/app/blobs/{DIGEST}", headers=as_user("mover")).status_code == 404
    # A caller that may pull the source mounts.
    mounted = client.post(
        "/v2/mine/app/blobs/uploads/", query_string=query, headers=as_user("admin")
    )
    assert mounted.status_code == 201
    assert client.head(f"/v2/mine/app/blobs/{DIGEST}", headers=as_user("mover")).status_code == 200


def test_bearer_challenges_are_exact(token_client: Client, token_key: Any) -> None:
    base = f'Bearer realm="{REALM}",service="{SERVICE}"'
    response = token_client.get("/v2/")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == base
    blob = f"/v2/team/app/blobs/{DIGEST}"
    response = token_client.get(blob)
    assert response.headers["WWW-Authenticate"] == f'{base},scope="repository:team/app:pull"'
    assert errors(response)[0] == {
        "code": "UNAUTHORIZED",
        "message": "authentication required",
        "detail": [{"Type": "repository", "Name": "team/app", "Action": "pull"}],
    }
    response = token_client.get(blob, headers={"Authorization": "Bearer not.a.token"})
    assert response.headers["WWW-Authenticate"] == (
        f'{base},scope="repository:team/app:pull",error="invalid_token"'
    )
    pull_only = bearer(token_key, grant("team/app", "pull"))
    assert token_client.get("/v2/", headers=pull_only).status_code == 200
    assert token_client.head(blob, headers=pull_only).status_code == 404  # allowed; not there
    response = token_client.post("/v2/team/app/blobs/uploads/", headers=pull_only)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f'{base},scope="repository:team/app:push",error="insufficient_scope"'
    )
    response = token_client.delete(blob, headers=pull_only)
    assert (
        'scope="repository:team/app:delete",error="insufficient_scope"'
        in response.headers["WWW-Authenticate"]
    )
    other = token_client.head(f"/v2/team/other/blobs/{DIGEST}", headers=pull_only)
    assert other.status_code == 401


def test_token_and_acl_both_must_allow(
    storage: S3BlobStorage, token_key: Any, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.pem"
    keys.write_bytes(public_pem(token_key))
    verifier = TokenVerifier(load_keys(keys, ("ES256",)), ISSUER, SERVICE, ("ES256",))
    acl = AclPolicy.from_dict(
        {"rule": [{"repositories": ["team/**"], "users": ["bob"], "actions": ["pull"]}]}
    )
    app = make_app(
        storage, SecuritySettings("token", BearerAuthenticator(verifier, REALM, SERVICE), acl)
    )
    client = Client(app)
    blob = f"/v2/team/app/blobs/{DIGEST}"
    token = issue_token(token_key, [grant("team/app", "pull")], subject="alice")
    response = client.head(blob, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403  # the token allows it, the ACL does not (alice)
    token = issue_token(token_key, [grant("team/app", "pull")], subject="bob")
    assert client.head(blob, headers={"Authorization": f"Bearer {token}"}).status_code == 404


def repositories(client: Client, headers: dict[str, str], **query: Any) -> TestResponse:
    return client.get("/v2/_catalog", headers=headers, query_string=query)


def test_catalog_lists_only_what_the_caller_may_pull(
    client: Client, storage: S3BlobStorage
) -> None:
    for name in ("acl/a", "acl/b/c", "mine/x", "public/p", "secret/s", "acl"):
        storage.repository(name).put("application/octet-stream", b"some blob")
    assert repositories(client, {}).status_code == 401
    everything = json.loads(repositories(client, as_user("admin")).data)["repositories"]
    assert everything == ["acl", "acl/a", "acl/b/c", "mine/x", "public/p", "secret/s"]
    # puller: acl/** and, as anyone may, public/**
    listed = json.loads(repositories(client, as_user("puller")).data)["repositories"]
    assert listed == ["acl/a", "acl/b/c", "public/p"]
    assert json.loads(repositories(client, as_user("pusher")).data)["repositories"] == ["public/p"]
    page = repositories(client, as_user("puller"), n=2)
    assert json.loads(page.data)["repositories"] == ["acl/a", "acl/b/c"]
    assert page.headers["Link"] == '</v2/_catalog?n=2&last=acl%2Fb%2Fc>; rel="next"'
    rest = repositories(client, as_user("puller"), n=2, last="acl/b/c")
    assert json.loads(rest.data)["repositories"] == ["public/p"] and "Link" not in rest.headers


def test_catalog_of_an_open_registry(storage: S3BlobStorage) -> None:
    client = Client(RegistryApp(storage))
    assert json.loads(client.get("/v2/_catalog").data) == {"repositories": []}
    storage.repository("z/y").put("application/octet-stream", b"x")
    storage.repository("a").put("application/octet-stream", b"x")
    assert json.loads(client.get("/v2/_catalog").data) == {"repositories": ["a", "z/y"]}


@pytest.mark.parametrize(
    ("query", "status"),
    [({"n": "-1"}, 400), ({"last": "\x00"}, 400), ({"n": "x"}, 400), ({"n": 10**30}, 200)],
)
def test_catalog_pagination_input(
    storage: S3BlobStorage, query: dict[str, Any], status: int
) -> None:
    response = Client(make_app(storage)).get("/v2/_catalog", query_string=query)
    assert response.status_code == status
    if status == 400:
        assert errors(response)[0]["code"] in ("PAGINATION_NUMBER_INVALID", "NAME_INVALID")


def test_token_catalog_needs_the_catalog_scope(
    token_client: Client, token_key: Any, storage: S3BlobStorage
) -> None:
    storage.repository("a/b").put("application/octet-stream", b"x")
    storage.repository("c/d").put("application/octet-stream", b"x")
    response = token_client.get("/v2/_catalog", headers=bearer(token_key, grant("a/b", "pull")))
    assert response.status_code == 401
    assert (
        'scope="registry:catalog:*",error="insufficient_scope"'
        in response.headers["WWW-Authenticate"]
    )
    catalog = {"type": "registry", "name": "catalog", "actions": ["*"]}
    listed = token_client.get("/v2/_catalog", headers=bearer(token_key, catalog))
    assert json.loads(listed.data)["repositories"] == ["a/b", "c/d"]


def test_default_policy_with_passwords(storage: S3BlobStorage, tmp_path: Path) -> None:
    passwords = HtpasswdFile(write_htpasswd(tmp_path / "h", {"u": "p"}))
    client = Client(
        make_app(
            storage,
            SecuritySettings("htpasswd", BasicAuthenticator(passwords), AuthenticatedUsers()),
        )
    )
    path = f"/v2/any/repo/blobs/{DIGEST}"
    assert client.delete(path, headers={"Authorization": basic("u", "p")}).status_code == 404
    assert client.delete(path).status_code == 401


def test_security_headers_on_every_answer(client: Client, storage: S3BlobStorage) -> None:
    storage.repository("acl/app").put("application/octet-stream", b"some blob")
    answers = [
        client.get("/v2/"),
        client.get("/v2/", headers=as_user("admin")),
        client.get(f"/v2/acl/app/blobs/{DIGEST}", headers=as_user("admin")),
        client.head(f"/v2/acl/app/blobs/{DIGEST}", headers=as_user("admin")),
        client.get("/nowhere", headers=as_user("admin")),
        client.get("/v2/acl/app/manifests/nope", headers=as_user("admin")),
        client.patch(
            "/v2/acl/app/blobs/uploads/x", headers={**as_user("admin"), "Content-Length": "abc"}
        ),
    ]
    for response in answers:
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert len(response.headers.getlist("X-Content-Type-Options")) == 1
