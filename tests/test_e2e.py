"""Real registry clients (skopeo, oras) push to and pull from ``s3blobs serve``.

``s3blobs serve`` runs as its own process on an embedded S3, exactly as the README's
command starts it. Pulls follow the registry's 307 redirects to S3. CI sets
S3BLOBS_REQUIRE_TOOLS=1, so a missing client fails there instead of skipping.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import PART
from oci import image_layout

pytestmark = pytest.mark.e2e


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("S3BLOBS_REQUIRE_TOOLS"):
            pytest.fail(f"{tool} is required here (S3BLOBS_REQUIRE_TOOLS is set)")
        pytest.skip(f"{tool} is not installed")
    return path


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    """``s3blobs serve --port 0`` with no bucket: the embedded S3. Yields host:port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3BLOBS_")}
    env["S3BLOBS_PART_SIZE"] = str(PART)
    proc = subprocess.Popen(
        [sys.executable, "-m", "s3blobs", "serve", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            match = re.search(r"registry on http://(127\.0\.0\.1:\d+)", line)
            if match:
                break
        else:
            pytest.fail(f"s3blobs serve did not start: {lines}")
        assert "embedded S3" in lines[0]  # it says so first
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def skopeo(*args: str) -> None:
    done = subprocess.run(
        [need("skopeo"), "--insecure-policy", *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr


def layout_blobs(layout: Path) -> dict[str, bytes]:
    root = layout / "blobs" / "sha256"
    return {f"sha256:{p.name}": p.read_bytes() for p in root.iterdir()}


def test_skopeo_push_and_pull_byte_identical(registry: str, tmp_path: Path) -> None:
    need("skopeo")
    source, pulled = tmp_path / "source", tmp_path / "pulled"
    # three layers, one larger than a part
    blobs = image_layout(source, [1024, PART + 300_000, 200_000])
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"oci:{source}:latest",
        f"docker://{registry}/e2e/image:v1",
    )
    skopeo(
        "copy", "--src-tls-verify=false", f"docker://{registry}/e2e/image:v1", f"oci:{pulled}:v1"
    )
    assert layout_blobs(pulled) == blobs
    # a second repository gets the layers by cross-repository mount or upload; either way intact
    skopeo(
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        f"docker://{registry}/e2e/image:v1",
        f"docker://{registry}/e2e/copy:v1",
    )
    again = tmp_path / "again"
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry}/e2e/copy:v1", f"oci:{again}:v1")
    assert layout_blobs(again) == blobs


@pytest.mark.parametrize("chunked", [False, True], ids=["post-put", "chunked-1MiB"])
def test_oras_push_and_pull(registry: str, tmp_path: Path, chunked: bool) -> None:
    oras_client = pytest.importorskip("oras.client")
    artifact = tmp_path / "artifact.bin"
    data = os.urandom(3 * 1024 * 1024 + 12345)
    artifact.write_bytes(data)
    client = oras_client.OrasClient(hostname=registry, insecure=True)
    target = f"{registry}/e2e/artifact:{'chunked' if chunked else 'plain'}"
    cwd = os.getcwd()
    os.chdir(tmp_path)  # oras names the layer by its path relative to here
    try:
        response = client.push(
            files=["artifact.bin"], target=target, do_chunked=chunked, chunk_size=1024 * 1024
        )
        assert response.status_code == 201
        out = tmp_path / "out"
        files = client.pull(target=target, outdir=str(out))
    finally:
        os.chdir(cwd)
    [pulled] = [Path(f) for f in files]
    assert hashlib.sha256(pulled.read_bytes()).digest() == hashlib.sha256(data).digest()
