"""TLS passthrough over real sockets: SNI routing, unterminated TLS, failures, relaying.

The gateway side is a ``PassthroughConnection`` server on a uvloop loop in a thread, built from a
config the way a worker builds its own (sweeper, snapshot, context). Behind it run TLS backends:
Python ``ssl`` servers with certificates from a throwaway ``trustme`` CA, one name per backend,
each telling which backend it is and which SNI it saw. Clients are Python ``ssl`` and
``openssl s_client``: a verified handshake with the backend's own certificate proves that the TLS
session runs end to end, since the gateway holds no certificate at all.

Backend commands, one line after the handshake: ``WHO`` (answers ``LABEL SNI``), ``HASH N M``
(reads N bytes, answers their SHA-256 and then M pattern bytes), ``HOLD`` (waits for the peer to
close, recording how long that took).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self, TypeVar

import pytest
import trustme
import uvloop

from portway.config.model import Config
from portway.config.tls import PassthroughConfig
from portway.dataplane import Snapshot, assemble
from portway.deadlines import Sweeper, sweep_interval
from portway.gateway import close_servers
from portway.proxy.service import Service
from portway.server.context import WorkerContext
from portway.server.passthrough import PassthroughConnection
from portway.tls.sni_routes import SniRoutes, compile_sni_routes
from tests.support.backends import refused_port
from tests.support.lifecycle import StartStop
from tests.unit.tls.hellos import real_hello

T = TypeVar("T")

HELLO_TIMEOUT = 1.0
IDLE_TIMEOUT = 0.5  # read_timeout of the "slow" service


def payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def recv_line(sock: socket.socket) -> str:
    line = b""
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            break
        line += byte
    return line.decode("ascii").strip()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------- backends


def stop_accepting(sock: socket.socket) -> None:
    """Wake the thread blocked in ``accept`` (closing alone does not, on Linux), then close."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class TlsBackend(StartStop):
    """A TLS server on 127.0.0.1 with one certificate, a thread per connection."""

    def __init__(self, ca: trustme.CA, name: str, label: str) -> None:
        self.label = label
        self.name = name
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(name, common_name=name).configure_cert(self.context)
        self._seen = threading.local()
        self.context.sni_callback = self._on_sni
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.handshakes = 0
        self.held: list[float] = []  # seconds each HOLD waited for its peer to close
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name=f"tls-{label}", daemon=True)

    def _on_sni(self, conn: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self._seen.name = name  # the handshake runs on the connection's own thread

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        stop_accepting(self.sock)
        self._thread.join(5)

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            with self.context.wrap_socket(raw, server_side=True) as tls:
                with self._lock:
                    self.handshakes += 1
                command, *args = recv_line(tls).split() or [""]
                if command == "WHO":
                    tls.sendall(f"{self.label} {getattr(self._seen, 'name', None)}\n".encode())
                elif command == "HASH":
                    size, answer = int(args[0]), int(args[1])
                    digest = hashlib.sha256(recv_exactly(tls, size)).hexdigest()
                    tls.sendall(digest.encode() + b"\n")
                    tls.sendall(payload(answer))
                elif command == "HOLD":
                    began = time.monotonic()
                    with contextlib.suppress(OSError):
                        tls.recv(1)
                    self.held.append(time.monotonic() - began)
        except (OSError, ValueError):
            raw.close()


class RawBackend(StartStop):
    """Plain TCP: reads to EOF, then answers the SHA-256 and length of what it read, and closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, name="raw", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        stop_accepting(self.sock)
        self._thread.join(5)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                data = b""
                while chunk := conn.recv(1 << 16):
                    data += chunk
                self.received.append(data)
                conn.sendall(f"{hashlib.sha256(data).hexdigest()} {len(data)}\n".encode())


# ----------------------------------------------------------------------------------- the gateway


class PassthroughThread(StartStop):
    """Passthrough listeners (one per ``PassthroughConfig``) on a uvloop loop in a thread."""

    def __init__(self, config: Config, listeners: dict[str, PassthroughConfig]) -> None:
        self.config = config
        self.listener_configs = listeners
        self.loop = uvloop.new_event_loop()
        self.tables: dict[str, SniRoutes[Service]] = {}
        self.ports: dict[str, int] = {}
        self._servers: list[asyncio.Server] = []
        self._thread = threading.Thread(target=self._run, name="passthrough", daemon=True)
        self._ready = threading.Event()
        self.ctx: WorkerContext = None  # type: ignore[assignment]  # built on the loop

    async def _setup(self) -> None:
        loop = self.loop
        sweeper = Sweeper(loop)
        snapshot: Snapshot = assemble(self.config, None, loop, sweeper)
        ctx = self.ctx = WorkerContext(loop, self.config.server, snapshot, sweeper)
        hello_timeouts = [c.client_hello_timeout for c in self.listener_configs.values()]
        sweeper.interval = sweep_interval(min([ctx.smallest_timeout, *hello_timeouts]))

        def refresh(now: float) -> None:  # ejections end, as the gateway's sweeper hook does
            for service in ctx.snapshot.services.values():
                service.refresh()

        sweeper.hooks.append(refresh)
        for name, listener in self.listener_configs.items():
            self.tables[name] = compile_sni_routes(listener, snapshot.services)

            def factory(
                name: str = name, timeout: float = listener.client_hello_timeout
            ) -> PassthroughConnection:
                return PassthroughConnection(
                    ctx, lambda: self.tables[name], client_hello_timeout=timeout, listener=name
                )

            sock = socket.create_server(("127.0.0.1", 0))
            self.ports[name] = sock.getsockname()[1]
            self._servers.append(await loop.create_server(factory, sock=sock))
        sweeper.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._setup())
        self._ready.set()
        self.loop.run_forever()

    def start(self) -> Self:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the loop's thread, where the data plane's objects live."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def outcomes(self, listener: str) -> dict[tuple[str, str], int]:
        """(service, outcome) -> connections, for one listener."""
        counts = self.call(lambda: dict(self.ctx.stats.passthrough_connections))
        return {(s, o): n for (name, s, o), n in counts.items() if name == listener}

    def wait_for_outcome(self, listener: str, key: tuple[str, str], count: int) -> None:
        """Outcomes are recorded when the connection is gone, a moment after a client sees it."""
        deadline = time.monotonic() + 5
        while self.outcomes(listener).get(key, 0) < count:
            assert time.monotonic() < deadline, self.outcomes(listener)
            time.sleep(0.01)

    async def _shutdown(self) -> None:
        await close_servers(self._servers)
        for connection in list(self.ctx.connections):
            connection.close()  # type: ignore[attr-defined]
        for _ in range(50):
            if not self.ctx.connections:
                break
            await asyncio.sleep(0.02)
        self.ctx.sweeper.stop()
        for service in self.ctx.snapshot.services.values():
            service.retire()
        for server in self._servers:
            await server.wait_closed()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


# -------------------------------------------------------------------------------------- fixtures


class Setup:
    def __init__(self, ca: trustme.CA, gateway: PassthroughThread, backends: dict[str, Any]):
        self.ca = ca
        self.gateway = gateway
        self.backends = backends
        self.port = gateway.ports["main"]

    def client_context(self, *, verify: bool = True) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ca.configure_trust(context)
        if not verify:
            context.check_hostname = False
        return context

    @contextlib.contextmanager
    def tls(
        self, server_name: str | None, port: int | None = None, *, verify: bool = True
    ) -> Iterator[ssl.SSLSocket]:
        context = self.client_context(verify=verify and server_name is not None)
        raw = socket.create_connection(("127.0.0.1", port or self.port), timeout=10)
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            yield tls

    def who(self, server_name: str | None, port: int | None = None) -> tuple[str, str, Any]:
        """(backend label, SNI the backend saw, the DNS names of the certificate the client saw)."""
        with self.tls(server_name, port) as tls:
            tls.sendall(b"WHO\n")
            label, seen = recv_line(tls).split()
            certificate = tls.getpeercert()
            assert certificate is not None
            names = tuple(value for _, value in certificate["subjectAltName"])  # type: ignore[str-unpack]
            return label, seen, names


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    ca = trustme.CA()
    backends: dict[str, Any] = {
        "a": TlsBackend(ca, "a.example.com", "A"),
        "b": TlsBackend(ca, "b.example.com", "B"),
        "wild": TlsBackend(ca, "*.apps.example.com", "W"),
        "fallback": TlsBackend(ca, "fallback.example.com", "D"),
        "rr1": TlsBackend(ca, "rr.example.com", "R1"),
        "rr2": TlsBackend(ca, "rr.example.com", "R2"),
        "live": TlsBackend(ca, "flaky.example.com", "L"),
        "slow": TlsBackend(ca, "slow.example.com", "S"),
        "raw": RawBackend(),
    }
    with contextlib.ExitStack() as stack:
        for backend in backends.values():
            stack.enter_context(backend)

        def at(*names: str) -> list[str]:
            return [f"127.0.0.1:{backends[n].port}" for n in names]

        config = Config.model_validate(
            {
                "services": {
                    "a": {"instances": at("a")},
                    "b": {"instances": at("b")},
                    "wild": {"instances": at("wild")},
                    "fallback": {"instances": at("fallback")},
                    "rr": {"instances": at("rr1", "rr2")},
                    "flaky": {"instances": [f"127.0.0.1:{refused_port()}", *at("live")]},
                    "dead": {"instances": [f"127.0.0.1:{refused_port()}"]},
                    "slow": {"instances": at("slow"), "read_timeout": IDLE_TIMEOUT},
                    "raw": {"instances": at("raw")},
                }
            }
        )
        routes = [
            {"hosts": ["a.example.com"], "service": "a"},
            {"hosts": ["b.example.com"], "service": "b"},
            {"hosts": ["*.apps.example.com"], "service": "wild"},
            {"hosts": ["rr.example.com"], "service": "rr"},
            {"hosts": ["flaky.example.com"], "service": "flaky"},
            {"hosts": ["dead.example.com"], "service": "dead"},
            {"hosts": ["slow.example.com"], "service": "slow"},
            {"hosts": ["raw.example.com"], "service": "raw"},
        ]
        listeners = {
            "main": PassthroughConfig.model_validate(
                {
                    "routes": routes,
                    "default_service": "fallback",
                    "client_hello_timeout": HELLO_TIMEOUT,
                }
            ),
            "strict": PassthroughConfig.model_validate({"routes": routes[:1]}),
        }
        gateway = stack.enter_context(PassthroughThread(config, listeners))
        yield Setup(ca, gateway, backends)


# ----------------------------------------------------------------------------------------- routing


def test_sni_reaches_its_backend_with_the_backends_own_certificate(setup: Setup) -> None:
    assert setup.who("a.example.com") == ("A", "a.example.com", ("a.example.com",))
    assert setup.who("b.example.com") == ("B", "b.example.com", ("b.example.com",))
    setup.gateway.wait_for_outcome("main", ("a", "relayed"), 1)
    setup.gateway.wait_for_outcome("main", ("b", "relayed"), 1)


def test_a_wildcard_route_takes_one_label(setup: Setup) -> None:
    wild = ("*.apps.example.com",)
    assert setup.who("x.apps.example.com") == ("W", "x.apps.example.com", wild)
    assert setup.who("y.apps.example.com") == ("W", "y.apps.example.com", wild)
    # Two labels deeper than the wildcard: not its route, so the default service answers (and the
    # client, expecting a.b.apps.example.com, would refuse its certificate).
    with setup.tls("a.b.apps.example.com", verify=False) as tls:
        tls.sendall(b"WHO\n")
        assert recv_line(tls) == "D a.b.apps.example.com"


def test_no_sni_goes_to_the_default_service(setup: Setup) -> None:
    label, seen, names = setup.who(None)
    assert (label, seen, names) == ("D", "None", ("fallback.example.com",))
    setup.gateway.wait_for_outcome("main", ("fallback", "relayed"), 1)


def test_no_route_and_no_default_closes_the_connection(setup: Setup) -> None:
    strict = setup.gateway.ports["strict"]
    assert setup.who("a.example.com", strict)[0] == "A"  # the one route it has
    for name in ("b.example.com", None):
        with pytest.raises(OSError):  # ssl.SSLError or a reset: the handshake cannot finish
            setup.who(name, strict)
    setup.gateway.wait_for_outcome("strict", ("", "no_route"), 2)


def test_openssl_s_client_through_the_gateway(setup: Setup, tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command")
    ca_file = tmp_path / "ca.pem"
    setup.ca.cert_pem.write_to_path(str(ca_file))
    result = subprocess.run(
        [
            openssl, "s_client", "-connect", f"127.0.0.1:{setup.port}",
            "-servername", "b.example.com", "-verify_hostname", "b.example.com",
            "-CAfile", str(ca_file), "-verify_return_error", "-brief", "-ign_eof",
        ],
        input=b"WHO\n",
        capture_output=True,
        timeout=10,
        check=False,
    )  # fmt: skip
    out, err = result.stdout.decode(), result.stderr.decode()
    assert "B b.example.com" in out, (out, err)
    assert "Verification: OK" in err and "Verified peername: b.example.com" in err, err
    assert "CN = b.example.com" in err, err


def test_the_table_is_read_per_connection(setup: Setup) -> None:
    """A reload swaps the table the routes callable returns; the next connection follows it."""
    gateway = setup.gateway
    kept = gateway.tables["strict"]
    swapped = PassthroughConfig.model_validate(
        {"routes": [{"hosts": ["a.example.com"], "service": "b"}], "default_service": "a"}
    )

    def swap() -> None:
        gateway.tables["strict"] = compile_sni_routes(swapped, gateway.ctx.snapshot.services)

    gateway.call(swap)
    try:
        strict = gateway.ports["strict"]
        with setup.tls("a.example.com", strict, verify=False) as tls:
            tls.sendall(b"WHO\n")
            assert recv_line(tls) == "B a.example.com"
        assert setup.who(None, strict)[0] == "A"
    finally:
        gateway.call(lambda: gateway.tables.update(strict=kept))


# ----------------------------------------------------------------------------------------- refusals


def test_a_plain_http_client_is_closed_at_once(setup: Setup) -> None:
    with socket.create_connection(("127.0.0.1", setup.port), timeout=5) as sock:
        began = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
        assert sock.recv(1024) == b""  # nothing written back: no HTTP answer, no TLS alert
        assert time.monotonic() - began < HELLO_TIMEOUT / 2
    setup.gateway.wait_for_outcome("main", ("", "not_tls"), 1)


def test_a_silent_or_incomplete_client_is_closed_after_the_hello_timeout(setup: Setup) -> None:
    hello = real_hello("a.example.com")
    with (
        socket.create_connection(("127.0.0.1", setup.port), timeout=5) as silent,
        socket.create_connection(("127.0.0.1", setup.port), timeout=5) as partial,
    ):
        began = time.monotonic()
        partial.sendall(hello[: len(hello) // 2])
        assert silent.recv(1) == b""
        assert partial.recv(1) == b""
        elapsed = time.monotonic() - began
    assert HELLO_TIMEOUT * 0.7 < elapsed < HELLO_TIMEOUT * 2.5, elapsed
    setup.gateway.wait_for_outcome("main", ("", "hello_timeout"), 2)


# ------------------------------------------------------------------------------------- balancing


def test_round_robin_across_two_instances(setup: Setup) -> None:
    labels = [setup.who("rr.example.com")[0] for _ in range(6)]
    assert labels == ["R1", "R2"] * 3
    assert (setup.backends["rr1"].handshakes, setup.backends["rr2"].handshakes) == (3, 3)


def test_a_dead_instance_is_skipped_and_ejected(setup: Setup) -> None:
    """The first connection is refused by the dead instance, reported to the outlier detector
    (one refusal ejects) and retried on the live one; later ones go straight there."""
    labels = [setup.who("flaky.example.com")[0] for _ in range(4)]
    assert labels == ["L"] * 4
    assert setup.backends["live"].handshakes == 4

    def state() -> tuple[bool, bool, int]:
        service = setup.gateway.ctx.snapshot.services["flaky"]
        dead, live = service.endpoints
        return service.outlier.is_ejected(dead), service.outlier.is_ejected(live), dead.active

    assert setup.gateway.call(state) == (True, False, 0)
    setup.gateway.wait_for_outcome("main", ("flaky", "relayed"), 4)


def test_a_service_whose_instances_all_refuse_closes_the_connection(setup: Setup) -> None:
    with pytest.raises(OSError):
        setup.who("dead.example.com")
    setup.gateway.wait_for_outcome("main", ("dead", "connect_failed"), 1)

    def counters() -> tuple[int, int]:
        service = setup.gateway.ctx.snapshot.services["dead"]
        return service.open_connections, service.endpoints[0].active

    assert setup.gateway.call(counters) == (0, 0)


# -------------------------------------------------------------------------------------- relaying


def test_five_mebibytes_each_way_arrive_intact_past_a_slow_reader(setup: Setup) -> None:
    size = 5 << 20
    upload, download = payload(size + 1), payload(size)
    with setup.tls("b.example.com") as tls:
        tls.sendall(f"HASH {len(upload)} {size}\n".encode())
        tls.sendall(upload)
        assert recv_line(tls) == hashlib.sha256(upload).hexdigest()
        time.sleep(0.3)  # not reading: the gateway must stop reading the backend

        def buffered() -> int:
            return sum(
                c.transport.get_write_buffer_size()  # type: ignore[attr-defined]
                for c in setup.gateway.ctx.connections
            )

        assert setup.gateway.call(buffered) < 1 << 20  # held back, not buffered whole
        received = recv_exactly(tls, size)
    assert hashlib.sha256(received).digest() == hashlib.sha256(download).digest()
    setup.gateway.wait_for_outcome("main", ("b", "relayed"), 1)
    relayed = setup.gateway.call(lambda: dict(setup.gateway.ctx.stats.passthrough_bytes))
    assert relayed["b", "in"] > size and relayed["b", "out"] > size


def test_bytes_are_relayed_verbatim_and_half_close_is_passed_on(setup: Setup) -> None:
    """The client's bytes (its ClientHello first) reach the instance unchanged; the client's EOF
    reaches it while the way back stays open for the answer."""
    sent = real_hello("raw.example.com") + payload(300_000)
    with socket.create_connection(("127.0.0.1", setup.port), timeout=10) as sock:
        sock.sendall(sent)
        sock.shutdown(socket.SHUT_WR)
        answer = recv_line(sock)
        assert sock.recv(1) == b""  # the instance closed: so does the gateway
    assert answer == f"{hashlib.sha256(sent).hexdigest()} {len(sent)}"
    assert setup.backends["raw"].received[-1] == sent
    setup.gateway.wait_for_outcome("main", ("raw", "relayed"), 1)


def test_an_idle_stream_is_closed_on_both_sides_after_read_timeout(setup: Setup) -> None:
    with setup.tls("slow.example.com") as tls:
        began = time.monotonic()
        tls.sendall(b"HOLD\n")
        assert tls.recv(1) == b""
        elapsed = time.monotonic() - began
    assert IDLE_TIMEOUT * 0.7 < elapsed < IDLE_TIMEOUT * 3, elapsed
    setup.gateway.wait_for_outcome("main", ("slow", "idle_timeout"), 1)
    deadline = time.monotonic() + 2
    while not setup.backends["slow"].held and time.monotonic() < deadline:
        time.sleep(0.01)
    assert setup.backends["slow"].held and setup.backends["slow"].held[0] < IDLE_TIMEOUT * 3


def test_a_drain_closes_waiting_connections_and_refuses_new_ones(setup: Setup) -> None:
    """What ``Gateway.drain`` does with connections that say they are ``idle``: one still waiting
    for its ClientHello is closed at once, a relayed stream is left to finish."""
    gateway, ctx = setup.gateway, setup.gateway.ctx

    def idle_flags() -> list[bool]:
        return sorted(c.idle for c in ctx.connections)  # type: ignore[attr-defined]

    def drain() -> None:
        ctx.draining = True
        for connection in list(ctx.connections):
            if connection.idle:  # type: ignore[attr-defined]
                connection.close()  # type: ignore[attr-defined]

    with (
        setup.tls("a.example.com") as relaying,
        socket.create_connection(("127.0.0.1", setup.port), timeout=5) as waiting,
    ):
        deadline = time.monotonic() + 5
        while gateway.call(idle_flags) != [False, True]:
            assert time.monotonic() < deadline, gateway.call(idle_flags)
            time.sleep(0.01)
        try:
            gateway.call(drain)
            assert waiting.recv(1) == b""
            with socket.create_connection(("127.0.0.1", setup.port), timeout=5) as late:
                assert late.recv(1) == b""  # closed as it is accepted
            relaying.sendall(b"WHO\n")
            assert recv_line(relaying) == "A a.example.com"
        finally:
            gateway.call(lambda: setattr(ctx, "draining", False))
    gateway.wait_for_outcome("main", ("", "draining"), 1)


# ------------------------------------------------------------------------ through the real Gateway


def test_the_gateway_serves_passthrough_and_a_reload_reroutes_it(setup: Setup) -> None:
    """The listener kind from the config (``listeners[].passthrough``), wired by ``Gateway``; a
    reload with the same addresses replaces the SNI table for the next connection."""
    from portway.config.model import Config as FullConfig
    from tests.e2e.gateway import GatewayThread
    from tests.support.admin import admin_get

    def config(service: str) -> dict[str, Any]:
        return {
            "listeners": [
                {
                    "address": "127.0.0.1:0",
                    "passthrough": {"routes": [{"hosts": ["a.example.com"], "service": service}]},
                }
            ],
            "services": {
                "one": {"instances": [f"127.0.0.1:{setup.backends['a'].port}"]},
                "two": {"instances": [f"127.0.0.1:{setup.backends['b'].port}"]},
            },
        }

    with GatewayThread(config("one"), admin=True) as gw:
        assert setup.who("a.example.com", gw.port) == ("A", "a.example.com", ("a.example.com",))
        gw.call(gw.gateway.reload, FullConfig.model_validate(config("two")))
        with setup.tls("a.example.com", gw.port, verify=False) as tls:
            tls.sendall(b"WHO\n")
            assert recv_line(tls) == "B a.example.com"  # the TLS of b, relayed unterminated
        stats = gw.call(lambda: dict(gw.gateway.ctx.stats.passthrough_connections))
        assert stats.get(("listener-0", "one", "relayed")) == 1
        metrics = admin_get(gw.admin_port, "/metrics").text
        assert (
            'portway_passthrough_connections_total{listener="listener-0",outcome="relayed",'
            'service="one"} 1.0'
        ) in metrics
        assert 'portway_passthrough_bytes_total{direction="in",service="one"}' in metrics
        assert gw.drain(2.0) is True


def test_a_passthrough_route_to_a_service_with_tls_settings_is_a_config_error() -> None:
    from portway.config.loader import load_config_text
    from portway.errors import ConfigError

    text = (
        "listeners:\n"
        "  - address: 127.0.0.1:0\n"
        "    passthrough:\n"
        "      routes:\n"
        "        - hosts: [a.example.com]\n"
        "          service: s\n"
        "services:\n"
        "  s:\n"
        "    instances: ['127.0.0.1:1']\n"
        "    tls: {verify: false}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    assert "listeners[0].passthrough.routes[0].service" in str(caught.value)
    assert "passthrough relays the client's own TLS unterminated" in str(caught.value)
