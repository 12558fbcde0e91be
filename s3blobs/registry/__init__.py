"""An OCI distribution registry (WSGI) on s3blobs."""

from .app import RegistryApp, create_app, make_app

__all__ = ["RegistryApp", "create_app", "make_app"]
