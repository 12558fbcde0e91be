"""An OCI distribution registry (WSGI) on s3blobs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import RegistryApp, create_app, make_app

__all__ = ["RegistryApp", "create_app", "make_app"]


def __getattr__(name: str) -> Any:
    # The app is imported on first use, not with the package: ``s3blobs serve`` reads
    # ``registry.auth`` while it builds its parser, and must still be able to choose
    # prometheus_client's multiprocess mode before the app imports prometheus_client.
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
