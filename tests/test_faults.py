"""Fault injection: S3 answers 500/503, connections reset before a request reaches S3,
and answers lost after S3 did the work, between the registry and a moto server
(tests/faultproxy.py). Whatever happens, a blob the registry answered 201 for reads
back byte for byte, and every error the client sees is a clean, retryable answer.

Here: a randomized run of 100 uploads (tests/faultrun.py). Targeted faults, races and
kill -9 are in test_fault_targets.py, test_fault_races.py and test_fault_kills.py.
"""

from __future__ import annotations

import pytest

from faultrun import randomized_run, summary

pytest_plugins = ["faultfixtures"]


@pytest.mark.slow
def test_randomized_faults_lose_no_acknowledged_blob(fault_moto: str, fault_bucket: str) -> None:
    run = randomized_run(fault_moto, fault_bucket, seed=9, uploads=100)
    faults = run["faults"]
    # The run means something only if every kind of fault happened, about 10% of all.
    assert set(faults) == {"500", "503", "reset", "drop"}, faults
    assert 0.05 < sum(faults.values()) / run["requests"] < 0.2, (faults, run["requests"])

    broken = {
        "acknowledged blobs that do not read back": run["lost"],
        "bucket checker": run["bucket"].problems,
        "acknowledged PATCH bytes no longer held": run["regressions"],
        **run["problems"],
        "pushes a retrying client could not finish": [
            f"{p.mode} {len(p.data)} B: {p.failure}" for p in run["pushes"] if p.failure
        ],
    }
    assert not any(broken.values()), summary(broken)
