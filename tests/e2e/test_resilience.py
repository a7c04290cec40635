"""Resilience end to end: instances die, answer 5xx, hang or get removed while real traffic flows.

Real backends (``Backend``, and ``FlakyBackend`` whose behaviour a test flips), an in-process gateway
and, where the behaviour is about traffic rather than one request, a small load generator (a few
client threads sending GETs over keep-alive connections). The rules under test are those of
``portway/proxy/tries.py`` and ``exchange.py``, and the resilience settings of a service: outlier
ejection, retries (idempotency, body buffering, budget), per-try and whole-request timeouts, the
circuit breaker, panic, slow start, and draining an instance removed by a reload.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.e2e.gateway import GatewayThread
from tests.support.backends import Backend
from tests.support.client import KeepAliveClient, Response, request
from tests.support.flaky import FlakyBackend
from tests.support.load import Load, Outcome, errors, share, tally

NO_OUTLIERS = {"enabled": False}


def service(*instances: str, **options: object) -> dict[str, object]:
    return {
        "services": {"web": {"instances": list(instances), **options}},
        "routes": [{"path": "/", "service": "web"}],
    }


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> float:
    """Poll ``condition`` until it holds; returns the time.monotonic() it was first seen true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout}s: {what}")
        time.sleep(0.005)
    return time.monotonic()


def ejected(g: GatewayThread, index: int) -> Callable[[], bool]:
    """Whether the gateway's outlier detector holds instance ``index`` of 'web' out right now."""

    def check() -> bool:
        web = g.gateway.snapshot.services["web"]
        return bool(g.call(web.outlier.is_ejected, web.endpoints[index]))

    return check


def returned(outcomes: list[Outcome], backend: str, since: float) -> float:
    """When the first request after ``since`` that ``backend`` answered was sent."""
    return min(o.started for o in outcomes if o.backend == backend and o.started >= since)


def assert_gateway_error(response: Response, status: int, cause: str) -> None:
    assert response.status == status, response.body
    assert response.header("portway-error") == cause
    assert "Traceback" not in response.body.decode()


def concurrently(*calls: Callable[[], Any]) -> list[tuple[Any, float]]:
    """Run the calls in parallel threads; each one's result (or exception) and its duration."""
    results: list[tuple[Any, float]] = [(None, 0.0)] * len(calls)

    def run(position: int, call: Callable[[], Any]) -> None:
        started = time.monotonic()
        try:
            value: Any = call()
        except Exception as exc:  # reported as a result, checked by the test
            value = exc
        results[position] = (value, time.monotonic() - started)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def later(delay: float, call: Callable[[], Any]) -> Any:
    time.sleep(delay)
    return call()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- an instance dies


def test_instance_dying_under_load_costs_no_idempotent_request_once_detected() -> None:
    """An instance stops while 3 clients send GETs: its in-flight and pooled connections break,
    connecting to it is refused. Connect failures move on to another instance and eject it; broken
    tries are retried. After the detection, and across its ejection ending and the re-ejection that
    follows (it is still dead), no client sees an error."""
    with Backend("a") as a, Backend("b") as b, Backend("c") as c:
        config = service(
            a.address, b.address, c.address, outlier_detection={"base_ejection_time": "1s"}
        )
        # 3 clients: never more retries in flight than min_concurrent_retries (3) always allows.
        with GatewayThread(config) as g, Load(g.port, clients=3) as load:
            load.wait_for(200)
            killed = time.monotonic()
            b.stop()
            detected = wait_until(ejected(g, 1), what="b ejected")
            time.sleep(3.0)  # the 1 s ejection ends, b is tried again, refused, ejected for 2 s
            web = g.gateway.snapshot.services["web"]
            ejections = web.endpoints[1].ejections
        before = load.between(killed, detected)
        after = load.between(detected)
    assert not errors(load.between(0, killed)), tally(load.between(0, killed))
    assert len(after) > 200, "the load kept flowing after the detection"
    assert errors(after) == [], f"before detection: {tally(before)}; after: {tally(after)}"
    assert {o.backend for o in after} == {"a", "c"}
    assert ejections >= 2, "b came back after its first ejection and was ejected again"
    # Before the detection too, only requests caught by the stop itself could fail; with retries
    # of idempotent requests there should be none, but the rule under test is the one above.
    assert len(errors(before)) <= 3, tally(before)


def crashing_instance() -> tuple[socket.socket, list[str]]:
    """An instance that answers one request, then crashes with its listener still open for a
    moment (as a process killed by SIGKILL does: its connections reset, and a connection accepted
    by the kernel in between is reset too). Every request after the first gets its connection
    closed without a byte of answer, on the first connection and on any new one."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    events: list[str] = []

    def handle(conn: socket.socket) -> None:
        with conn:
            buffered = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffered += chunk
                if b"\r\n\r\n" not in buffered:
                    continue
                buffered = b""
                if events:
                    events.append("closed")
                    return
                events.append("answered")
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Backend: crash\r\n\r\nfirst"
                )

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server, events


def test_get_is_retried_elsewhere_when_the_replay_of_a_stale_connection_fails() -> None:
    """A pooled connection dies before any response byte: the GET is replayed on a fresh
    connection to the same instance. When that one breaks too (the instance is crashing), the GET
    is still idempotent, its (empty) body still kept and attempts remain: it must be retried on
    the healthy instance rather than answered 502."""
    server, events = crashing_instance()
    try:
        with FlakyBackend("ok") as ok:
            address = f"127.0.0.1:{server.getsockname()[1]}"
            config = service(address, ok.address, outlier_detection=NO_OUTLIERS)
            with GatewayThread(config) as g, KeepAliveClient(g.port) as client:
                responses = [client.request("GET", f"/{i}") for i in range(3)]
    finally:
        server.close()
    assert events[0] == "answered" and "closed" in events  # the third GET met the crash
    answers = [(r.status, r.header("x-backend"), r.header("portway-error")) for r in responses]
    assert answers == [(200, "crash", None), (200, "ok", None), (200, "ok", None)]


# --------------------------------------------------------------------- an instance answers 5xx


def test_5xx_instance_is_retried_around_ejected_and_recovers_its_share() -> None:
    with FlakyBackend("a") as a, FlakyBackend("b") as b:
        config = service(
            a.address,
            b.address,
            outlier_detection={"consecutive_5xx": 3, "base_ejection_time": "1.5s"},
        )
        # 3 clients: never more retries in flight than min_concurrent_retries (3) always allows.
        with GatewayThread(config) as g, Load(g.port, clients=3) as load:
            load.wait_for(100)
            flipped = time.monotonic()
            a.set(status=503)
            ejected_at = wait_until(ejected(g, 0), what="a ejected after 3 consecutive 503")
            time.sleep(0.1)  # requests already on their way to a finish
            during_start = a.received
            time.sleep(0.7)
            during_end = a.received
            a.healthy()  # recovered while still ejected: no re-ejection when it comes back
            wait_until(lambda: a.received > during_end, what="a gets traffic again")
            time.sleep(1.5)
        outcomes = load.outcomes
        back = returned(outcomes, "a", ejected_at + 0.1)
        recovered = load.between(back + 0.3, back + 1.3)
    assert errors(outcomes) == [], tally(outcomes)  # every 503 of a was retried on b
    assert a.answered[503] >= 3
    assert during_end == during_start, "an ejected instance gets no requests"
    assert 1.0 < back - ejected_at < 4.0  # base_ejection_time 1.5 s, loosely
    assert len(recovered) > 100
    assert 0.35 <= share(recovered, "a") <= 0.65, (
        f"a's share after recovery {share(recovered, 'a')}"
    )
    assert flipped < ejected_at


# ------------------------------------------------------------------------- an instance hangs


def test_try_timeout_retries_a_hanging_instance_elsewhere() -> None:
    with FlakyBackend("hung") as hung, FlakyBackend("ok") as ok:
        hung.set(mode="hang")
        with GatewayThread(service(hung.address, ok.address, try_timeout="0.5s")) as g:
            results = []
            for _ in range(4):
                started = time.monotonic()
                results.append(
                    (request(g.port, "GET", "/x", timeout=10), time.monotonic() - started)
                )
    assert [r.status for r, _ in results] == [200] * 4
    assert {r.header("x-backend") for r, _ in results} == {"ok"}
    assert hung.received >= 1, "round robin sent some of them to the hanging instance first"
    assert ok.received == 4
    assert all(elapsed < 5.0 for _, elapsed in results)


def test_try_timeout_without_retries_is_504() -> None:
    with FlakyBackend("hung") as hung:
        hung.set(mode="hang")
        config = service(hung.address, try_timeout="0.5s", retries={"attempts": 0})
        with GatewayThread(config) as g:
            started = time.monotonic()
            response = request(g.port, "GET", "/", timeout=10)
            elapsed = time.monotonic() - started
    assert_gateway_error(response, 504, "upstream_timeout")
    assert "did not answer in time" in response.body.decode()
    assert elapsed < 4.0  # the try timeout, not the 60 s read timeout
    assert hung.received == 1


def test_request_timeout_bounds_all_tries_together() -> None:
    """Eleven tries of 0.5 s would take 5.5 s or more; request_timeout ends the lot after ~1 s."""
    with FlakyBackend("h1") as h1, FlakyBackend("h2") as h2:
        h1.set(mode="hang")
        h2.set(mode="hang")
        config = service(
            h1.address,
            h2.address,
            try_timeout="0.5s",
            request_timeout="1s",
            retries={"attempts": 10},
            outlier_detection=NO_OUTLIERS,
        )
        with GatewayThread(config) as g:
            started = time.monotonic()
            response = request(g.port, "GET", "/", timeout=15)
            elapsed = time.monotonic() - started
    assert_gateway_error(response, 504, "upstream_timeout")
    assert "took longer than 1s" in response.body.decode()
    assert elapsed < 4.0
    assert h1.received + h2.received < 11


def test_try_answered_well_within_try_timeout_is_not_cut_short() -> None:
    """try_timeout 1 s, answers after 0.3 s: every try must succeed, whenever it starts.

    The timeout is enforced by the sweeper, whose resolution must follow the smallest configured
    timeout (deadlines.py: fires between timeout - interval and timeout + interval, interval a
    quarter of the smallest timeout)."""
    with Backend("slowish") as backend:
        config = service(backend.address, try_timeout="1s", retries={"attempts": 0})
        with GatewayThread(config) as g:

            def three_in_a_row(offset: float) -> list[tuple[int, str | None]]:
                time.sleep(offset)
                answers = [request(g.port, "GET", "/slow?delay=0.3", timeout=10) for _ in range(3)]
                return [(r.status, r.header("portway-error")) for r in answers]

            results = concurrently(*(lambda i=i: three_in_a_row(i * 0.11) for i in range(8)))
    statuses = [answer for answers, _ in results for answer in answers]
    assert statuses == [(200, None)] * 24


# ------------------------------------------------------------------ what is retried, and what not


def post_bodies(port: int, count: int, body: bytes) -> list[Response]:
    with KeepAliveClient(port, timeout=10) as client:
        return [client.request("POST", f"/p/{i}", body=body) for i in range(count)]


def test_post_is_not_retried_on_5xx_by_default() -> None:
    with FlakyBackend("a") as a, FlakyBackend("b") as b:
        a.set(status=503)
        with GatewayThread(service(a.address, b.address, outlier_detection=NO_OUTLIERS)) as g:
            responses = post_bodies(g.port, 6, b"order=1")
    answered = sorted((r.status, r.header("x-backend")) for r in responses)
    assert answered == [(200, "b")] * 3 + [(503, "a")] * 3
    assert all(r.header("portway-error") is None for r in responses)  # the instance's own 503
    assert a.received + b.received == 6, "no POST was sent twice"


def test_post_is_not_retried_after_a_reset_by_default() -> None:
    with FlakyBackend("a") as a, FlakyBackend("b") as b:
        a.set(mode="reset")
        with GatewayThread(service(a.address, b.address, outlier_detection=NO_OUTLIERS)) as g:
            responses = [request(g.port, "POST", "/p", body=b"order=1") for _ in range(6)]
    failed = [r for r in responses if r.status != 200]
    assert len(failed) == a.received == 3
    for response in failed:
        assert_gateway_error(response, 502, "upstream_reset")
    assert a.received + b.received == 6


def test_post_is_retried_when_non_idempotent_retries_are_on() -> None:
    body = b"order=1&item=%d" % 42
    with FlakyBackend("a") as a, FlakyBackend("b") as b:
        a.set(status=503)
        config = service(
            a.address, b.address, outlier_detection=NO_OUTLIERS, retries={"non_idempotent": True}
        )
        with GatewayThread(config) as g:
            after_5xx = post_bodies(g.port, 6, body)
            a.set(status=200, mode="reset")
            after_reset = [request(g.port, "POST", "/p", body=body) for _ in range(6)]
    for response in after_5xx + after_reset:
        assert response.status == 200
        assert response.json()["backend"] == "b"
        assert response.json()["body_sha256"] == sha256(body), "the replayed body arrived whole"
    assert a.received >= 2  # some went to a first (once per phase at least)
    assert b.received == 12


def test_body_over_buffer_limit_is_not_retried_and_arrives_intact() -> None:
    big = bytes(range(256)) * 16  # 4 KiB
    small = b"s" * 512
    with FlakyBackend("a") as a, FlakyBackend("b") as b:
        a.set(status=503)
        config = service(
            a.address,
            b.address,
            outlier_detection=NO_OUTLIERS,
            retries={"non_idempotent": True, "buffer_limit": "1KiB"},
        )
        with GatewayThread(config) as g:
            big_answers = post_bodies(g.port, 4, big)
            small_answers = post_bodies(g.port, 4, small)
    big_statuses = sorted((r.status, r.header("x-backend")) for r in big_answers)
    assert big_statuses == [(200, "b")] * 2 + [(503, "a")] * 2, "over the limit: not retried"
    for response in big_answers:
        assert response.json()["body_bytes"] == len(big)
        assert response.json()["body_sha256"] == sha256(big)
    for response in small_answers:
        assert response.status == 200
        assert response.json()["backend"] == "b"
        assert response.json()["body_sha256"] == sha256(small)
    assert [r.body_bytes for r in a.records] == [len(big)] * 2 + [len(small)] * (a.received - 2)


def test_retry_budget_of_zero_means_no_retry() -> None:
    with FlakyBackend("a") as a, FlakyBackend("b") as b:
        a.set(status=503)
        config = service(
            a.address,
            b.address,
            outlier_detection=NO_OUTLIERS,
            retries={"budget_percent": 0, "min_concurrent_retries": 0},
        )
        with GatewayThread(config) as g, KeepAliveClient(g.port) as client:
            responses = [client.request("GET", "/") for _ in range(6)]
    assert sorted(r.status for r in responses) == [200] * 3 + [503] * 3
    assert a.received == 3
    assert a.received + b.received == 6, "no retry at all"


# ---------------------------------------------------------------------------- circuit breaker


def test_max_requests_overflow_answers_503_at_once() -> None:
    with Backend("slow") as backend:
        config = service(backend.address, circuit_breaker={"max_requests": 2})
        with GatewayThread(config) as g:
            results = concurrently(
                *(lambda: request(g.port, "GET", "/slow?delay=2", timeout=10) for _ in range(5))
            )
    responses: list[tuple[Response, float]] = results
    succeeded = [(r, t) for r, t in responses if r.status == 200]
    overflowed = [(r, t) for r, t in responses if r.status != 200]
    assert len(succeeded) == 2
    assert len(overflowed) == 3
    for response, elapsed in overflowed:
        assert_gateway_error(response, 503, "overflow_max_requests")
        assert elapsed < 1.0, "answered at once, well before the slow ones finish"
    assert all(elapsed >= 1.5 for _, elapsed in succeeded)
    assert len(backend.requests) == 2


def test_max_connections_without_pending_overflows() -> None:
    with Backend("slow") as backend:
        config = service(backend.address, circuit_breaker={"max_connections": 1})
        with GatewayThread(config) as g:
            results = concurrently(
                lambda: request(g.port, "GET", "/slow?delay=1", timeout=10),
                lambda: later(0.3, lambda: request(g.port, "GET", "/", timeout=10)),
            )
    (slow, _), (second, elapsed) = results
    assert slow.status == 200
    assert_gateway_error(second, 503, "overflow_max_connections")
    assert elapsed < 0.9
    assert backend.connections_accepted == 1


def test_max_connections_with_pending_queues_requests_in_turn() -> None:
    with Backend("slow") as backend:
        config = service(backend.address, circuit_breaker={"max_connections": 1, "max_pending": 4})
        with GatewayThread(config) as g:
            started = time.monotonic()
            results = concurrently(
                *(lambda: request(g.port, "GET", "/slow?delay=0.3", timeout=10) for _ in range(4))
            )
            elapsed = time.monotonic() - started
    assert [r.status for r, _ in results] == [200] * 4
    assert backend.connections_accepted == 1, "one connection, used in turn"
    assert elapsed >= 1.0  # 4 x 0.3 s one after another (loosely)


def test_queued_request_waiting_past_connect_timeout_is_503() -> None:
    with Backend("slow") as backend:
        config = service(
            backend.address,
            connect_timeout="0.5s",
            circuit_breaker={"max_connections": 1, "max_pending": 4},
        )
        with GatewayThread(config) as g:
            results = concurrently(
                lambda: request(g.port, "GET", "/slow?delay=2.5", timeout=10),
                lambda: later(0.2, lambda: request(g.port, "GET", "/", timeout=10)),
            )
    (first, _), (queued, waited) = results
    assert first.status == 200
    assert_gateway_error(queued, 503, "overflow_pending_timeout")
    assert waited < 2.0, "gave up after connect_timeout, before the connection came free"


# -------------------------------------------------------------------------------------- panic


def four_instances_three_failing() -> list[FlakyBackend]:
    backends = [FlakyBackend(name).start() for name in ("a", "b", "c", "d")]
    for bad in backends[:3]:
        bad.set(status=503)
    return backends


def test_three_of_four_ejected_without_panic_leaves_all_traffic_to_the_healthy_one() -> None:
    """panic_threshold 0: ejections go as far as max_ejection_percent (100) allows."""
    backends = four_instances_three_failing()
    try:
        config = service(
            *(b.address for b in backends),
            panic_threshold=0,
            retries={"attempts": 3},
            outlier_detection={
                "consecutive_5xx": 1,
                "max_ejection_percent": 100,
                "base_ejection_time": "30s",
            },
        )
        with GatewayThread(config) as g, KeepAliveClient(g.port) as client:
            first = [client.request("GET", "/") for _ in range(4)]
            assert all(ejected(g, i)() for i in range(3))
            bad_before = [b.received for b in backends[:3]]
            later = [client.request("GET", "/") for _ in range(20)]
            web = g.gateway.snapshot.services["web"]
            panic = web.panic
    finally:
        for backend in backends:
            backend.stop()
    assert [r.status for r in first + later] == [200] * 24
    assert {r.header("x-backend") for r in first + later} == {"d"}
    assert [b.received for b in backends[:3]] == bad_before, "ejected: no more requests"
    assert panic is False


def test_three_of_four_ejected_is_panic_traffic_goes_to_all() -> None:
    """Default panic_threshold 50: 1 of 4 available (25%) is panic: health is ignored and every
    instance gets traffic again. With 3 retries each request still reaches the healthy one."""
    backends = four_instances_three_failing()
    try:
        config = service(
            *(b.address for b in backends),
            retries={"attempts": 3},
            outlier_detection={
                "consecutive_5xx": 1,
                "max_ejection_percent": 100,
                "base_ejection_time": "30s",
            },
        )
        with GatewayThread(config) as g, KeepAliveClient(g.port) as client:
            first = [client.request("GET", "/") for _ in range(4)]
            assert all(ejected(g, i)() for i in range(3))
            web = g.gateway.snapshot.services["web"]
            panic = g.call(lambda: web.panic)
            bad_before = sum(b.received for b in backends[:3])
            later = [client.request("GET", "/") for _ in range(20)]
    finally:
        for backend in backends:
            backend.stop()
    assert panic is True
    assert [r.status for r in first + later] == [200] * 24
    assert {r.header("x-backend") for r in first + later} == {"d"}
    assert sum(b.received for b in backends[:3]) > bad_before, "panic: ejected ones tried too"


# ------------------------------------------------------------------------------- slow start


def test_slow_start_ramps_a_returning_instance_up() -> None:
    """slow_start 2 s: an instance back from an ejection takes max(10%, elapsed/2s) of its share,
    from the moment it returns; after the window it has its full share (50% of 2) again."""
    with FlakyBackend("a") as a, FlakyBackend("b") as b:
        config = service(
            a.address,
            b.address,
            slow_start="2s",
            outlier_detection={"consecutive_5xx": 2, "base_ejection_time": "1s"},
        )
        # 3 clients, as above: when a flips to 503 all of them may be waiting on it, and a 4th
        # retry in flight would exceed min_concurrent_retries and relay a's 503 (as it should).
        with GatewayThread(config) as g, Load(g.port, clients=3) as load:
            load.wait_for(100)
            a.set(status=503)
            ejected_at = wait_until(ejected(g, 0), what="a ejected")
            time.sleep(0.1)  # requests already on their way to a finish
            a.healthy()
            before_return = a.received
            wait_until(lambda: a.received > before_return, what="a gets traffic again")
            time.sleep(3.5)
        back = returned(load.outcomes, "a", ejected_at + 0.1)
        early = load.between(back, back + 0.4)
        late = load.between(back + 2.5, back + 3.5)
    assert errors(load.outcomes) == []
    assert len(early) > 50 and len(late) > 100
    assert share(early, "a") < 0.3, f"share in the first 0.4 s back: {share(early, 'a'):.2f}"
    assert 0.35 <= share(late, "a") <= 0.65, f"share after the ramp: {share(late, 'a'):.2f}"


# ------------------------------------------------------------------------- draining on reload


def test_reload_removing_an_instance_drains_it() -> None:
    with Backend("a") as a, Backend("b") as b, GatewayThread(service(a.address, b.address)) as g:
        slow: list[tuple[Response, float]] = []

        def slow_pair() -> None:
            slow.extend(
                concurrently(*(lambda: request(g.port, "GET", "/slow?delay=1.5", timeout=10),) * 2)
            )

        sender = threading.Thread(target=slow_pair)
        sender.start()
        a.wait_for_requests(1)
        b.wait_for_requests(1)
        g.reload(service(a.address))
        with KeepAliveClient(g.port) as client:
            after = [client.request("GET", f"/after/{i}") for i in range(10)]
        sender.join(10)
        wait_until(lambda: b.open_connections == 0, what="b's connection closed after use")
    assert [r.status for r, _ in slow] == [200, 200]
    assert [r.body for r, _ in slow] == [b"slow", b"slow"]
    assert [r.status for r in after] == [200] * 10
    assert {r.json()["backend"] for r in after} == {"a"}
    assert [r.path for r in b.requests] == ["/slow"], "b finished its request and got no more"
