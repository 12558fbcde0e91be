"""kill -9 of a ``s3blobs serve`` process at each step of a commit.

The proxy calls a hook at the precise S3 request: the whole process group gets
SIGKILL (``serve`` may run a server with worker processes), and the request is
reset (before forwarding) or its answer dropped (after). A new process starts on the
same bucket and port; the client retries its PUT as a real one does, and that must
end 201 at once (no lease or claim left by the dead process to wait out), with the
blob reading back byte for byte and the bucket checker passing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from faultcheck import check_bucket, direct_client
from faultkill import CASES, RegistryProcess, kill_case
from faultproxy import FaultProxy
from faultrig import new_bucket, storage_env

pytest_plugins = ["faultfixtures"]

#: How long a client may wait, from the new process listening to its 201.
PROMPT = 5.0


@pytest.fixture(scope="module")
def kill_rig(fault_moto: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    bucket = new_bucket(fault_moto)
    with FaultProxy(fault_moto) as proxy:
        env = {**os.environ, **storage_env(proxy.url, bucket)}
        env.pop("S3BLOBS_REQUIRE_TOOLS", None)
        registry = RegistryProcess(env, tmp_path_factory.mktemp("kills") / "serve.log")
        try:
            yield proxy, registry, fault_moto, bucket
        finally:
            registry.kill()


@pytest.mark.slow
@pytest.mark.parametrize(("shape", "point"), CASES)
def test_kill_during_commit_then_the_retried_put_ends_201(
    kill_rig: Any, shape: str, point: str
) -> None:
    proxy, registry, moto, bucket = kill_rig
    outcome = kill_case(proxy, registry, shape, point, name=f"kill/{shape}-{point}")
    assert outcome.fired, f"the commit never reached {point}: PUT -> {outcome.first}"
    assert outcome.died and outcome.first is not None and outcome.first.status is None, (
        f"the process survived: {outcome.first}"
    )
    answers = " | ".join(str(e)[:160] for e in outcome.exchanges[-3:])
    assert not outcome.failure, f"the retried PUT did not finish: {outcome.failure}: {answers}"
    last = outcome.last
    assert last is not None and last.method == "PUT" and last.status == 201, answers
    assert outcome.waited < PROMPT, f"the client waited {outcome.waited:.1f} s for its 201"
    assert outcome.read_back, "the blob does not read back"
    report = check_bucket(direct_client(moto), bucket, digests={outcome.digest})
    assert not report.problems, str(report)
