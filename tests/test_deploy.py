"""The production deployment of deploy/, tested end to end: nginx (TLS, the shipped site
file) in front of two gunicorn instances (the shipped gunicorn.conf.py) sharing a
redis-server and a moto server; skopeo pushes and pulls over verified HTTPS, a 1 GiB
layer included, and every process stays within a memory bound.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
import requests

from certs import ServerCertificate, make_server_certificate
from netutil import free_port, wait_for_port
from servers import (
    ROOT,
    Registry,
    children,
    moto_process,
    need,
    peak_rss_mib,
    redis_server,
    registries,
    stop,
)

SITE = ROOT / "deploy" / "nginx" / "s3blobs.conf"
MiB = 1024 * 1024
BIG_LAYER = 1024 * MiB
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
#: Peak RSS allowed to a gunicorn worker that received the 1 GiB layer: its part
#: buffers (16 MiB x (4 + 1)) on top of Python, boto3 and redis-py (measured: 165).
WORKER_BOUND_MIB = 256
OTHER_BOUND_MIB = 64  # nginx, redis-server, gunicorn masters (measured: 8 to 26)


def substitute(text: str, pattern: str, replacement: str) -> str:
    """Replace the one line of the shipped file that ``pattern`` matches."""
    result, count = re.subn(pattern, lambda _: replacement, text)
    assert count == 1, f"{pattern!r} matched {count} times in {SITE.name}"
    return result


def nginx_config(workdir: Path, port: int, upstreams: list[int], tls: ServerCertificate) -> Path:
    """The shipped site file with this test's ports and certificate, in a minimal main
    configuration that keeps every file nginx writes under ``workdir``."""
    site = SITE.read_text()
    servers = "\n    ".join(f"server 127.0.0.1:{p};" for p in upstreams)
    site = substitute(site, r"server 127\.0\.0\.1:5000;", servers)
    site = substitute(site, r"listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    site = substitute(site, r"ssl_certificate /\S+;", f"ssl_certificate {tls.cert};")
    site = substitute(site, r"ssl_certificate_key /\S+;", f"ssl_certificate_key {tls.key};")
    (workdir / "s3blobs.conf").write_text(site)
    temp = " ".join(
        f"{kind}_temp_path {workdir / kind};" for kind in ("proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = workdir / "nginx.conf"
    main.write_text(
        f"""
daemon off;
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 2;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {workdir / "access.log"};
    client_body_temp_path {workdir / "client_body"};
    {temp}
    include {workdir / "s3blobs.conf"};
}}
"""
    )
    return main


@contextmanager
def nginx(
    workdir: Path, upstreams: list[int], tls: ServerCertificate
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    binary = need("nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = nginx_config(workdir, port, upstreams, tls)
    command = [binary, "-p", str(workdir), "-c", str(config), "-e", str(workdir / "error.log")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, "nginx")
        yield port, proc
    finally:
        stop(proc, signal.SIGQUIT)  # nginx's graceful stop


def write_layer(path: Path, size: int) -> str:
    """An uncompressed layer: a tar of one file of ``size`` bytes (one random MiB
    repeated, written in a second); returns its digest."""
    chunk = os.urandom(MiB)
    digest = hashlib.sha256()
    info = tarfile.TarInfo("big.bin")
    info.size = size
    with path.open("wb") as out:

        def emit(data: bytes) -> None:
            out.write(data)
            digest.update(data)

        emit(info.tobuf(format=tarfile.GNU_FORMAT))
        for offset in range(0, size, MiB):
            emit(chunk[: min(MiB, size - offset)])
        emit(b"\0" * (-size % 512 + 1024))  # padding, then the two empty blocks that end a tar
    return f"sha256:{digest.hexdigest()}"


def put_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"size": len(data), "digest": f"sha256:{digest}"}


def image_with_big_layer(layout: Path) -> str:
    """An OCI layout of one image: a 1 GiB uncompressed layer and a small one."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    scratch = layout / "layer.tmp"
    big_digest = write_layer(scratch, BIG_LAYER)
    scratch.rename(blobs / big_digest.split(":")[1])
    small = io.BytesIO()
    with tarfile.open(fileobj=small, mode="w") as tar:
        info = tarfile.TarInfo("small.txt")
        payload = b"a small layer\n"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    layers = [
        {
            "mediaType": LAYER_TAR,
            "size": (blobs / big_digest.split(":")[1]).stat().st_size,
            "digest": big_digest,
        },
        {"mediaType": LAYER_TAR, **put_blob(layout, small.getvalue())},
    ]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
    }
    config_descriptor = {"mediaType": CONFIG, **put_blob(layout, json.dumps(config).encode())}
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config_descriptor,
        "layers": layers,
    }
    manifest_descriptor = {"mediaType": MANIFEST, **put_blob(layout, json.dumps(manifest).encode())}
    manifest_descriptor["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    (layout / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": [manifest_descriptor]})
    )
    return big_digest


def skopeo(*args: str) -> None:
    done = subprocess.run(
        [need("skopeo"), "--insecure-policy", *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr


def peak_memory(
    nginx_pid: int, redis_pid: int, gunicorns: dict[int, list[int]]
) -> dict[str, float]:
    """Peak RSS (MiB) of every process of the deployment but S3, by name and pid."""
    peaks = {f"nginx {pid}": peak_rss_mib(pid) for pid in [nginx_pid, *children(nginx_pid)]}
    peaks[f"redis-server {redis_pid}"] = peak_rss_mib(redis_pid)
    for master, workers in gunicorns.items():
        peaks[f"gunicorn master {master}"] = peak_rss_mib(master)
        peaks.update({f"gunicorn worker {pid}": peak_rss_mib(pid) for pid in workers})
    return peaks


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(4 * MiB):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


@pytest.mark.e2e
@pytest.mark.slow
def test_skopeo_through_nginx_and_two_gunicorns_with_a_1_gib_layer(tmp_path: Path) -> None:
    need("skopeo")
    need("nginx")
    tls = make_server_certificate(tmp_path / "tls")
    source, pulled = tmp_path / "source", tmp_path / "pulled"
    big_digest = image_with_big_layer(source)
    with (
        redis_server(tmp_path / "redis") as cache,
        moto_process(objects_in_memory=True) as endpoint,
    ):
        bucket = "deploy-e2e"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=bucket
        )
        env = {
            "S3BLOBS_BUCKET": bucket,
            "S3BLOBS_ENDPOINT_URL": endpoint,
            "S3BLOBS_REGION": "us-east-1",
            "S3BLOBS_ADDRESSING_STYLE": "path",
            "S3BLOBS_CACHE": cache.url,
            "S3BLOBS_TRUSTED_PROXIES": "127.0.0.1",
        }
        with registries(env, 2) as gunicorns:
            workers = {g.proc.pid: g.workers() for g in gunicorns}
            with nginx(tmp_path / "nginx", [g.port for g in gunicorns], tls) as (port, proxy):
                registry = f"127.0.0.1:{port}"
                base = requests.get(f"https://{registry}/v2/", verify=tls.ca, timeout=10)
                assert base.status_code == 200
                assert base.headers["Docker-Distribution-API-Version"] == "registry/2.0"
                started = time.monotonic()
                # --preserve-digests: the uncompressed layer goes as it is, not gzipped
                skopeo(
                    "copy",
                    "--preserve-digests",
                    "--dest-cert-dir",
                    str(tls.ca.parent),
                    f"oci:{source}:latest",
                    f"docker://{registry}/e2e/big:v1",
                )
                pushed = time.monotonic()
                skopeo(
                    "copy",
                    "--preserve-digests",
                    "--src-cert-dir",
                    str(tls.ca.parent),
                    f"docker://{registry}/e2e/big:v1",
                    f"oci:{pulled}:v1",
                )
                print(f"push {pushed - started:.1f}s, pull {time.monotonic() - pushed:.1f}s")
                layer = pulled / "blobs" / "sha256" / big_digest.split(":")[1]
                assert layer.stat().st_size > BIG_LAYER
                assert sha256_of(layer) == big_digest
                peaks = peak_memory(proxy.pid, cache.pid, workers)
                print("peak RSS (MiB):", {name: round(mib) for name, mib in peaks.items()})
                for name, mib in peaks.items():
                    bound = (
                        WORKER_BOUND_MIB if name.startswith("gunicorn worker") else OTHER_BOUND_MIB
                    )
                    assert mib < bound, (name, mib)
                # no worker was restarted (a timeout would have killed the long PATCH)
                assert {g.proc.pid: g.workers() for g in gunicorns} == workers
                log = (tmp_path / "nginx" / "error.log").read_text()
                assert "buffered to a temporary file" not in log  # streamed, not spooled
                for gunicorn in gunicorns:
                    gunicorn.stop()
                down = requests.get(f"https://{registry}/v2/", verify=tls.ca, timeout=10)
                assert down.status_code == 503 and down.headers["Retry-After"]
                assert down.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_gunicorn_lets_an_upload_in_flight_finish_on_sigterm(server_env: dict[str, str]) -> None:
    """The shipped graceful shutdown: SIGTERM stops new connections, and a PATCH that
    is still streaming its body finishes and is answered."""
    registry = Registry(server_env)
    try:
        registry.wait_ready()
        started = requests.post(f"{registry.url}/v2/drain/me/blobs/uploads/", timeout=10)
        assert started.status_code == 202
        signalled = threading.Event()

        def body() -> Iterator[bytes]:
            yield b"a" * MiB
            os.kill(registry.proc.pid, signal.SIGTERM)  # mid-request
            signalled.set()
            time.sleep(1.0)  # the shutdown is under way while the body still streams
            for _ in range(3):
                yield b"b" * MiB

        patched = requests.patch(
            registry.url + started.headers["Location"], data=body(), timeout=30
        )
        assert signalled.is_set()
        assert patched.status_code == 202, patched.text
        assert patched.headers["Range"] == f"0-{4 * MiB - 1}"
        assert registry.proc.wait(timeout=30) == 0  # then it exits, cleanly
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{registry.url}/v2/", timeout=5)
    finally:
        registry.stop()
