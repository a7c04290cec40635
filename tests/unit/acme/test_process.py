"""The ACME process's plumbing: blocking work in a thread, its outcome on the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from portway.acme.process import in_thread


def test_in_thread_runs_off_the_loop_and_delivers_result_and_exception() -> None:
    async def main() -> tuple[str, bool]:
        loop_thread = threading.current_thread()
        seen = await in_thread(lambda: threading.current_thread().name)
        assert threading.current_thread() is loop_thread

        def fail() -> None:
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            await in_thread(fail)
        daemon = await in_thread(lambda: threading.current_thread().daemon)
        return seen, daemon

    assert asyncio.run(main()) == ("portway-acme", True)
