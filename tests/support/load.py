"""A small load generator: a few client threads sending requests in a loop over keep-alive connections.

Every answer (or failure to get one) becomes an ``Outcome`` with its start and end time, status,
``portway-error`` cause and the backend that answered (the ``x-backend`` header of a
``FlakyBackend``, else the ``backend`` field of a ``Backend``'s JSON echo). Tests cut the outcomes
into time windows (before and after a failure was detected, say) and count them.

A client reconnects after a response with ``connection: close`` and after any connection error; a
connection error is recorded with status 0 and the exception's name as its cause.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Self

from tests.support.client import KeepAliveClient, Response
from tests.support.lifecycle import StartStop

CONNECTION_ERROR = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    started: float  # time.monotonic() when the request was sent
    finished: float
    status: int  # 0: no response (connection error)
    cause: str | None  # portway-error, or the exception's name for status 0
    backend: str | None  # who answered, when known

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 400

    @property
    def label(self) -> str:
        """``"200"``, ``"503 overflow_max_requests"``, ``"0 ConnectionResetError"``..."""
        return f"{self.status} {self.cause}" if self.cause else str(self.status)


def backend_of(response: Response) -> str | None:
    name = response.header("x-backend")
    if name is not None:
        return name
    if (response.header("content-type") or "").startswith("application/json"):
        try:
            value = json.loads(response.body).get("backend")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None
    return None


class Load(StartStop):
    """``clients`` threads sending ``method path`` to ``port`` until ``stop``.

    ``pause`` seconds between two requests of one client (0: back to back); ``timeout`` is the
    socket timeout of each client, so a request never waits longer than that for its answer.
    """

    def __init__(
        self,
        port: int,
        *,
        clients: int = 4,
        method: str = "GET",
        path: str = "/",
        body: bytes = b"",
        pause: float = 0.0,
        timeout: float = 10.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.port = port
        self.clients = clients
        self.method = method
        self.path = path
        self.body = body
        self.pause = pause
        self.timeout = timeout
        self.host = host
        self._outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- control -------------------------------------------------------------------------------

    def start(self) -> Self:
        for number in range(self.clients):
            thread = threading.Thread(target=self._client, name=f"load-{number}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self) -> list[Outcome]:
        self._stopping.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        return self.outcomes

    # ---- reading -------------------------------------------------------------------------------

    @property
    def outcomes(self) -> list[Outcome]:
        with self._lock:
            return list(self._outcomes)

    def count(self) -> int:
        with self._lock:
            return len(self._outcomes)

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Wait until at least ``count`` outcomes in all were recorded."""
        deadline = time.monotonic() + timeout
        while self.count() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.count()} of {count} requests done in {timeout}s")
            time.sleep(0.01)

    def between(self, start: float, end: float = float("inf")) -> list[Outcome]:
        """Outcomes of requests sent in [start, end) (time.monotonic())."""
        return [o for o in self.outcomes if start <= o.started < end]

    # ---- the client loop -----------------------------------------------------------------------

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self._outcomes.append(outcome)

    def _client(self) -> None:
        client: KeepAliveClient | None = None
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                if client is None:
                    client = KeepAliveClient(self.port, timeout=self.timeout)
                response = client.request(self.method, self.path, body=self.body)
            except Exception as exc:  # every failure to get an answer is an outcome
                self._record(
                    Outcome(started, time.monotonic(), CONNECTION_ERROR, type(exc).__name__, None)
                )
                if client is not None:
                    client.close()
                    client = None
                continue
            self._record(
                Outcome(
                    started,
                    time.monotonic(),
                    response.status,
                    response.header("portway-error"),
                    backend_of(response),
                )
            )
            if (response.header("connection") or "").lower() == "close":
                client.close()
                client = None
            if self.pause:
                time.sleep(self.pause)
        if client is not None:
            client.close()


def tally(outcomes: Iterable[Outcome]) -> Counter[str]:
    """Outcomes counted by label (status and cause)."""
    return Counter(o.label for o in outcomes)


def errors(outcomes: Iterable[Outcome]) -> list[Outcome]:
    """Outcomes that are not a 2xx or 3xx answer."""
    return [o for o in outcomes if not o.ok]


def share(outcomes: Iterable[Outcome], backend: str) -> float:
    """The share (0 to 1) of answered outcomes that ``backend`` answered."""
    answered = [o.backend for o in outcomes if o.backend is not None]
    return answered.count(backend) / len(answered) if answered else 0.0
