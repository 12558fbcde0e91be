"""Registry benchmark: the push-path scenarios of issue 14, side by side for s3blobs
(parts of any size, as on AWS; and equal parts, as on R2 and by default on a custom
endpoint) and the Go registry (distribution 2.8.2, Debian's docker-registry, S3 driver).

    python -m bench.bench_registry [--layers 1,20,120]

For each registry, a new image of gzip layers of 1, 20 and 120 MiB (random content,
new digests) is: pushed with skopeo into empty storage (cold push); pushed again to the
same repository; pushed to a new repository, which skopeo does with cross-repository
mounts since its blob-info cache knows the blobs from the first push; then a blob of
3 x 1 MiB is uploaded in chunks by plain HTTP (skopeo never chunks); then the image is
pulled twice (first and warm pull).

S3 is one moto server in its own process that counts every S3 request and the bytes
written (uploaded, and copied server-side) for all registries alike. Every client
request goes through a loopback nginx (bench.proxy) whose log gives each step's HTTP
requests and answers: that is how the mounts are checked (each layer's
``POST ?mount=&from=`` answered 201 Created; the only upload is the config's, by the
digest its PUT names: skopeo 1.9 uploads an image's config every time, it never mounts
one).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from bench.attribution import S3CallsByRequest, Served, attributing, by_kind
from bench.clients import (
    blob_exists,
    by_operation,
    chunked_upload,
    http_summary,
    presigned_requests,
    pull,
    push,
    quiet_counts,
    registry_requests,
)
from bench.images import config_digest, random_image
from bench.proxy import LoggedRequest, timing_proxy
from bench.registries import Registry, go_registry, require_tools, s3blobs_in_process
from bench.support import MiB, moto_server

CHUNK, CHUNKS = MiB, 3
COMMAND = "python -m bench.bench_registry"


@dataclass
class Step:
    ops: Counter[str]
    written: Counter[str]
    seconds: float
    http: list[LoggedRequest]
    by_request: list[Served]  # s3blobs only: each HTTP request with its S3 calls

    @property
    def bytes_written(self) -> int:
        return self.written["uploaded"] + self.written["copied"]


@dataclass
class Result:
    image_bytes: int
    layers: int  # what skopeo mounts: it always uploads the config, never mounts it
    config: str  # the config's digest
    steps: dict[str, Step]


def measure(
    endpoint: str,
    address: str,
    workdir: Path,
    layer_sizes: list[int],
    take: Callable[[], list[LoggedRequest]],
    s3_calls: S3CallsByRequest | None,
) -> Result:
    def take_calls() -> list[Served]:
        return s3_calls.take() if s3_calls is not None else []

    layout = workdir / f"image-{address.replace(':', '-')}"
    image_bytes = random_image(layout, layer_sizes)
    chunks = [os.urandom(CHUNK) for _ in range(CHUNKS)]
    pulled = workdir / f"pulled-{address.replace(':', '-')}"
    actions: dict[str, Callable[[], object]] = {
        "cold push": lambda: push(str(layout), address, "bench/image:v1"),
        "second push": lambda: push(str(layout), address, "bench/image:v1"),
        "mount push": lambda: push(str(layout), address, "bench/mounted:v1"),
        "chunked upload": lambda: chunked_upload(address, "bench/chunked", chunks),
        "first pull": lambda: pull(address, "bench/image:v1", f"{pulled}-1"),
        "warm pull": lambda: pull(address, "bench/image:v1", f"{pulled}-2"),
    }
    steps = {}
    quiet_counts(endpoint)
    take()
    take_calls()
    for name, action in actions.items():
        start = time.perf_counter()
        outcome = action()
        seconds = time.perf_counter() - start
        counts = quiet_counts(endpoint)
        steps[name] = Step(counts["ops"], counts["written"], seconds, take(), take_calls())
        if name == "chunked upload" and not blob_exists(address, "bench/chunked", str(outcome)):
            raise RuntimeError("the chunked upload left no blob")
        quiet_counts(endpoint)
        take()
        take_calls()
    return Result(image_bytes, len(layer_sizes), config_digest(layout), steps)


def mounted(step: Step) -> tuple[int, list[str]]:
    """(blobs the registry mounted: POST ?mount= answered 201; the digests of the blobs
    uploaded, from the ?digest= of each upload's closing PUT)."""
    mounts = sum(
        1 for r in step.http if r.method == "POST" and "mount=" in r.uri and r.status == 201
    )
    uploaded = [
        parse_qs(urlsplit(r.uri).query).get("digest", ["?"])[0]
        for r in step.http
        if r.method == "PUT" and "/blobs/uploads/" in r.uri
    ]
    return mounts, uploaded


def registries(
    endpoint: str, workdir: Path
) -> Iterator[tuple[str, AbstractContextManager[Registry]]]:
    yield "s3blobs, unequal parts (AWS)", s3blobs_in_process(endpoint, equal_parts=False)
    yield (
        "s3blobs, equal parts (R2; custom endpoint default)",
        s3blobs_in_process(endpoint, equal_parts=True),
    )
    yield "distribution 2.8.2", go_registry(endpoint, workdir)


def summary_rows(result: Result) -> list[str]:
    steps = result.steps
    cold, second, mount = steps["cold push"], steps["second push"], steps["mount push"]
    chunked, first, warm = steps["chunked upload"], steps["first pull"], steps["warm pull"]
    mounts, uploaded = mounted(mount)
    uploads = "only the config uploaded" if uploaded == [result.config] else f"uploaded {uploaded}"

    def requests_of(step: Step) -> str:
        extra = presigned_requests(step.ops)
        return f"{registry_requests(step.ops)}" + (f" (+{extra} presigned)" if extra else "")

    def ratio(step: Step, of: int) -> str:
        return f"{step.bytes_written / of:.2f}x"

    return [
        requests_of(cold),
        f"{ratio(cold, result.image_bytes)} ({cold.written['uploaded'] / MiB:.1f} + "
        f"{cold.written['copied'] / MiB:.1f} MiB)",
        f"{cold.seconds:.1f}",
        requests_of(second),
        f"{second.seconds:.1f}",
        requests_of(mount),
        f"{mounts} of {result.layers} layers; {uploads}",
        ratio(mount, result.image_bytes),
        f"{mount.seconds:.1f}",
        requests_of(chunked),
        ratio(chunked, CHUNK * CHUNKS),
        requests_of(first),
        requests_of(warm),
        f"{warm.seconds:.1f}",
    ]


ROWS = [
    ("cold push", "S3 requests"),
    ("cold push", "written to S3 / image (uploaded + copied)"),
    ("cold push", "seconds"),
    ("second push, same repository", "S3 requests"),
    ("second push, same repository", "seconds"),
    ("push to a new repository (mounts)", "S3 requests"),
    ("push to a new repository (mounts)", "layers mounted (POST ?mount= -> 201); blobs uploaded"),
    ("push to a new repository (mounts)", "written to S3 / image"),
    ("push to a new repository (mounts)", "seconds"),
    (f"chunked upload {CHUNKS} x {CHUNK // MiB} MiB", "S3 requests"),
    (f"chunked upload {CHUNKS} x {CHUNK // MiB} MiB", "written to S3 / blob"),
    ("first pull", "S3 requests"),
    ("warm pull", "S3 requests"),
    ("warm pull", "seconds"),
]


def report(results: dict[str, Result], layer_sizes: list[int]) -> None:
    names = list(results)
    image = next(iter(results.values())).image_bytes
    print(f"```sh\n{COMMAND} --layers {','.join(str(s // MiB) for s in layer_sizes)}\n```\n")
    print(
        f"Image: gzip layers of {', '.join(str(s // MiB) for s in layer_sizes)} MiB + config + "
        f"manifest, {image / MiB:.1f} MiB. s3blobs: 16 MiB parts (default), werkzeug threaded "
        "server in the benchmark's process; distribution: 10 MiB chunks (default), in-memory "
        'blob descriptor cache. "presigned": GETs and HEADs of presigned URLs by the client '
        "(not the registry's requests).\n"
    )
    print("| scenario | measure | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    columns = [summary_rows(results[name]) for name in names]
    for i, (scenario, measure_name) in enumerate(ROWS):
        print(f"| {scenario} | {measure_name} | " + " | ".join(c[i] for c in columns) + " |")
    print("\nS3 requests by operation:\n")
    print("| step | registry | S3 requests by operation |")
    print("|---|---|---|")
    for step in next(iter(results.values())).steps:
        for name in names:
            print(f"| {step} | {name} | {by_operation(results[name].steps[step].ops)} |")
    print("\nHTTP requests at the registry (method count (status: count)), from the proxy's log:\n")
    print("| step | registry | HTTP requests |")
    print("|---|---|---|")
    for step in next(iter(results.values())).steps:
        for name in names:
            print(f"| {step} | {name} | {http_summary(results[name].steps[step].http)} |")
    attribution(results)
    for name in names:
        mounts, uploaded = mounted(results[name].steps["mount push"])
        if mounts != results[name].layers or uploaded != [results[name].config]:
            print(f"\nWARNING: {name}: {mounts} of {results[name].layers} layers mounted")


def attribution(results: dict[str, Result]) -> None:
    """s3blobs' S3 requests by the HTTP request that made them."""
    names = [name for name, result in results.items() if _has_calls(result)]
    if not names:
        return
    print(
        "\ns3blobs: S3 requests by the HTTP request that made them (n: how many such "
        "requests; operations summed over the n; counted in the registry's process):\n"
    )
    print("| step | HTTP request -> status | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for step in next(iter(results.values())).steps:
        kinds = {name: by_kind(results[name].steps[step].by_request) for name in names}
        labels = sorted({label for table in kinds.values() for label in table}, key=_order)
        for label in labels:
            cells = []
            for name in names:
                count, calls = kinds[name].get(label, (0, Counter()))
                total = sum(calls.values())
                cells.append(f"n={count}: {total}" + (f" ({by_operation(calls)})" if total else ""))
            print(f"| {step} | {label} | " + " | ".join(cells) + " |")
    for name in names:
        for step_name, measured in results[name].steps.items():
            attributed = sum(sum(served.calls.values()) for served in measured.by_request)
            if attributed != registry_requests(measured.ops):
                print(
                    f"\nWARNING: {name}, {step_name}: {attributed} S3 calls attributed, "
                    f"{registry_requests(measured.ops)} seen by S3 (retries?)"
                )


def _has_calls(result: Result) -> bool:
    return any(step.by_request for step in result.steps.values())


ORDER = ["GET base", "HEAD blob", "POST", "PATCH", "PUT blob", "PUT manifest", "GET manifest"]


def _order(label: str) -> tuple[int, str]:
    for i, prefix in enumerate(ORDER):
        if label.startswith(prefix):
            return i, label
    return len(ORDER), label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", default="1,20,120", help="layer sizes in MiB (1,20,120)")
    args = parser.parse_args()
    layer_sizes = [int(s) * MiB for s in args.layers.split(",")]
    require_tools("skopeo", "docker-registry", "nginx")
    results = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        moto_server(counting=True) as endpoint,
        attributing(),
    ):
        workdir = Path(tmp)
        for name, started in registries(endpoint, workdir):
            with started as registry, timing_proxy(registry.address, workdir) as proxy:
                results[name] = measure(
                    endpoint, proxy.address, workdir, layer_sizes, proxy.take, registry.s3_calls
                )
    report(results, layer_sizes)


if __name__ == "__main__":
    main()
