"""Real servers the replica and deployment tests start on loopback: redis-server, the
registry under gunicorn with the shipped configuration, and a moto server process;
and what they cost in memory (VmHWM)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import requests

from certs import ServerCertificate
from netutil import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"


def need(tool: str) -> str:
    """The tool's path; a skip with the reason when it is missing (a failure in CI,
    where S3BLOBS_REQUIRE_TOOLS is set)."""
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        if os.environ.get("S3BLOBS_REQUIRE_TOOLS"):
            pytest.fail(f"{tool} is required here (S3BLOBS_REQUIRE_TOOLS is set)")
        pytest.skip(f"{tool} is not installed")
    return path


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class RedisServer:
    """A redis-server on a loopback port, as a cache (nothing saved to disk), that a
    test can kill, restart on the same port, or freeze (SIGSTOP) and thaw."""

    def __init__(
        self, workdir: Path, tls: ServerCertificate | None = None, password: str = ""
    ) -> None:
        self.binary = need("redis-server")
        self.workdir = workdir
        self.port = free_port()
        self.tls = tls
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [self.binary, "--bind", "127.0.0.1", "--dir", str(self.workdir)]
        command += ["--save", "", "--appendonly", "no"]
        if self.tls is None:
            command += ["--port", str(self.port)]
        else:
            command += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            command += ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]
            command += ["--tls-ca-cert-file", str(self.tls.ca)]
        if self.password:
            command += ["--requirepass", self.password]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc, "redis-server")

    def kill(self) -> None:
        assert self.proc is not None
        stop(self.proc, signal.SIGKILL)

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        """A client with patient timeouts, for the test to look inside."""
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def stop(self) -> None:
        if self.proc is not None:
            self.thaw()
            stop(self.proc)


@contextmanager
def redis_server(
    workdir: Path, tls: ServerCertificate | None = None, password: str = ""
) -> Iterator[RedisServer]:
    server = RedisServer(workdir, tls, password)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def moto_process(objects_in_memory: bool = False) -> Iterator[str]:
    """A moto S3 server in its own process (its memory is not the test's); yields its URL.

    moto spools every object and part over ~5 MiB to a temporary file; with
    ``objects_in_memory`` it keeps them in memory (large uploads run twice as fast).
    """
    port = free_port()
    command = [sys.executable, "-c", "from moto.server import main; main()"]
    env = dict(os.environ)
    if objects_in_memory:
        env["MOTO_S3_DEFAULT_KEY_BUFFER_SIZE"] = str(4 << 30)
    proc = subprocess.Popen(
        [*command, "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc, "moto server")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


class Registry:
    """The registry under gunicorn with deploy/gunicorn.conf.py, on a loopback port."""

    def __init__(self, env: dict[str, str], workers: int = 1) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)]
        command += ["--bind", f"127.0.0.1:{self.port}", "--workers", str(workers)]
        self.proc = subprocess.Popen(
            command,
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, seconds: float = 30) -> None:
        wait_for_port(self.port, self.proc, "gunicorn", seconds)
        deadline = time.time() + seconds
        while True:  # the master listens at once; a worker answers once it has booted
            try:
                if requests.get(f"{self.url}/v2/", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the registry on port {self.port} did not start")
            time.sleep(0.1)

    def workers(self) -> list[int]:
        return children(self.proc.pid)

    def stop(self) -> None:
        stop(self.proc)


@contextmanager
def registries(env: dict[str, str], count: int, workers: int = 1) -> Iterator[list[Registry]]:
    started = [Registry(env, workers) for _ in range(count)]
    try:
        for registry in started:
            registry.wait_ready()
        yield started
    finally:
        for registry in started:
            registry.stop()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")
