"""Concurrency benchmark: 8 skopeo clients at once push 8 different images (3 gzip
layers each, tens of MiB), then 8 at once pull them back (twice), through s3blobs
(``python -m s3blobs serve --workers 4``: gunicorn, 4 gthread workers x 16 threads;
each worker with its own caches, the default, and then with one Redis for all
workers, ``S3BLOBS_CACHE=redis://...``) and through the Go registry 2.8.2.

    python -m bench.bench_concurrent [--clients 8] [--layers 2,8,24] [--no-redis]

Throughput is the bytes of all images over the wall time of the phase (first client
started to last client done). Per-request latency is measured at the registry by a
loopback nginx in front of each registry that both go through alike (bench.proxy:
``$upstream_response_time``, from nginx connecting to the registry to the last byte of
the answer; request bodies are streamed through, so a PATCH's time includes receiving
its body from the client). Blob GETs are redirected to S3 by both registries, so a
pull's bytes come from S3 (moto) directly. S3 is one counting moto server in its own
process for both.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from bench.clients import SKOPEO_TIMEOUT, by_operation, quiet_counts, registry_requests
from bench.images import random_image
from bench.proxy import LoggedRequest, timing_proxy
from bench.registries import (
    Registry,
    go_registry,
    redis_server,
    require_tools,
    s3blobs_process,
)
from bench.support import MiB, moto_server

COMMAND = "python -m bench.bench_concurrent"
WORKERS = 4


@dataclass
class Phase:
    seconds: float  # wall time, first client started to last client done
    client_seconds: list[float]
    requests: list[LoggedRequest]
    s3_ops: Counter[str]


def run_clients(commands: list[list[str]]) -> tuple[float, list[float]]:
    """Start every command at once; the wall time and each command's own time."""
    start = time.perf_counter()
    running = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for command in commands
    ]
    finished: dict[int, float] = {}
    while len(finished) < len(running):
        for i, proc in enumerate(running):
            if i not in finished and proc.poll() is not None:
                finished[i] = time.perf_counter() - start
                if proc.returncode:
                    assert proc.stderr is not None
                    raise RuntimeError(f"{commands[i]} failed: {proc.stderr.read().decode()}")
        if time.perf_counter() - start > SKOPEO_TIMEOUT:
            for proc in running:
                proc.kill()
            raise RuntimeError("clients did not finish in time")
        time.sleep(0.02)
    for proc in running:
        assert proc.stderr is not None
        proc.stderr.close()
    return max(finished.values()), [finished[i] for i in range(len(running))]


def measure(
    endpoint: str,
    address: str,
    layouts: list[Path],
    workdir: Path,
    take: Callable[[], list[LoggedRequest]],  # the requests logged since the last call
) -> dict[str, Phase]:
    skopeo = ["skopeo", "--insecure-policy", "copy"]
    pushes = [
        [*skopeo, "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://{address}/c/{i}:v1"]
        for i, layout in enumerate(layouts)
    ]
    pulled = workdir / f"pulled-{address.replace(':', '-')}"
    pulled.mkdir()

    def pulls(round_: int) -> list[list[str]]:  # a new directory each round: nothing reused
        source = [f"docker://{address}/c/{i}:v1" for i in range(len(layouts))]
        return [
            [*skopeo, "--src-tls-verify=false", image, f"oci:{pulled}/{round_}-{i}:v1"]
            for i, image in enumerate(source)
        ]

    phases = {}
    for phase, commands in (("push", pushes), ("pull", pulls(1)), ("pull again", pulls(2))):
        quiet_counts(endpoint)
        take()
        seconds, each = run_clients(commands)
        counts = quiet_counts(endpoint)
        phases[phase] = Phase(seconds, each, take(), counts["ops"])
    shutil.rmtree(pulled)
    return phases


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


def registries(
    endpoint: str, workdir: Path, equal_parts: bool, redis_url: str
) -> Iterator[tuple[str, AbstractContextManager[Registry]]]:
    env = {"S3BLOBS_EQUAL_PARTS": str(equal_parts).lower()}
    yield (
        f"s3blobs ({WORKERS} workers)",
        s3blobs_process(endpoint, workdir, workers=WORKERS, env=env),
    )
    if redis_url:
        yield (
            f"s3blobs ({WORKERS} workers, S3BLOBS_CACHE=redis)",
            s3blobs_process(
                endpoint, workdir, workers=WORKERS, env={**env, "S3BLOBS_CACHE": redis_url}
            ),
        )
    yield "distribution 2.8.2", go_registry(endpoint, workdir)


def report(
    results: dict[str, dict[str, Phase]],
    clients: int,
    layer_sizes: list[int],
    total: int,
    equal_parts: bool,
    redis: bool,
) -> None:
    layers = ",".join(str(s // MiB) for s in layer_sizes)
    flags = f" --clients {clients} --layers {layers}" + (" --equal-parts" if equal_parts else "")
    flags += "" if redis else " --no-redis"
    print(f"```sh\n{COMMAND}{flags}\n```\n")
    print(
        f"{clients} clients at once, each its own image of gzip layers of {layers} MiB "
        f"({total / clients / MiB:.1f} MiB; {total / MiB:.0f} MiB in all). s3blobs: "
        f"`s3blobs serve --workers {WORKERS}` (gthread, 16 threads each), 16 MiB parts, "
        f"S3BLOBS_EQUAL_PARTS={str(equal_parts).lower()}; distribution: defaults, 10 MiB "
        "chunks, in-memory blob descriptor cache. Both redirect blob GETs to S3. Latency "
        "at the registry (nginx's upstream time), every request of the phase.\n"
    )
    print(
        "| registry | phase | wall s | MB/s (all clients) | client s (median / max) "
        "| requests | p50 ms | p99 ms | S3 requests |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, phases in results.items():
        for phase_name, phase in phases.items():
            latencies = [r.seconds for r in phase.requests]
            print(
                f"| {name} | {phase_name} | {phase.seconds:.1f} | "
                f"{total / phase.seconds / 1e6:.1f} | "
                f"{percentile(phase.client_seconds, 0.5):.1f} / {max(phase.client_seconds):.1f} | "
                f"{len(phase.requests)} | {percentile(latencies, 0.5) * 1000:.0f} | "
                f"{percentile(latencies, 0.99) * 1000:.0f} | {registry_requests(phase.s3_ops)} |"
            )
    print("\nLatency at the registry by request kind (ms: p50 / p99 / max, and count):\n")
    print("| registry | phase | " + " | ".join(KINDS) + " |")
    print("|---|---|" + "---|" * len(KINDS))
    for name, phases in results.items():
        for phase_name, phase in phases.items():
            cells = []
            for kind in KINDS:
                times = [r.seconds for r in phase.requests if kind_of(r) == kind]
                cells.append(
                    f"{percentile(times, 0.5) * 1000:.0f} / {percentile(times, 0.99) * 1000:.0f} "
                    f"/ {max(times) * 1000:.0f} ({len(times)})"
                    if times
                    else ""
                )
            print(f"| {name} | {phase_name} | " + " | ".join(cells) + " |")
    print("\nS3 requests by operation:\n")
    print("| registry | phase | S3 requests by operation |")
    print("|---|---|---|")
    for name, phases in results.items():
        for phase_name, phase in phases.items():
            print(f"| {name} | {phase_name} | {by_operation(phase.s3_ops)} |")


KINDS = [
    "HEAD blob",
    "POST upload",
    "PATCH",
    "PUT blob",
    "PUT manifest",
    "GET manifest",
    "GET blob",
]


def kind_of(request: LoggedRequest) -> str:
    path = request.uri.split("?")[0]
    if request.method == "PUT":
        return "PUT manifest" if "/manifests/" in path else "PUT blob"
    if request.method == "POST":
        return "POST upload"
    if request.method in ("GET", "HEAD"):
        where = "manifest" if "/manifests/" in path else "blob" if "/blobs/" in path else "base"
        return f"{request.method} {where}"
    return request.method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent skopeo clients (8)")
    parser.add_argument("--layers", default="2,8,24", help="layer sizes in MiB (2,8,24)")
    parser.add_argument(
        "--equal-parts",
        action="store_true",
        help="s3blobs with S3BLOBS_EQUAL_PARTS=true (default: false, as on AWS)",
    )
    parser.add_argument(
        "--no-redis",
        action="store_true",
        help="leave out the run of s3blobs with its caches in one Redis for all workers",
    )
    args = parser.parse_args()
    require_tools(
        "skopeo", "docker-registry", "nginx", *(() if args.no_redis else ("redis-server",))
    )
    layer_sizes = [int(s) * MiB for s in args.layers.split(",")]
    results: dict[str, dict[str, Phase]] = {}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        endpoint = stack.enter_context(moto_server(counting=True))
        redis_url = "" if args.no_redis else stack.enter_context(redis_server())
        for name, started in registries(endpoint, workdir, args.equal_parts, redis_url):
            # new images for each registry: skopeo's blob-info cache must not know them
            layouts = [workdir / f"image-{len(results)}-{i}" for i in range(args.clients)]
            total = sum(random_image(layout, layer_sizes) for layout in layouts)
            with started as registry, timing_proxy(registry.address, workdir) as proxy:
                results[name] = measure(endpoint, proxy.address, layouts, workdir, proxy.take)
            for layout in layouts:
                shutil.rmtree(layout)
    report(results, args.clients, layer_sizes, total, args.equal_parts, not args.no_redis)


if __name__ == "__main__":
    main()
