"""S3BLOBS_TRUSTED_PROXIES: X-Forwarded-* believed from the proxies named, and from no
one else; the gunicorn configuration agrees."""

from __future__ import annotations

import runpy
from typing import Any

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Request

from conftest import BUCKET
from s3blobs import ConfigError
from s3blobs.registry import create_app
from s3blobs.registry.proxies import BehindProxies, trusted_proxies
from servers import GUNICORN_CONF

FORWARDED = {
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "registry.example.com",
    "X-Forwarded-Port": "443",
}


class Probe:
    """The WSGI environ as the app behind the middleware receives it."""

    def __init__(self) -> None:
        self.environ: dict[str, Any] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.environ = dict(environ)
        start_response("204 No Content", [])
        return []


def seen_from(peer: str, setting: str) -> dict[str, Any]:
    probe = Probe()
    app = BehindProxies(probe, trusted_proxies({"S3BLOBS_TRUSTED_PROXIES": setting}))
    Client(app).get("/v2/", headers=FORWARDED, environ_base={"REMOTE_ADDR": peer})
    return probe.environ


@pytest.mark.parametrize("peer", ["127.0.0.1", "10.20.30.40", "::ffff:10.0.0.1", "fd00::5"])
def test_a_trusted_proxy_tells_the_client_scheme_and_host(peer: str) -> None:
    environ = seen_from(peer, "127.0.0.1, 10.0.0.0/8, fd00::/8")
    assert environ["REMOTE_ADDR"] == "203.0.113.7"
    assert Request(environ).host_url == "https://registry.example.com/"


@pytest.mark.parametrize("setting", ["", "127.0.0.1", "10.0.0.0/8"])
def test_anyone_else_is_not_believed(setting: str) -> None:
    environ = seen_from("198.51.100.9", setting)
    assert environ["REMOTE_ADDR"] == "198.51.100.9"
    assert Request(environ).host_url == "http://localhost/"
    assert not [name for name in environ if name.startswith("HTTP_X_FORWARDED")]


def test_a_bad_setting_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="S3BLOBS_TRUSTED_PROXIES"):
        trusted_proxies({"S3BLOBS_TRUSTED_PROXIES": "127.0.0.1, nginx.internal"})


def test_create_app_reads_the_setting(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3BLOBS_BUCKET", BUCKET)
    monkeypatch.setenv("S3BLOBS_TRUSTED_PROXIES", "127.0.0.1")
    app = create_app()
    assert app.trusts("127.0.0.1") and not app.trusts("127.0.0.2")
    response = Client(app).get("/v2/nope/tags/list", headers=FORWARDED)
    assert response.status_code == 404 and response.json["errors"][0]["code"] == "NAME_UNKNOWN"


def test_gunicorn_trusts_the_same_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3BLOBS_TRUSTED_PROXIES", "10.0.0.5")
    settings = runpy.run_path(str(GUNICORN_CONF))
    assert settings["forwarded_allow_ips"] == "10.0.0.5"
    assert settings["worker_class"] == "gthread"
    monkeypatch.delenv("S3BLOBS_TRUSTED_PROXIES")
    assert runpy.run_path(str(GUNICORN_CONF))["forwarded_allow_ips"] == ""
