"""The README's usage example runs as written."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import BUCKET


def test_usage_example_runs(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    match = re.search(r"## Use\n\n```python\n(.*?)```", readme, re.S)
    assert match, "the README lost its usage example"
    monkeypatch.setenv("S3BLOBS_BUCKET", BUCKET)
    namespace: dict[str, Any] = {}
    exec(compile(match.group(1), "README.md", "exec"), namespace)
    repo = namespace["repo"]
    assert repo.get(namespace["config"].digest) == b"{}"
    data = namespace["data"]
    assert repo.get("sha256:" + hashlib.sha256(data).hexdigest()) == data
