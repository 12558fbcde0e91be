"""Large-layer benchmark: one image of a single 1 GiB layer pushed, then pulled, with
skopeo, through s3blobs (``python -m s3blobs serve``: gunicorn) with blob GETs redirected
to S3 (the default) and streamed through the registry (``S3BLOBS_REDIRECT=false``), and
through the Go registry 2.8.2 likewise (redirect on, and ``redirect: disable: true``).

    python -m bench.bench_large [--size-mib 1024] [--pulls 5]

For each registry: wall time of skopeo's push and of its pull, and the registry's peak
RSS during each (VmHWM from /proc/PID/status). The push and the pull are each served by
a fresh registry process on the same bucket, so neither's peak carries what the other
left in memory (nor what start-up did: the peak is reset to the resident set at rest,
by writing 5 to /proc/PID/clear_refs, which needs root, before the transfer starts);
the pull's caches start cold, as on another replica. For s3blobs the gunicorn master
and each worker are separate processes: the table gives the largest worker and the sum
over master and workers. S3 is one counting moto server (its own process) for every
registry; each registry has its own bucket, emptied at the end. With ``--pulls N``
the pulls come in N rounds over the registries, so that none is always first.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from bench.clients import by_operation, presigned_requests, pull, push, quiet_counts
from bench.clients import registry_requests as s3_requests
from bench.images import random_image
from bench.registries import (
    Registry,
    go_registry,
    memory_of,
    process_tree,
    require_tools,
    s3blobs_process,
)
from bench.support import MiB, moto_server, new_bucket, raw_client

COMMAND = "python -m bench.bench_large"
TAG = "large/image:v1"
Start = Callable[[str], AbstractContextManager[Registry]]  # a registry on this bucket


@dataclass
class Memory:
    largest: int  # the largest process (for s3blobs: the largest worker)
    total: int  # every process of the registry together


@dataclass
class Transfer:
    seconds: float
    at_rest: Memory  # VmRSS before the transfer
    memory: Memory  # VmHWM after it
    s3_requests: int
    presigned: int
    operations: str


def memory(registry: Registry, field: str = "VmHWM") -> Memory:
    pids = [pid for root in registry.pids for pid in process_tree(root)]
    figures = {pid: memory_of(pid, field) for pid in pids}
    workers = [figures[pid] for pid in pids if pid not in registry.pids] or list(figures.values())
    return Memory(max(workers), sum(figures.values()))


def reset_peaks(registry: Registry) -> None:
    for root in registry.pids:
        for pid in process_tree(root):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def transfer(endpoint: str, start: Start, bucket: str, action: Callable[[str], float]) -> Transfer:
    """Start the registry on ``bucket``, run ``action(its address)``, stop it."""
    with start(bucket) as registry:
        quiet_counts(endpoint)
        at_rest = memory(registry, "VmRSS")
        reset_peaks(registry)
        seconds = action(registry.address)
        ops = quiet_counts(endpoint)["ops"]
        return Transfer(
            seconds,
            at_rest,
            memory(registry),
            s3_requests(ops),
            presigned_requests(ops),
            by_operation(ops),
        )


def pull_once(endpoint: str, start: Start, bucket: str, workdir: Path) -> Transfer:
    pulled = workdir / "pulled"
    pulled_by = transfer(endpoint, start, bucket, lambda at: pull(at, TAG, str(pulled)))
    shutil.rmtree(pulled)
    return pulled_by


def median_pull(transfers: list[Transfer]) -> Transfer:
    pulls = sorted(transfers[1:], key=lambda t: t.seconds)
    return pulls[(len(pulls) - 1) // 2]


def empty_bucket(endpoint: str, bucket: str) -> None:
    """Free the moto server's memory and disk."""
    client = raw_client(endpoint)
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    quiet_counts(endpoint)


def registries(endpoint: str, workdir: Path, equal_parts: bool) -> Iterator[tuple[str, Start]]:
    parts = "true" if equal_parts else "false"
    for redirect in (True, False):
        env = {"S3BLOBS_REDIRECT": str(redirect).lower(), "S3BLOBS_EQUAL_PARTS": parts}

        def s3blobs(bucket: str, env: dict[str, str] = env) -> AbstractContextManager[Registry]:
            return s3blobs_process(endpoint, workdir, workers=2, env=env, bucket=bucket)

        yield f"s3blobs ({'redirect' if redirect else 'S3BLOBS_REDIRECT=false'})", s3blobs
    for redirect in (True, False):

        def go(bucket: str, redirect: bool = redirect) -> AbstractContextManager[Registry]:
            return go_registry(endpoint, workdir, redirect=redirect, bucket=bucket)

        yield f"distribution 2.8.2 ({'redirect' if redirect else 'redirect disabled'})", go


def report(
    results: dict[str, list[Transfer]], size: int, image: int, equal_parts: bool, pulls: int
) -> None:
    options = f" --size-mib {size // MiB}{' --equal-parts' if equal_parts else ''}"
    options += f" --pulls {pulls}" if pulls > 1 else ""
    print(f"```sh\n{COMMAND}{options}\n```\n")
    print(
        f"One image: a single gzip layer of {size // MiB} MiB of random bytes, {image / MiB:.1f} "
        "MiB with config and manifest. s3blobs: `python -m s3blobs serve` (gunicorn, 2 "
        "workers x 16 threads, the default), 16 MiB parts, "
        f"S3BLOBS_EQUAL_PARTS={str(equal_parts).lower()}; "
        "distribution: 10 MiB chunks. The push and the pull each by a fresh registry "
        "process on the same bucket. RSS at rest: VmRSS before the push; peak: VmHWM, reset "
        "before the transfer; for s3blobs the largest worker and (after the slash) master + "
        "workers together. MB/s: the image's bytes over skopeo's wall time."
        + (
            f" Pull: the median of {pulls} pulls, each by a fresh process, in rounds over "
            "the registries.\n"
            if pulls > 1
            else "\n"
        )
    )
    print(
        "| registry | RSS at rest | push s | push MB/s | peak RSS in push "
        "| pull s | pull MB/s | peak RSS in pull |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, transfers in results.items():
        pushed, pulled = transfers[0], median_pull(transfers)
        print(
            f"| {name} | {_rss(pushed.at_rest)} | {pushed.seconds:.1f} | "
            f"{image / pushed.seconds / 1e6:.0f} | "
            f"{_rss(pushed.memory)} | {pulled.seconds:.1f} | {image / pulled.seconds / 1e6:.0f} | "
            f"{_rss(pulled.memory)} |"
        )
    print("\nS3 requests (+ GETs of presigned URLs by skopeo):\n")
    print("| registry | step | S3 requests | by operation |")
    print("|---|---|---|---|")
    for name, transfers in results.items():
        for step, transfer in (("push", transfers[0]), ("pull", median_pull(transfers))):
            extra = f" (+{transfer.presigned})" if transfer.presigned else ""
            print(f"| {name} | {step} | {transfer.s3_requests}{extra} | {transfer.operations} |")
    if pulls > 1:
        print("\nEvery pull (s):\n")
        for name, transfers in results.items():
            print(f"- {name}: {', '.join(f'{t.seconds:.1f}' for t in transfers[1:])}")


def _rss(memory: Memory) -> str:
    if memory.largest == memory.total:
        return f"{memory.largest / MiB:.0f} MiB"
    return f"{memory.largest / MiB:.0f} / {memory.total / MiB:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="the layer's size (1024)")
    parser.add_argument(
        "--equal-parts",
        action="store_true",
        help="s3blobs with S3BLOBS_EQUAL_PARTS=true (default: false, as on AWS)",
    )
    parser.add_argument(
        "--pulls", type=int, default=1, help="pulls per registry; the median is reported (1)"
    )
    args = parser.parse_args()
    require_tools("skopeo", "docker-registry")
    size = args.size_mib * MiB
    results = {}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        endpoint = stack.enter_context(moto_server(counting=True))
        layout = workdir / "image"
        image = random_image(layout, [size])
        started = {}  # name: (start, its bucket)
        for name, start in registries(endpoint, workdir, args.equal_parts):
            bucket = new_bucket(endpoint)
            pushed = transfer(endpoint, start, bucket, lambda at: push(str(layout), at, TAG))
            results[name], started[name] = [pushed], (start, bucket)
        # The pulls in rounds, each round every registry in turn, starting one further
        # on each time: none is always first (or always right after the pushes).
        names = list(started)
        for round_number in range(args.pulls):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                results[name].append(pull_once(endpoint, *started[name], workdir))
        for _, bucket in started.values():
            empty_bucket(endpoint, bucket)
    report(results, size, image, args.equal_parts, args.pulls)


if __name__ == "__main__":
    main()
