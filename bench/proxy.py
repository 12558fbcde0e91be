"""A timing proxy on loopback: nginx in front of a registry, logging every request.

Both registries go through it alike, so what it logs is measured the same way for
each: the method, the path and query, the status, and the registry's time for the
request (``$upstream_response_time``: from nginx connecting to the registry to the
last byte of its answer; request bodies are streamed through unbuffered, so a PATCH's
time includes receiving its body). Responses are not buffered either.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.support import free_port, wait_for_port

METHODS = frozenset({"GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"})

NGINX_CONFIG = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    log_format timing
        '$request_method $request_uri $status $request_length $upstream_response_time';
    upstream registry {{
        server 127.0.0.1:{upstream};
        keepalive 64;
        keepalive_timeout 2s;  # before the registry's own (gunicorn: 5 s) closes it
    }}
    server {{
        listen 127.0.0.1:{port};
        access_log {dir}/access.log timing;
        client_max_body_size 0;
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_http_version 1.1;
        proxy_read_timeout 900s;
        proxy_send_timeout 900s;
        location / {{
            proxy_pass http://registry;
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    uri: str
    status: int
    length: int  # of the request, headers and body
    seconds: float  # the registry's time: nginx's $upstream_response_time


class TimingProxy:
    """``address`` is what clients use; ``take()`` returns the requests logged since
    the last call."""

    def __init__(self, address: str, log: Path) -> None:
        self.address = address
        self.log = log
        self._offset = 0

    def take(self) -> list[LoggedRequest]:
        with self.log.open("rb") as file:
            file.seek(self._offset)
            data = file.read()
        complete = data.rfind(b"\n") + 1
        self._offset += complete
        return [r for r in map(parse, data[:complete].decode().splitlines()) if r is not None]


def parse(line: str) -> LoggedRequest | None:
    """One access-log line; None for what was not a request to the registry (skopeo
    first tries TLS on the port: nginx answers that 400 without asking the registry)."""
    fields = line.split(" ", 4)  # the time is last: "a, b" when nginx tried twice
    if len(fields) != 5 or fields[0] not in METHODS or fields[4].strip() == "-":
        return None
    # several upstream tries are listed "a, b": a request is retried only if the
    # registry refused the connection, which would be a bug of this benchmark
    seconds = sum(float(part) for part in fields[4].split(",") if part.strip() != "-")
    return LoggedRequest(fields[0], fields[1], int(fields[2]), int(fields[3]), seconds)


@contextlib.contextmanager
def timing_proxy(upstream: str, workdir: Path) -> Iterator[TimingProxy]:
    """nginx on a free loopback port in front of ``upstream`` ("127.0.0.1:PORT")."""
    if shutil.which("nginx") is None:
        raise SystemExit("nginx is needed: apt-get install nginx")
    port = free_port()
    directory = workdir / f"nginx-{port}"
    directory.mkdir(parents=True)
    config = directory / "nginx.conf"
    config.write_text(
        NGINX_CONFIG.format(dir=directory, upstream=upstream.rsplit(":", 1)[1], port=port)
    )
    (directory / "access.log").touch()
    proc = subprocess.Popen(
        ["nginx", "-c", str(config), "-p", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc, "nginx")
        yield TimingProxy(f"127.0.0.1:{port}", directory / "access.log")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
