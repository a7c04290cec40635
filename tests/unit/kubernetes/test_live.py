"""The controller thread against the fake API server: debounced builds (a burst of changes, one
build; the controller's own status writes, none), Ingress status written once with the right
address, only by the leader, taken over when the leader goes, and Events for invalid Ingresses,
posted once, while the other Ingresses keep serving."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from portway.kubernetes.status import Publish
from tests.support.fake_apiserver import FakeApiServer
from tests.unit.kubernetes.cluster_support import Harness, eventually
from tests.unit.kubernetes.manifests import (
    Doc,
    endpoint,
    endpoint_slice,
    ingress,
    path,
    rule,
    service,
)

STATUS = "/apis/networking.k8s.io/v1/namespaces/default/ingresses/{}/status"
EVENTS = "/api/v1/namespaces/default/events"


def site(name: str, path_value: str = "/", path_type: str = "Prefix", **extra: Any) -> Doc:
    return ingress(name, rule(f"{name}.example.com", path(path_value, "web", path_type)), **extra)


def web(*addresses: str) -> list[Doc]:
    return [service("web"), endpoint_slice("web", *(endpoint(a) for a in addresses),
                                           ports=[{"name": "", "port": 8080}])]  # fmt: skip


def routes(harness: Harness) -> set[str]:
    config = harness.controller.config
    return {route.name for route in config.routes} if config is not None else set()


def instances(harness: Harness) -> list[str]:
    config = harness.controller.config
    assert config is not None
    return [i.address for i in config.services["default.web.80"].instances]


def address(fake: FakeApiServer, name: str) -> list[dict[str, str]]:
    obj = fake.get("Ingress", "default", name)
    assert obj is not None
    return list(((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])


def test_a_burst_of_changes_makes_one_build_and_routes_follow_the_cluster(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    fake.apply(site("shop"), *web("127.0.0.1"))
    with Harness(fake, tmp_path, debounce=0.3, max_delay=2.0) as harness:
        assert harness.controller.builds == 1 and routes(harness) == {"default/shop/0/0"}
        assert instances(harness) == ["127.0.0.1:8080"]
        for count in range(2, 12):  # ten slice updates in quick succession: one rollout
            addresses = [f"127.0.0.{i}" for i in range(1, count)]
            fake.apply(endpoint_slice("web", *(endpoint(a) for a in addresses),
                                      ports=[{"name": "", "port": 8080}]))  # fmt: skip
        eventually(lambda: harness.published == 1)
        assert harness.controller.builds == 2
        assert instances(harness) == [f"127.0.0.{i}:8080" for i in range(1, 11)]

        fake.apply(site("blog"))
        eventually(lambda: "default/blog/0/0" in routes(harness))
        fake.delete("Ingress", "default", "shop")
        eventually(lambda: routes(harness) == {"default/blog/0/0"})
        assert harness.controller.builds == harness.published + 1 == 4

        # A change to nothing a build reads (an Ingress's status) makes no build.
        blog = fake.get("Ingress", "default", "blog")
        assert blog is not None
        fake.apply({**blog, "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.99"}]}}})
        time.sleep(0.6)
        assert harness.controller.builds == 4


def test_status_is_written_once_with_the_published_address(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    other_class = site("theirs", cls="nginx")
    fake.apply(site("shop"), other_class, *web("127.0.0.1"))
    publish = Publish(("127.0.0.7", "lb.example.test"))
    with Harness(fake, tmp_path, publish=publish) as harness:
        eventually(lambda: address(fake, "shop") != [])
        assert address(fake, "shop") == [{"ip": "127.0.0.7"}, {"hostname": "lb.example.test"}]
        fake.apply(service("other"), site("blog"))  # more builds and write-backs
        eventually(lambda: address(fake, "blog") != [])
        time.sleep(0.3)
        assert len(fake.requests("PATCH", STATUS.format("shop"))) == 1  # not rewritten
        assert fake.requests("PATCH", STATUS.format("theirs")) == []  # not ours
        patch = fake.requests("PATCH", STATUS.format("shop"))[0]
        assert patch.body == {"status": {"loadBalancer": {"ingress": [
            {"ip": "127.0.0.7"}, {"hostname": "lb.example.test"}]}}}  # fmt: skip

        # Someone else overwrites it: written again. Refused later: emptied.
        shop = fake.get("Ingress", "default", "shop")
        assert shop is not None
        fake.apply({**shop, "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.66"}]}}})
        eventually(lambda: address(fake, "shop") == [{"ip": "127.0.0.7"},
                                                     {"hostname": "lb.example.test"}])  # fmt: skip
        fake.apply(site("blog", cls="nginx"))
        eventually(lambda: address(fake, "blog") == [])
        status = harness.live.status
        assert status is not None
        eventually(lambda: status.writes == 4)  # shop, blog, shop again, blog emptied


def test_the_address_of_the_publish_service(fake: FakeApiServer, tmp_path: Path) -> None:
    portway = service("portway", namespace="portway-system", type="LoadBalancer",
                      clusterIP="127.0.0.20")  # fmt: skip
    portway["status"] = {"loadBalancer": {"ingress": [{"hostname": "lb.example.test"}]}}
    internal = service("internal", namespace="portway-system", clusterIP="127.0.0.21")
    fake.apply(site("shop"), portway, internal)
    with Harness(fake, tmp_path, publish=Publish(service=("portway-system", "portway"))):
        eventually(lambda: address(fake, "shop") == [{"hostname": "lb.example.test"}])
    with Harness(fake, tmp_path, "token-b", publish=Publish(service=("portway-system",
                                                                     "internal"))):  # fmt: skip
        eventually(lambda: address(fake, "shop") == [{"ip": "127.0.0.21"}])


def test_only_the_leader_writes_status_and_another_replica_takes_over(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    fake.apply(site("shop"), *web("127.0.0.1"))
    publish = Publish(("127.0.0.7",))
    a = Harness(fake, tmp_path, "token-a", publish=publish).__enter__()
    b = Harness(fake, tmp_path, "token-b", publish=publish).__enter__()
    try:
        eventually(lambda: a.live.leading or b.live.leading)
        leader, follower = (a, "token-a"), (b, "token-b")
        if b.live.leading:
            leader, follower = follower, leader
        fake.apply(site("second"))
        eventually(lambda: address(fake, "second") != [])
        assert fake.requests("PATCH", token=follower[1]) == []
        assert len(fake.requests("PATCH", STATUS.format("second"), token=leader[1])) == 1

        # The leader loses the Lease (another holder appears): it stops writing at once.
        lease = fake.get("Lease", "portway-system", "portway-leader")
        assert lease is not None
        lease["spec"]["holderIdentity"] = "usurper"
        fake.apply(lease)
        eventually(lambda: not a.live.leading and not b.live.leading)
        fake.apply(site("third"))
        time.sleep(0.5)
        assert address(fake, "third") == []  # nobody leads: nobody writes

        # The usurper never renews: after the lease duration one replica takes over; then the
        # leader stops (releasing the Lease) and the other takes over at once.
        eventually(lambda: address(fake, "third") != [], timeout=5.0)
        first = a if a.live.leading else b
        second = b if first is a else a
        first.__exit__()
        eventually(lambda: second.live.leading, timeout=2.0)
        fake.apply(site("fourth"))
        eventually(lambda: address(fake, "fourth") == [{"ip": "127.0.0.7"}])
        token = "token-b" if second is b else "token-a"
        assert len(fake.requests("PATCH", STATUS.format("fourth"), token=token)) == 1
    finally:
        for harness in (a, b):
            harness.live.stop()


def test_an_invalid_ingress_gets_one_event_and_the_others_keep_serving(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    fake.apply(site("shop"), site("blog"), *web("127.0.0.1"))
    with Harness(fake, tmp_path) as harness:
        eventually(lambda: harness.live.leading)
        fake.apply(site("bad", "/v1/(", "ImplementationSpecific"))  # never valid
        fake.apply(site("blog", "/x", "Bogus"))  # was valid: its last version keeps serving
        eventually(lambda: len(fake.requests("POST", EVENTS)) == 2)
        events = {e.body["involvedObject"]["name"]: e.body for e in fake.requests("POST", EVENTS)}
        bad = events["bad"]
        created = fake.get("Ingress", "default", "bad")
        assert created is not None
        assert bad["reason"] == "InvalidIngress" and bad["type"] == "Warning"
        assert bad["involvedObject"]["uid"] == created["metadata"]["uid"]
        assert bad["involvedObject"]["kind"] == "Ingress"
        assert bad["message"].startswith("spec.rules[0].http.paths[0].path: invalid regular "
                                         "expression")  # fmt: skip
        assert bad["source"] == {"component": "portway-controller"}
        assert events["blog"]["message"] == ('spec.rules[0].http.paths[0].pathType: Unsupported '
                                             'value: "Bogus": supported: "Exact", "Prefix", '
                                             '"ImplementationSpecific" (its last valid version '
                                             'keeps serving)')  # fmt: skip
        assert routes(harness) == {"default/shop/0/0", "default/blog/0/0"}

        fake.apply(service("other"), site("more"))  # rebuilds: no new Event
        eventually(lambda: "default/more/0/0" in routes(harness))
        time.sleep(0.3)
        assert len(fake.requests("POST", EVENTS)) == 2
        fake.apply(site("bad"))  # fixed: served; broken again: a new Event
        eventually(lambda: "default/bad/0/0" in routes(harness))
        fake.apply(site("bad", "/v2/(", "ImplementationSpecific"))
        eventually(lambda: len(fake.requests("POST", EVENTS)) == 3)
