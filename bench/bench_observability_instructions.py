"""What watching the registry costs, counted: the CPU instructions a gunicorn worker
executes per blob HEAD answered from the cache (no S3 request), for each variant of
:mod:`bench.bench_observability` ("off", "on, no access lines", "on"), counted by
valgrind's cachegrind.

    python -m bench.bench_observability_instructions

Requests/s on this machine move by several per cent from one second to the next
(other tenants), as much as what is measured; an instruction count does not move, so
a change of a per cent shows. It counts the work done, not its time: under valgrind
nothing waits for memory, so what cold caches add in a busy worker is not in it
(requests/s and CPU time in bench_observability are).

Each variant is run twice, its server answering ``WARM`` requests and then
``COUNTS[0]`` or ``COUNTS[1]`` more, on one keep-alive connection; the difference in
the worker's instructions between the two runs, divided by the difference in requests,
is one request's (start-up and exit cancel out). Under valgrind a request takes some
fifty times longer, so the access log's flusher (every 0.25 s) and the metrics fold
(every second), which run by the clock, would run some fifty times as often per
request as at full speed: both are moved out of the run (``counted_app``). The access
lines are then written as their batch fills (328 lines), as at full speed, and the
metrics are folded once, at exit: still inside the count. For the same reason the
descriptor cache is kept an hour (S3BLOBS_CACHE_TTL): at its 60 s a run's blob would be
looked up in S3 again, once or twice, unevenly between runs: S3 requests (botocore's
work) in some runs and not in others.

Two runs of the whole benchmark of the same code still differ, by several thousand
instructions a request (BENCHMARKS.md has the counts): compare runs, not single figures.
"""

from __future__ import annotations

import http.client
import logging
import multiprocessing
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.bench_observability import gunicorn, push, storage_on, variant_app
from bench.registries import process_tree
from bench.support import moto_server, new_bucket
from s3blobs.registry.hardening import WSGIApp
from s3blobs.registry.logbatch import BatchingHandler
from s3blobs.registry.metrics import FOLDER

VARIANTS = ("off", "on, no access lines", "on")
WARM = 100
COUNTS = (300, 2300)
# Long enough that neither clock-driven task runs while the requests are answered.
OUT_OF_THE_RUN = 24 * 3600.0
STARTUP = 600.0  # seconds: valgrind starts a gunicorn worker slowly
SETTINGS = {"S3BLOBS_CACHE_TTL": "3600"}  # no S3 request within a run (see the module)


def counted_app(variant: str) -> WSGIApp:
    """``variant_app(variant)``, its clock-driven work moved out of the run (see the module)."""
    app = variant_app(variant)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BatchingHandler):
            handler.max_delay = OUT_OF_THE_RUN
    FOLDER.interval = OUT_OF_THE_RUN
    return app


def worker_instructions(variant: str, requests: int, endpoint: str, bucket: str, path: str) -> int:
    """The instructions the worker of a ``variant`` server executed, from its start to
    its exit, having answered WARM + ``requests`` HEADs of ``path``."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        counts = workdir / "cachegrind"
        counts.mkdir()
        wrapper = (
            *("valgrind", "--tool=cachegrind", "--cache-sim=no"),
            f"--cachegrind-out-file={counts}/%p",
        )
        factory = "bench.bench_observability_instructions:counted_app"
        server = gunicorn(
            variant,
            endpoint,
            bucket,
            workdir,
            factory=factory,
            wrapper=wrapper,
            seconds=STARTUP,
            settings=SETTINGS,
        )
        with server as (port, master):
            [worker] = [pid for pid in process_tree(master) if pid != master]
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=STARTUP)
            for _ in range(WARM + requests):
                connection.request("HEAD", path)
                response = connection.getresponse()
                response.read()
                assert response.status == 200, response.status
            connection.close()
        # cachegrind writes its count when the process exits: "summary: <Ir>".
        for line in (counts / str(worker)).read_text().splitlines():
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"no instruction count for the worker of {variant!r}")


def main() -> None:
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is needed (apt-get install valgrind)")
    multiprocessing.set_start_method("fork")
    with moto_server() as endpoint:
        bucket = new_bucket(endpoint)
        path = f"/v2/bench/obs/blobs/{push(storage_on(endpoint, bucket))}"
        runs = [(variant, count) for variant in VARIANTS for count in COUNTS]
        # Two at a time (two cores): a count does not depend on what else runs.
        with ThreadPoolExecutor(2) as pool:
            futures = {
                (variant, count): pool.submit(
                    worker_instructions, variant, count, endpoint, bucket, path
                )
                for variant, count in runs
            }
            counted = {run: future.result() for run, future in futures.items()}
    per_request = {
        variant: (counted[variant, COUNTS[1]] - counted[variant, COUNTS[0]])
        / (COUNTS[1] - COUNTS[0])
        for variant in VARIANTS
    }
    print(
        f"Instructions per blob HEAD (warm cache) of a gunicorn worker (1 gthread worker, "
        f"4 threads), counted by cachegrind: runs of {WARM}+{COUNTS[0]} and "
        f"{WARM}+{COUNTS[1]} requests, their difference\n"
    )
    print("| variant | instructions per request | more than off |")
    print("|---|---|---|")
    off = per_request["off"]
    for variant, count in per_request.items():
        more = "" if variant == "off" else f"+{count - off:,.0f} ({(count / off - 1) * 100:+.1f}%)"
        print(f"| {variant} | {count:,.0f} | {more} |")


if __name__ == "__main__":
    main()
