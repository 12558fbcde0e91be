"""Fault benchmark: what S3 faults, crashes and slow clients cost the registry.

    python -m bench.bench_faults [--runs 10] [--uploads 100] [--seed 1]
                                 [--skip-random] [--skip-kills] [--skip-rss]

1. Randomized fault runs (tests/faultrun.py, the same as the test): N seeds, each
   ``--uploads`` pushes through the registry app while the fault proxy fails ~10% of
   S3 requests (500, 503, resets, lost answers); then, faults off, every acknowledged
   blob is read back and the bucket checked. botocore retries without sleeping, as
   in the tests: the figures are counts, not times.
2. kill -9 of ``s3blobs serve`` at each step of a commit (tests/faultkill.py): the
   time from the kill to the client's 201, split into the restart (kill to a new
   process listening) and the continuation (listening to the 201).
3. Memory per stalled upload: a ``s3blobs serve`` process (default part size), 20
   uploads that each sent 1 MiB in a PATCH and then stall with the connection open:
   (VmRSS after - VmRSS before) / 20, summed over the server's process tree.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import socket
import tempfile
import time
from collections import Counter
from pathlib import Path

import bench.support  # noqa: F401  (puts tests/ on the path, sets dummy credentials)
from bench.support import MiB, moto_server
from faultcheck import check_bucket, direct_client
from faultkill import CASES, RegistryProcess, kill_case
from faultproxy import FaultProxy
from faultrig import new_bucket, storage_env
from faultrun import randomized_run

STALLED = 20


def random_runs(moto: str, runs: int, uploads: int, seed: int) -> None:
    from botocore.retries.standard import ExponentialBackoff

    ExponentialBackoff.delay_amount = lambda self, context: 0.0  # as the tests do
    print(f"\n## Randomized fault runs: {runs} x {uploads} uploads\n")
    header = "seed  acked  lost  bad-entries  500s  spurious-4xx  503  429  unfinished"
    print(header + "  S3-requests  faults (500/503/reset/lost)  seconds")
    totals: Counter[str] = Counter()
    for n in range(runs):
        run = randomized_run(moto, new_bucket(moto), seed=seed + n, uploads=uploads)
        statuses, faults = run["statuses"], run["faults"]
        row = {
            "acked": sum(1 for p in run["pushes"] if p.acknowledged),
            "lost": len(run["lost"]),
            "bad-entries": len(run["bucket"].problems),
            "500s": statuses.get(500, 0),
            "spurious-4xx": len(run["problems"].get("spurious 4xx", [])),
            "503": statuses.get(503, 0),
            "429": statuses.get(429, 0),
            "unfinished": sum(1 for p in run["pushes"] if p.failure),
            "requests": run["requests"],
            **{f"fault-{k}": faults.get(k, 0) for k in ("500", "503", "reset", "drop")},
        }
        totals.update(row)
        kinds = "/".join(str(row[f"fault-{k}"]) for k in ("500", "503", "reset", "drop"))
        print(
            f"{seed + n:>4}  {row['acked']:>5}  {row['lost']:>4}  {row['bad-entries']:>11}"
            f"  {row['500s']:>4}  {row['spurious-4xx']:>12}  {row['503']:>3}  {row['429']:>3}"
            f"  {row['unfinished']:>10}  {row['requests']:>11}  {kinds:>27}"
            f"  {run['seconds']:>7.1f}"
        )
    faulted = sum(totals[f"fault-{k}"] for k in ("500", "503", "reset", "drop"))
    print(
        f"total: {totals['acked']} acknowledged, {totals['lost']} lost, "
        f"{totals['bad-entries']} entries naming missing or wrong data, {totals['500s']} 500s, "
        f"{totals['spurious-4xx']} spurious 4xx, {totals['503']} 503, {totals['429']} 429, "
        f"{totals['unfinished']} pushes unfinished; {faulted} of {totals['requests']} "
        f"S3 requests faulted ({100 * faulted / max(totals['requests'], 1):.1f}%)"
    )


def kills(moto: str, workdir: Path) -> None:
    print("\n## kill -9 during a commit: time to the client's 201\n")
    print(f"{'shape':<12} {'kill point':<22} {'outcome':<40} restart  continue  total")
    bucket = new_bucket(moto)
    with FaultProxy(moto) as proxy:
        env = {**os.environ, **storage_env(proxy.url, bucket)}
        registry = RegistryProcess(env, workdir / "serve.log")
        try:
            for shape, point in CASES:
                out = kill_case(proxy, registry, shape, point, name=f"bench/{shape}-{point}")
                if not (out.fired and out.died):
                    print(f"{shape:<12} {point:<22} not reached")
                    continue
                ok = not out.failure and out.read_back and out.last and out.last.status == 201
                digests = {out.digest}
                report = check_bucket(direct_client(moto), bucket, digests=digests)
                what = "201, reads back" if ok else (out.failure or str(out.last))[:40]
                if report.problems:
                    what = f"BROKEN: {report.problems[0]}"[:40]
                restart = out.listening_at - out.killed_at
                # The client's times mean something only when it got its 201.
                times = f"{out.waited:>7.2f}s  {out.outage:>5.2f}s" if ok else "      -      -"
                print(f"{shape:<12} {point:<22} {what:<40} {restart:>6.2f}s  {times}")
        finally:
            registry.kill()


def process_tree_rss(pid: int) -> int:
    """VmRSS in bytes of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def stalled_uploads(moto: str, workdir: Path) -> None:
    print(f"\n## Memory per stalled upload ({STALLED} PATCHes that sent 1 MiB, then stall)\n")
    env = {**os.environ, **storage_env(moto, new_bucket(moto))}
    env.pop("S3BLOBS_PART_SIZE")  # the default part size, as deployed
    registry = RegistryProcess(env, workdir / "rss.log")
    registry.start()
    assert registry.proc is not None
    sockets: list[socket.socket] = []
    try:
        for _ in range(3):  # warm up: imports, clients, first allocations
            location = _post(registry.port)
            _patch_and_stall(registry.port, location, 64 * 1024).close()
        time.sleep(1)
        before = process_tree_rss(registry.proc.pid)
        for _ in range(STALLED):
            sockets.append(_patch_and_stall(registry.port, _post(registry.port), MiB))
        time.sleep(3)  # let the server read what was sent
        after = process_tree_rss(registry.proc.pid)
        per = (after - before) / STALLED
        print(f"VmRSS before {before / MiB:.1f} MiB, after {after / MiB:.1f} MiB")
        print(f"per stalled upload: {per / MiB:.2f} MiB")
    finally:
        for sock in sockets:
            sock.close()
        registry.kill()


def _post(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v2/bench/stall/blobs/uploads/", body=b"")
        response = conn.getresponse()
        response.read()
        return str(response.getheader("Location"))
    finally:
        conn.close()


def _patch_and_stall(port: int, location: str, sent: int) -> socket.socket:
    """A PATCH announcing 8 MiB that sends ``sent`` bytes and then nothing more."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {8 * MiB}\r\n\r\n"
    )
    sock.sendall(head.encode() + os.urandom(sent))
    return sock


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--uploads", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-random", action="store_true")
    parser.add_argument("--skip-kills", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the registry logs every injected failure
    with tempfile.TemporaryDirectory() as tmp, moto_server() as moto:
        if not args.skip_random:
            random_runs(moto, args.runs, args.uploads, args.seed)
        if not args.skip_kills:
            kills(moto, Path(tmp))
        if not args.skip_rss:
            stalled_uploads(moto, Path(tmp))


if __name__ == "__main__":
    main()
