"""The storage every command works on (``S3BLOBS_*``), and the store ``--repo`` picks."""

from __future__ import annotations

import argparse

from ..repository import GlobalBlobStore, RepositoryBlobStore
from ..storage import S3BlobStorage


def repo_flag() -> argparse.ArgumentParser:
    """A parent parser that gives a command ``--repo NAME``."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--repo",
        metavar="NAME",
        help="a repository (e.g. library/app); without it, the bucket's global blob store",
    )
    return parent


def open_storage() -> S3BlobStorage:
    """From ``S3BLOBS_*``; a bad variable or a missing bucket fails here (exit 2)."""
    return S3BlobStorage.from_env()


def blob_store(storage: S3BlobStorage, repo: str | None) -> GlobalBlobStore | RepositoryBlobStore:
    return storage.repository(repo) if repo else storage.blobs
