"""``X-Forwarded-*`` from trusted proxies only (``S3BLOBS_TRUSTED_PROXIES``).

Behind a TLS-terminating proxy the app sees the proxy's address and plain HTTP; the
proxy says who the client was and what it asked for in ``X-Forwarded-For``,
``-Proto``, ``-Host`` and ``-Port``. Anyone can send those headers, so they are
believed only when the connection comes from an address in the setting (addresses
or networks, comma-separated): then werkzeug's ProxyFix puts the client's address,
scheme and host in the WSGI environ, one hop deep (the last proxy's own entry),
before any layer reads them. From anywhere else the headers are removed, so no
layer can believe them by mistake.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

from ..errors import ConfigError

VARIABLE = "S3BLOBS_TRUSTED_PROXIES"
FORWARDED = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_X_FORWARDED_PREFIX",
    "HTTP_FORWARDED",
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def trusted_proxies(environ: Mapping[str, str] | None = None) -> list[Network]:
    """The networks ``S3BLOBS_TRUSTED_PROXIES`` names (none by default)."""
    raw = (os.environ if environ is None else environ).get(VARIABLE, "")
    networks = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(
                f"{VARIABLE}={raw!r}: {item!r} is not an IP address or network; expected "
                "a comma-separated list such as 127.0.0.1,10.0.0.0/8"
            ) from None
    return networks


class BehindProxies:
    """WSGI middleware: believe ``X-Forwarded-*`` only from ``networks``."""

    def __init__(self, app: WSGIApp, networks: Iterable[Network]) -> None:
        self.app = app
        self.networks = list(networks)
        self._fixed = ProxyFix(app, x_for=1, x_proto=1, x_host=1, x_port=1)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if self.trusts(environ.get("REMOTE_ADDR", "")):
            return self._fixed(environ, start_response)
        for name in FORWARDED:
            environ.pop(name, None)
        return self.app(environ, start_response)

    def trusts(self, address: str) -> bool:
        try:
            peer = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped:
            peer = peer.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
        return any(peer in network for network in self.networks)
