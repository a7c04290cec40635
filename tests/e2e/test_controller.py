"""``portway controller`` as it runs in a cluster, against the fake API server: a supervisor with
two workers serving real loopback backends named in EndpointSlices. Ingresses added and deleted
in the "cluster" appear and disappear without a restart; the leader writes their status; an
invalid one gets one Event while the others serve; a dropped watch and a 410 Gone in the middle
of traffic end in a re-list whose result is served, with no failed request; a rolling update
(new pods ready, old ones terminating, then gone) under load loses no request."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.backends import Backend
from tests.support.client import request
from tests.support.fake_apiserver import FakeApiServer
from tests.support.load import Load, errors, tally
from tests.support.processes import PortwayProcess, free_port
from tests.unit.kubernetes.manifests import (
    Doc,
    endpoint,
    endpoint_slice,
    ingress,
    path,
    rule,
    service,
)

EVENTS = "/api/v1/namespaces/default/events"


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


@contextlib.contextmanager
def controller(fake: FakeApiServer, folder: Path, *extra: str) -> Iterator[PortwayProcess]:
    """``python -m portway controller`` in its own process group, stopped with the group."""
    port = free_port()
    argv = [
        sys.executable, "-m", "portway", "controller",
        "--kubeconfig", str(fake.kubeconfig(folder / "kubeconfig")),
        "--listen", f"127.0.0.1:{port}", "--workers", "2", "--admin", "none",
        "--publish-address", "127.0.0.9", "--debounce", "0.1",
        "--lease-duration", "1.5", "--renew-deadline", "1", "--retry-period", "0.2", *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            cwd=folder, start_new_session=True)  # fmt: skip
    gateway = PortwayProcess(proc, folder)
    try:
        gateway.wait_ready()
        yield gateway
    finally:
        gateway.stop()


def backend_objects(name: str, backend: Backend, slice_name: str | None = None,
                    **conditions: bool) -> list[Doc]:  # fmt: skip
    """A Service and an EndpointSlice naming ``backend`` (127.0.0.1, its own port)."""
    return [service(name, ports=[{"name": "http", "port": 80}]),
            endpoint_slice(name, endpoint("127.0.0.1", **conditions), name=slice_name,
                           ports=[{"name": "http", "port": backend.port}])]  # fmt: skip


def answered_by(gateway: PortwayProcess, host: str, target: str = "/") -> str | int:
    response = request(gateway.port, "GET", target, host=host)
    return response.json()["backend"] if response.status == 200 else response.status


def eventually(check: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(0.02)


def status_of(fake: FakeApiServer, name: str) -> object:
    obj = fake.get("Ingress", "default", name) or {}
    return (obj.get("status") or {}).get("loadBalancer", {}).get("ingress")


def started(*names: str) -> list[Backend]:
    return [Backend(name).start() for name in names]


def stopped(backends: Sequence[Backend]) -> None:
    for backend in backends:
        backend.stop()


def test_the_controller_serves_the_cluster_and_follows_it(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    backends = started("shop", "blog", "site")
    shop, blog, site = backends
    try:
        fake.apply(*backend_objects("shop", shop), *backend_objects("blog", blog),
                   *backend_objects("site", site),
                   ingress("shop", rule("shop.example.com", path("/", "shop", port="http"))),
                   ingress("site", rule(None, path("/", "site", port="http"))))  # fmt: skip
        with controller(fake, tmp_path) as gateway:
            pids = gateway.pids()
            assert answered_by(gateway, "shop.example.com") == "shop"
            assert answered_by(gateway, "blog.example.com") == "site"  # the host-less rule

            fake.apply(ingress("blog", rule("blog.example.com", path("/", "blog", port="http"))))
            eventually(lambda: answered_by(gateway, "blog.example.com") == "blog")
            fake.delete("Ingress", "default", "shop")
            eventually(lambda: answered_by(gateway, "shop.example.com") == "site")
            for _ in range(4):  # both workers have it
                assert answered_by(gateway, "blog.example.com") == "blog"
                assert answered_by(gateway, "shop.example.com") == "site"

            # The leader wrote the address, once per Ingress.
            eventually(lambda: status_of(fake, "blog") == [{"ip": "127.0.0.9"}])
            assert status_of(fake, "site") == [{"ip": "127.0.0.9"}]
            assert len(fake.requests("PATCH", "/ingresses/blog/status")) == 1

            # An invalid Ingress: one Event, reported in the log; the others keep serving.
            fake.apply(ingress("bad", rule("bad.example.com",
                                           path("/(", "blog", "ImplementationSpecific"))))  # fmt: skip
            eventually(lambda: fake.requests("POST", EVENTS))
            gateway.wait_for_stderr(r"error: Ingress default/bad spec.rules\[0\].http.paths\[0\]"
                                    r".path: invalid regular expression")  # fmt: skip
            (event,) = fake.requests("POST", EVENTS)
            assert event.body["reason"] == "InvalidIngress"
            assert event.body["involvedObject"]["name"] == "bad"
            assert answered_by(gateway, "blog.example.com") == "blog"

            # Under traffic, the Ingress watch is cut and its version expires while the
            # controller is away: it lists again and serves what the cluster has now.
            with Load(gateway.port, clients=2) as load:
                load.wait_for(50)
                with fake.held("Ingress"):
                    fake.drop_watches("Ingress")
                    fake.apply(ingress("late", rule("late.example.com",
                                                    path("/", "shop", port="http"))))  # fmt: skip
                    fake.delete("Ingress", "default", "bad")
                    fake.expire("Ingress")
                eventually(lambda: answered_by(gateway, "late.example.com") == "shop")
                load.wait_for(load.count() + 50)
            assert errors(load.outcomes) == [], tally(load.outcomes)
            assert len(fake.requests("GET", "/ingresses", limit="500")) == 2  # a re-list
            gateway.wait_for_stderr(r"Ingress: 410 too old resource version.*listing again")
            assert len(fake.requests("POST", EVENTS)) == 1  # posted once, for good
            assert gateway.pids() == pids  # no restart
            assert gateway.stop() == 0
        lease = fake.get("Lease", "portway-system", "portway-leader")
        assert lease is not None and not lease["spec"].get("holderIdentity")  # released
    finally:
        stopped(backends)


def test_a_rolling_update_under_load_fails_no_request(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    """A Deployment's rollout, maxSurge 1 and maxUnavailable 0: a new pod turns ready, an old
    one turns terminating (not ready, not serving) and exits at once, with no preStop delay,
    while four clients send requests back to back. A request the gateway sends to an old pod
    in the moment before it has the new slices is refused (or its idle connection reset) and
    retried on another endpoint; from the reload on, the old pod gets none."""
    backends = started("old-1", "old-2", "new-1", "new-2")
    pods = {b.name: b for b in backends}
    fake.apply(*backend_objects("app", pods["old-1"], "app-old-1"),
               *backend_objects("app", pods["old-2"], "app-old-2"),
               ingress("app", rule(None, path("/", "app", port="http"))))  # fmt: skip
    try:
        with controller(fake, tmp_path) as gateway, Load(gateway.port, clients=4) as load:
            load.wait_for(200)
            for old, new in (("old-1", "new-1"), ("old-2", "new-2")):
                fake.apply(*backend_objects("app", pods[new], f"app-{new}"))
                eventually(lambda new=new: any(o.backend == new for o in load.outcomes[-50:]))
                fake.apply(*backend_objects("app", pods[old], f"app-{old}", ready=False,
                                            serving=False, terminating=True))  # fmt: skip
                pods[old].stop()  # the pod exits: its port refuses from now on
                load.wait_for(load.count() + 200)
            fake.delete("EndpointSlice", "default", "app-old-1")
            fake.delete("EndpointSlice", "default", "app-old-2")
            gone = time.monotonic()
            time.sleep(0.5)
            load.wait_for(load.count() + 200)
        outcomes = load.outcomes
        assert len(outcomes) >= 800
        assert errors(outcomes) == [], tally(outcomes)
        seen = {o.backend for o in outcomes}
        assert seen == {"old-1", "old-2", "new-1", "new-2"}
        assert {o.backend for o in load.between(gone + 0.3)} == {"new-1", "new-2"}
    finally:
        stopped(backends)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kubeconfig", "/nonexistent/kubeconfig"], "cannot configure the API client: "
         "Configuration file /nonexistent/kubeconfig not found"),
        (["--lease-duration", "5", "--renew-deadline", "10"], "leader election needs 0 < retry "
         "period < renew deadline < lease duration"),
        (["--publish-service", "portway"], "expected NAMESPACE/NAME, got 'portway'"),
        (["--admin", "0.0.0.0:9901"], "set admin.token"),
    ],
)
def test_bad_flags_exit_2_saying_why_before_serving(args: list[str], message: str) -> None:
    command = [sys.executable, "-m", "portway", "controller", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False,
                          env={**os.environ, "KUBERNETES_SERVICE_HOST": ""})  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
