"""Running the controller's real client against ``FakeApiServer``: fixtures and small helpers.

``api_config`` goes through a kubeconfig file the fake server wrote (its CA inline, a bearer
token), so lightkube's configuration, TLS verification and authentication are the ones a cluster
gets. ``Harness`` runs a ``LiveController`` in this process with its own thread and event loop,
as ``portway controller`` does, but publishing to a counter instead of signalling the test run.
The ``fake`` fixture (conftest.py) accepts two tokens, ``token-a`` and ``token-b``: two
controllers with one token each can be told apart in the requests the server records.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from lightkube.config.kubeconfig import SingleConfig

from portway.kubernetes import Options
from portway.kubernetes.api import load_config
from portway.kubernetes.cluster import ClusterController
from portway.kubernetes.informer import Backoff
from portway.kubernetes.live import LiveController, LiveOptions
from tests.support.fake_apiserver import FakeApiServer

T = TypeVar("T")
FAST = Backoff(base=0.02, cap=0.2)  # reconnections in milliseconds: tests wait for them


def api_config(fake: FakeApiServer, folder: Path, token: str = "token-a") -> SingleConfig:
    folder.mkdir(parents=True, exist_ok=True)
    return load_config(fake.kubeconfig(folder / f"kubeconfig-{token}", token=token))


def run(scenario: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    """Run an async test body on a fresh event loop, bounded in time."""

    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout)

    return asyncio.run(bounded())


async def until(check: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``check`` on the running loop (other tasks make progress meanwhile)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(0.01)


def eventually(check: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(0.01)


class Harness:
    """A ``LiveController`` over the fake server, started, counting its publications."""

    def __init__(
        self, fake: FakeApiServer, folder: Path, token: str = "token-a", **options: Any
    ) -> None:
        self.controller = ClusterController(Options(), folder / f"state-{token}")
        defaults: dict[str, Any] = {"backoff": FAST, "debounce": 0.05, "max_delay": 0.5,
                                    "lease_duration": 1.5, "renew_deadline": 1.0,
                                    "retry_period": 0.1}  # fmt: skip
        self.options = LiveOptions(identity=f"replica-{token}", **{**defaults, **options})
        self.published = 0
        self.live = LiveController(self.controller, api_config(fake, folder, token), self.options,
                                   on_publish=self._published)  # fmt: skip

    def _published(self) -> None:
        self.published += 1

    def __enter__(self) -> Harness:
        self.live.start(block_signals=False)
        assert self.live.wait_ready(10.0) is not None, "no first build"
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()
        assert self.live.finished.is_set(), "the controller thread did not end"
