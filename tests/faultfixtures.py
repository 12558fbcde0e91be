"""Fixtures of the fault suite (a pytest plugin: ``pytest_plugins = ["faultfixtures"]``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from faultcheck import direct_client
from faultproxy import FaultProxy
from faultrig import RegistryServer, moto_process, new_bucket, serve_registry


@pytest.fixture(scope="session")
def fault_moto() -> Iterator[str]:
    with moto_process() as url:
        yield url


@pytest.fixture
def fault_bucket(fault_moto: str) -> str:
    return new_bucket(fault_moto)


@pytest.fixture
def proxy(fault_moto: str) -> Iterator[FaultProxy]:
    with FaultProxy(fault_moto) as started:
        yield started


@pytest.fixture
def registry(proxy: FaultProxy, fault_bucket: str) -> Iterator[RegistryServer]:
    with serve_registry(proxy, fault_bucket) as server:
        yield server


@pytest.fixture
def s3_direct(fault_moto: str) -> Any:
    return direct_client(fault_moto)
