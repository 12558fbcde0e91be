"""What every command prints: status lines on standard output, prefixed."""

from __future__ import annotations


def say(line: str) -> None:
    print(f"s3blobs: {line}", flush=True)
