"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.backends import Backend


@pytest.fixture
def backend() -> Iterator[Backend]:
    """One real backend named "b1" (the name it answers with), stopped after the test."""
    with Backend("b1") as b:
        yield b
