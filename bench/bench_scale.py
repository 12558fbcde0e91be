"""Scale-out benchmark: one gunicorn (deploy/gunicorn.conf.py) with 4 workers, 10,000
blob HEADs spread over the workers, with each worker's own memory cache and then with
one Redis for all, in the same run.

    python -m bench.bench_scale [--workers 4] [--heads 10000] [--blobs 500]

S3 is a moto server in its own process that counts what it is asked. The blobs are
stored first (without any cache); each mode then starts a fresh gunicorn (cold
caches; Redis emptied) and sends the same sequence of HEADs from several client
processes over keep-alive connections, twice: the first pass starts with cold
caches, the second (on new connections, which may reach other workers) with what
the first left. The S3 requests are counted for each pass; gunicorn's access log
tells how the requests spread over the workers.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import redis

from bench.support import free_port, moto_server, new_bucket, server_counts, wait_for_port
from s3blobs import Config, S3BlobStorage

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "bench/scale"
CLIENT_PROCESSES = 4
CONNECTIONS_PER_PROCESS = 4


def store_blobs(endpoint: str, bucket: str, count: int) -> list[str]:
    config = Config(
        bucket=bucket,
        endpoint_url=endpoint,
        region="us-east-1",
        addressing_style="path",
        cache_size=0,
    )
    repo = S3BlobStorage(config).repository(REPOSITORY)
    return [repo.put("application/octet-stream", f"blob {i}".encode()).digest for i in range(count)]


def head_all(port: int, paths: list[str]) -> int:
    """HEAD every path over CONNECTIONS_PER_PROCESS keep-alive connections, in turn;
    returns how many answered 200."""
    connections = [
        http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(CONNECTIONS_PER_PROCESS)
    ]
    ok = 0
    for i, path in enumerate(paths):
        connection = connections[i % len(connections)]
        connection.request("HEAD", path)
        response = connection.getresponse()
        response.read()
        ok += response.status == 200
    for connection in connections:
        connection.close()
    return ok


def blast(port: int, paths: list[str]) -> tuple[int, float]:
    """Send ``paths`` from CLIENT_PROCESSES processes at once; (200s, seconds)."""
    shares = [paths[i::CLIENT_PROCESSES] for i in range(CLIENT_PROCESSES)]
    with ProcessPoolExecutor(CLIENT_PROCESSES) as pool:
        list(pool.map(head_all, [port] * CLIENT_PROCESSES, [[]] * CLIENT_PROCESSES))  # warm up
        started = time.perf_counter()
        ok = sum(pool.map(head_all, [port] * CLIENT_PROCESSES, shares))
        return ok, time.perf_counter() - started


def run_mode(
    label: str, cache: str, env: dict[str, str], paths: list[str], workers: int, workdir: Path
) -> dict[str, object]:
    server_counts(env["S3BLOBS_ENDPOINT_URL"], reset=True)
    port = free_port()
    access_log = workdir / f"access-{label}.log"
    command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py")]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    command += ["--access-logfile", str(access_log), "--access-logformat", "%(p)s"]
    proc = subprocess.Popen(
        command,
        env={**os.environ, **env, "S3BLOBS_CACHE": cache, "S3BLOBS_GUNICORN_LOG_LEVEL": "warning"},
        cwd=ROOT,
    )
    try:
        wait_for_port(port, proc, "gunicorn")
        endpoint = env["S3BLOBS_ENDPOINT_URL"]
        deadline = time.time() + 60
        while server_counts(endpoint)["ops"]["HeadBucket"] < workers:  # one per worker booted
            if time.time() > deadline:
                raise RuntimeError("the workers did not boot")
            time.sleep(0.2)
        server_counts(endpoint, reset=True)
        ok_cold, cold = blast(port, paths)
        cold_ops = server_counts(endpoint, reset=True)["ops"]
        ok_warm, warm = blast(port, paths)
        warm_ops = server_counts(endpoint, reset=True)["ops"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    spread = Counter(access_log.read_text().split())
    return {
        "label": label,
        "ok": ok_cold + ok_warm,
        "cold_ops": cold_ops,
        "warm_ops": warm_ops,
        "cold_rps": len(paths) / cold,
        "warm_rps": len(paths) / warm,
        "spread": sorted(spread.values(), reverse=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=10_000)
    parser.add_argument("--blobs", type=int, default=500)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is needed: apt-get install redis-server")
    with tempfile.TemporaryDirectory() as tmp, moto_server(counting=True) as endpoint:
        workdir = Path(tmp)
        redis_port = free_port()
        redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_for_port(redis_port, redis_proc, "redis-server")
            bucket = new_bucket(endpoint)
            digests = store_blobs(endpoint, bucket, args.blobs)
            rng = random.Random(13)
            paths = [f"/v2/{REPOSITORY}/blobs/{rng.choice(digests)}" for _ in range(args.heads)]
            env = {
                "S3BLOBS_BUCKET": bucket,
                "S3BLOBS_ENDPOINT_URL": endpoint,
                "S3BLOBS_REGION": "us-east-1",
                "S3BLOBS_ADDRESSING_STYLE": "path",
            }
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            results = [run_mode("memory", "memory", env, paths, args.workers, workdir)]
            redis.Redis(port=redis_port).flushall()
            results.append(run_mode("redis", redis_url, env, paths, args.workers, workdir))
        finally:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)

    distinct = len(set(paths))
    print(
        f"{args.heads} blob HEADs over {distinct} distinct blobs of one repository, "
        f"{args.workers} gunicorn gthread workers x 8 threads, {CLIENT_PROCESSES} client "
        f"processes x {CONNECTIONS_PER_PROCESS} keep-alive connections\n"
    )
    print(
        "| cache | S3 requests, first pass | per distinct blob | HEAD/s, first pass | "
        "S3 requests, second pass | HEAD/s, second pass | HEADs per worker |"
    )
    print("|---|---|---|---|---|---|---|")
    for result in results:
        cold_ops: Counter[str] = result["cold_ops"]  # type: ignore[assignment]
        warm_ops: Counter[str] = result["warm_ops"]  # type: ignore[assignment]
        cold_total = sum(cold_ops.values())
        detail = ", ".join(f"{op} {n}" for op, n in sorted(cold_ops.items()))
        print(
            f"| {result['label']} | {cold_total} ({detail}) | {cold_total / distinct:.2f} "
            f"| {result['cold_rps']:.0f} | {sum(warm_ops.values())} | {result['warm_rps']:.0f} "
            f"| {result['spread']} |"
        )
    failed = [r["label"] for r in results if r["ok"] != 2 * args.heads]
    if failed:
        sys.exit(f"some HEADs did not answer 200: {failed}")


if __name__ == "__main__":
    main()
