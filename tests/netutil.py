"""Ports on loopback, for the servers tests and benchmarks start as processes."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], name: str, seconds: float = 30) -> None:
    """Return once something listens on 127.0.0.1:``port``; fail if ``proc`` exits first."""
    deadline = time.time() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{name} did not start on port {port}") from None
            time.sleep(0.1)
