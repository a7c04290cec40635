"""Leader election on a Lease held by the fake API server: one leader among candidates, optimistic
concurrency (a stale write gets 409 and loses), release on stop, take-over once the holder has not
been seen renewing for the lease duration (and not before), a leader that sees another holder or
cannot renew steps down."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from portway.kubernetes.api import Api
from portway.kubernetes.election import ElectionConfig, LeaderElector
from tests.support.fake_apiserver import FakeApiServer
from tests.unit.kubernetes.cluster_support import api_config, run, until

LEASE = "/apis/coordination.k8s.io/v1/namespaces/portway-system/leases"


def elector(api: Api, identity: str, duration: float = 1.0) -> LeaderElector:
    config = ElectionConfig("portway-system", "portway-leader", identity, lease_duration=duration,
                            renew_deadline=duration * 2 / 3, retry_period=0.05)  # fmt: skip
    return LeaderElector(api.client, config)


def holder(fake: FakeApiServer) -> str | None:
    lease = fake.get("Lease", "portway-system", "portway-leader")
    return lease["spec"].get("holderIdentity") if lease else None


def test_one_candidate_leads_and_renews_the_other_follows(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        api_a, api_b = Api(api_config(fake, tmp_path)), Api(api_config(fake, tmp_path, "token-b"))
        a, b = elector(api_a, "a"), elector(api_b, "b")
        await a.step()
        await b.step()
        assert (a.leading, b.leading, holder(fake)) == (True, False, "a")
        first = fake.get("Lease", "portway-system", "portway-leader")
        assert first is not None
        await asyncio.sleep(0.05)
        for _ in range(3):
            await a.step()
            await b.step()
        renewed = fake.get("Lease", "portway-system", "portway-leader")
        assert renewed is not None and renewed["spec"]["renewTime"] > first["spec"]["renewTime"]
        assert renewed["spec"]["acquireTime"] == first["spec"]["acquireTime"]
        assert renewed["spec"]["leaseDurationSeconds"] == 1
        assert (a.leading, b.leading) == (True, False)
        await api_a.aclose()
        await api_b.aclose()

    run(scenario)
    assert not fake.requests("PUT", LEASE, token="token-b")  # b never wrote: a was live
    assert len(fake.requests("POST", LEASE, token="token-a")) == 1


def test_a_write_with_a_stale_version_gets_409_and_does_not_lead(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    fake.apply({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "portway-leader", "namespace": "portway-system"},
                "spec": {"holderIdentity": None}})  # fmt: skip

    async def scenario() -> None:
        apis = [Api(api_config(fake, tmp_path, t)) for t in ("token-a", "token-b")]
        candidates = [elector(apis[0], "a"), elector(apis[1], "b")]
        await asyncio.gather(*(c.step() for c in candidates))  # both read, both write
        assert sum(c.leading for c in candidates) == 1
        assert holder(fake) == next(c.config.identity for c in candidates if c.leading)
        for api in apis:
            await api.aclose()

    run(scenario)
    puts = fake.requests("PUT", LEASE)
    assert len(puts) == 2  # both tried; the second carried the version the first replaced


def test_release_lets_the_other_take_over_at_its_next_try(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        api_a, api_b = Api(api_config(fake, tmp_path)), Api(api_config(fake, tmp_path, "token-b"))
        a, b = elector(api_a, "a", duration=30.0), elector(api_b, "b", duration=30.0)
        await a.step()
        await b.step()
        await a.release()
        assert not a.leading and holder(fake) is None
        await b.step()  # no need to wait 30 s
        assert b.leading and holder(fake) == "b"
        lease = fake.get("Lease", "portway-system", "portway-leader")
        assert lease is not None and lease["spec"]["leaseTransitions"] == 0
        await api_a.aclose()
        await api_b.aclose()

    run(scenario)


def test_a_holder_not_seen_renewing_is_replaced_after_the_lease_duration_not_before(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    # A holder that died: its renewTime is fresh by its own clock, but it never renews again.
    fake.apply({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "portway-leader", "namespace": "portway-system"},
                "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 1,
                         "renewTime": "2099-01-01T00:00:00.000000Z", "leaseTransitions": 4}})  # fmt: skip

    async def driven() -> float:
        api = Api(api_config(fake, tmp_path))
        candidate = elector(api, "a")
        task = asyncio.create_task(candidate.run())
        started = time.monotonic()
        await until(lambda: candidate.leading, timeout=3.0)
        took = time.monotonic() - started
        task.cancel()
        await api.aclose()
        return took

    took = run(driven)
    assert 1.0 <= took < 2.0  # measured from when it first saw the record, on its own clock
    lease = fake.get("Lease", "portway-system", "portway-leader")
    assert lease is not None and lease["spec"]["leaseTransitions"] == 5


def test_a_leader_that_sees_another_holder_steps_down_at_once(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        api = Api(api_config(fake, tmp_path))
        changes: list[bool] = []
        candidate = elector(api, "a", duration=30.0)
        candidate.on_change = changes.append
        await candidate.step()
        lease = fake.get("Lease", "portway-system", "portway-leader")
        assert lease is not None
        lease["spec"]["holderIdentity"] = "usurper"  # e.g. after a partition, someone took it
        fake.apply(lease)
        await candidate.step()
        assert changes == [True, False] and not candidate.leading
        await api.aclose()

    run(scenario)


def test_a_leader_that_cannot_renew_steps_down_after_the_renew_deadline(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    async def scenario() -> float:
        api = Api(api_config(fake, tmp_path))
        candidate = elector(api, "a", duration=1.5)  # renew deadline 1 s
        await candidate.step()
        assert candidate.leading
        fake.stop()  # the API server is gone: every try fails
        started = time.monotonic()
        task = asyncio.create_task(candidate.run())
        await until(lambda: not candidate.leading, timeout=3.0)
        task.cancel()
        await api.aclose()
        return time.monotonic() - started

    assert 0.8 <= run(scenario) < 1.6
