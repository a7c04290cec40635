"""The fake API server for the controller-mode tests (see cluster_support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_apiserver import FakeApiServer


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer("token-a", "token-b") as server:
        yield server
