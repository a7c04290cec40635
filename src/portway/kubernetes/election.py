"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's ``leaderelection`` does it.

Every replica serves traffic; only the leader writes (Ingress status, Events), so N replicas do
not fight over one field. Every ``retry_period`` each replica reads the Lease:

* nobody holds it (no Lease, an empty ``holderIdentity``), or the holder's record has not changed
  for ``lease_duration`` **as this replica observed it** (its own monotonic clock from the moment
  the record last changed, never the holder's ``renewTime``, so clock skew between nodes does not
  matter): take it;
* this replica holds it: renew it (``renewTime`` now);
* another replica holds it and is live: follow.

Taking and renewing are a ``PUT`` carrying the ``resourceVersion`` read: if another replica wrote
in between, the API server answers 409 Conflict and this replica did not get it (optimistic
concurrency; two replicas cannot both win). A leader that sees another holder steps down at once;
one that cannot renew (the API is unreachable) steps down when ``renew_deadline`` has passed since
its last renewal, before ``lease_duration`` lets another replica take over. A leader that stops
releases the Lease (empty holder, 1 s duration) so that another takes over at its next try.
Defaults are client-go's and ingress-nginx's: 15 s, 10 s, 2 s.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

log = logging.getLogger("portway.kubernetes")


@dataclass(frozen=True, slots=True)
class ElectionConfig:
    namespace: str
    name: str  # --election-id
    identity: str  # this replica's, unique among them
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class LeaderElector:
    """Runs the election (``run``) and says whether this replica leads (``leading``)."""

    def __init__(
        self,
        client: AsyncClient,
        config: ElectionConfig,
        on_change: Callable[[bool], None] = lambda leading: None,
    ) -> None:
        self.client, self.config, self.on_change = client, config, on_change
        self.leading = False
        self.transitions = 0  # times this replica became leader
        self._renewed = 0.0  # monotonic time of the last successful take or renewal
        self._observed: tuple[str | None, str | None] | None = None  # holder, renewTime
        self._observed_at = 0.0

    async def run(self) -> None:
        """Try to take or renew every ``retry_period`` until cancelled."""
        while True:
            await self.step()
            await asyncio.sleep(self.config.retry_period)

    async def step(self) -> None:
        try:
            held = await self._take_or_renew()
        except Exception as exc:  # unknown: a leader keeps leading until its renew deadline
            expected = isinstance(exc, ApiError | httpx2.HTTPError | OSError)
            log.log(logging.WARNING if expected else logging.ERROR,
                    "leader election (Lease %s/%s): %s", self.config.namespace,
                    self.config.name, exc, exc_info=not expected)  # fmt: skip
            held = None
        now = time.monotonic()
        if held:
            self._renewed = now
            self._set(True)
        elif held is False or now - self._renewed > self.config.renew_deadline:
            self._set(False)

    async def release(self) -> None:
        """Give the Lease up if this replica holds it, so that another need not wait it out."""
        if not self.leading:
            return
        self._set(False)
        try:
            lease = await self.client.get(Lease, self.config.name, namespace=self.config.namespace)
            spec = lease.spec or LeaseSpec()
            if spec.holderIdentity != self.config.identity:
                return
            now = _now()
            lease.spec = LeaseSpec(holderIdentity=None, leaseDurationSeconds=1, acquireTime=now,
                                   renewTime=now, leaseTransitions=spec.leaseTransitions)  # fmt: skip
            await self.client.replace(lease)
            log.info("leader election: released Lease %s/%s", self.config.namespace,
                     self.config.name)  # fmt: skip
        except (ApiError, httpx2.HTTPError) as exc:
            log.warning("leader election: could not release the Lease: %s", exc)

    def _set(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        if leading:
            self.transitions += 1
        log.info("leader election: %s %s (Lease %s/%s)", self.config.identity,
                 "is the leader" if leading else "is not the leader any more",
                 self.config.namespace, self.config.name)  # fmt: skip
        self.on_change(leading)

    async def _take_or_renew(self) -> bool:
        config = self.config
        duration = max(1, round(config.lease_duration))
        try:
            lease = await self.client.get(Lease, config.name, namespace=config.namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            now = _now()
            spec = LeaseSpec(holderIdentity=config.identity, leaseDurationSeconds=duration,
                             acquireTime=now, renewTime=now, leaseTransitions=0)  # fmt: skip
            meta = ObjectMeta(name=config.name, namespace=config.namespace)
            return await self._write(self.client.create(Lease(metadata=meta, spec=spec)))
        spec = lease.spec or LeaseSpec()
        holder = spec.holderIdentity or None
        record = (holder, spec.renewTime.isoformat() if spec.renewTime else None)
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        if holder is not None and holder != config.identity:
            held_for = float(spec.leaseDurationSeconds or duration)
            if time.monotonic() - self._observed_at < held_for:
                return False  # another replica leads, and was seen renewing
        now = _now()
        ours = holder == config.identity
        lease.spec = LeaseSpec(
            holderIdentity=config.identity,
            leaseDurationSeconds=duration,
            acquireTime=spec.acquireTime if ours and spec.acquireTime else now,
            renewTime=now,
            leaseTransitions=(spec.leaseTransitions or 0) + (0 if ours or holder is None else 1),
        )
        return await self._write(self.client.replace(lease))

    async def _write(self, write: Awaitable[Lease]) -> bool:
        try:
            await write
        except ApiError as exc:
            if exc.status.code in (409, 422):  # someone else wrote first: not ours this time
                return False
            raise
        return True


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
