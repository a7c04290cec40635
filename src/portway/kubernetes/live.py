"""``portway controller``'s Kubernetes side: a thread with its own event loop in the supervisor.

The thread runs one ``Informer`` per kind, rebuilds when they report changes, and, when this
replica leads, writes Ingress status and Events. Its result is what manifest mode's watcher
produces: a config published as JSON and a SIGHUP to its own process, which the supervisor
handles as any reload (it asks ``ClusterController.load``, which returns the published config,
and tells the workers, which read the JSON). So the data plane and the supervisor are reused as
they are.

Why a thread of the supervisor rather than a process of its own: the supervisor's loader must
return the config the controller built, and its reaper owns every child (an extra process would
be reaped without being restarted); a thread shares the built config by reference and lives and
dies with the process Kubernetes probes. The supervisor's loop is a ``sigtimedwait`` that sleeps,
so the thread has the CPU to itself.

**Debounce.** A change (any watch event, a re-list) marks the state dirty; a build runs once no
change has come for ``debounce`` seconds, or ``max_delay`` after the first change of a burst, so a
rollout touching fifty EndpointSlices makes one build and one reload, and constant churn still
applies within ``max_delay``.

**Signals.** As in manifest mode (``watch.py``), the supervisor's signals must stay blocked in this
thread, or one delivered to it would be lost to ``sigtimedwait``. ``start`` blocks them in the
caller (the main thread, before the supervisor runs) so the thread inherits the mask; until the
first build ``wait_ready`` waits for it while still honouring SIGTERM and SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from lightkube.config.kubeconfig import SingleConfig

from portway.config.model import Config
from portway.errors import ConfigError
from portway.kubernetes.api import INGRESS, KINDS, Api
from portway.kubernetes.cluster import ClusterController
from portway.kubernetes.election import ElectionConfig, LeaderElector
from portway.kubernetes.informer import Backoff, Informer
from portway.kubernetes.status import EventRecorder, Publish, StatusWriter
from portway.kubernetes.watch import SUPERVISOR_SIGNALS, reload_self

log = logging.getLogger("portway.kubernetes")


def default_identity() -> str:
    """The pod's name (its hostname) and a random suffix: unique even for two in one pod."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{secrets.token_hex(4)}"


@dataclass(frozen=True, slots=True)
class LiveOptions:
    namespace: str | None = None  # None: every namespace
    publish: Publish = field(default_factory=Publish)
    election_id: str = "portway-leader"
    election_namespace: str | None = None  # None: the configuration's (the pod's) namespace
    identity: str = field(default_factory=default_identity)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    debounce: float = 0.2
    max_delay: float = 1.0
    resync: float = 30.0  # status is checked this often while leading, changes or not
    backoff: Backoff = field(default_factory=Backoff)
    watch_timeout: int = 300

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs 0 < retry period < renew deadline < lease "
                             f"duration, got {self.retry_period}, {self.renew_deadline}, "
                             f"{self.lease_duration}")  # fmt: skip
        if self.debounce < 0 or self.max_delay < self.debounce:
            raise ValueError(f"debounce must be between 0 and {self.max_delay}s")


class LiveController:
    """The controller thread (module docstring). ``on_publish`` runs after each build that
    changed the config: SIGHUP to this process by default."""

    def __init__(
        self,
        controller: ClusterController,
        config: SingleConfig,
        options: LiveOptions,
        on_publish: Callable[[], None] = reload_self,
    ) -> None:
        self.controller, self.config, self.options = controller, config, options
        self.on_publish = on_publish
        self.informers: list[Informer] = []
        self.elector: LeaderElector | None = None
        self.status: StatusWriter | None = None
        self.events: EventRecorder | None = None
        self.built = threading.Event()  # the first build is done
        self.finished = threading.Event()  # the thread has ended
        self._stop_requested = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._dirty: asyncio.Event | None = None
        self._writing = asyncio.Lock()
        self._thread = threading.Thread(target=self._run, name="kubernetes-controller", daemon=True)

    # ---- the main thread's side -----------------------------------------------------------------

    def start(self, block_signals: bool = True) -> None:
        """Start the thread; with ``block_signals`` block the supervisor's signals first."""
        if block_signals:
            signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> Config | None:
        """The first build's config; None if SIGTERM or SIGINT came first (they are blocked:
        see the module docstring), the thread died, or ``timeout`` passed."""
        waited = 0.0
        while not self.built.wait(0.05):
            if signal.sigtimedwait({signal.SIGTERM, signal.SIGINT}, 0) is not None:
                return None
            waited += 0.05
            if self.finished.is_set() or (timeout is not None and waited >= timeout):
                return None
        return self.controller.load()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread: informers stop, the leader releases its Lease."""
        self._stop_requested.set()
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                loop.call_soon_threadsafe(stopping.set)
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def leading(self) -> bool:
        return self.elector is not None and self.elector.leading

    # ---- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)  # inherited already; sure
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(loop))
        except Exception:
            log.exception("the Kubernetes controller stopped: the config no longer follows the "
                          "cluster")  # fmt: skip
        finally:
            loop.close()
            self.finished.set()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stopping, self._dirty = asyncio.Event(), asyncio.Event()
        self._loop = loop
        if self._stop_requested.is_set():
            return
        options = self.options
        api = Api(self.config)
        election = ElectionConfig(
            namespace=options.election_namespace or api.namespace,
            name=options.election_id,
            identity=options.identity,
            lease_duration=options.lease_duration,
            renew_deadline=options.renew_deadline,
            retry_period=options.retry_period,
        )
        self.elector = LeaderElector(api.client, election, self._leadership)
        self.status = StatusWriter(api.client, options.publish)
        self.events = EventRecorder(api.client, options.identity)
        self.informers = [
            Informer(api.http, kind, options.namespace, self._dirty.set, options.backoff,
                     options.watch_timeout)
            for kind in KINDS
        ]  # fmt: skip
        where = f"namespace {options.namespace}" if options.namespace else "all namespaces"
        log.info("controller: watching %s in %s through %s (identity %s)",
                 ", ".join(k.name for k in KINDS), where, api.server, options.identity)  # fmt: skip
        tasks = [asyncio.create_task(informer.run()) for informer in self.informers]
        try:
            while not all(i.synced.is_set() for i in self.informers):  # every kind listed
                if self._stopping.is_set():
                    return
                await asyncio.sleep(0.02)
            await self._tick()
            self.built.set()
            tasks += [asyncio.create_task(self.elector.run()),
                      asyncio.create_task(self._debounced()),
                      asyncio.create_task(self._resync())]  # fmt: skip
            await self._stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.elector.release(), 2.0)
            await api.aclose()

    async def _debounced(self) -> None:
        assert self._dirty is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._dirty.wait()
            deadline = loop.time() + self.options.max_delay
            while True:  # quiet for `debounce`, but no later than `max_delay` after the first
                self._dirty.clear()
                quiet = min(self.options.debounce, deadline - loop.time())
                if quiet <= 0:
                    break
                try:
                    await asyncio.wait_for(self._dirty.wait(), quiet)
                except TimeoutError:
                    break
            self._dirty.clear()
            await self._tick()

    async def _tick(self) -> None:
        """Rebuild from the stores; publish when the config changed; write back."""
        raw = [obj for informer in self.informers for obj in informer.objects.values()]
        try:
            config = self.controller.rebuild(raw)
        except ConfigError as exc:
            log.error("cluster: no config can be made, the running one keeps serving:\n%s", exc)
            config = None
        except Exception:  # a bug must not stop the rebuilds to come
            log.exception("cluster: the build failed, the running config keeps serving")
            config = None
        if config is not None and self.built.is_set():
            self.on_publish()
        await self._write_back()

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.options.resync)
            await self._write_back()

    def _leadership(self, leading: bool) -> None:
        if leading:  # write what was left to the previous leader (or to nobody) at once
            asyncio.get_running_loop().create_task(self._write_back())

    async def _write_back(self) -> None:
        """As the leader: the served Ingresses' status, and Events for invalid Ingresses."""
        if not self.leading or self.status is None or self.events is None:
            return
        async with self._writing:
            ingresses = next(i.objects for i in self.informers if i.kind is INGRESS)
            served = {(namespace, name) for _, namespace, name in self.controller.served}
            try:
                if self.options.publish.enabled:
                    await self.status.sync(served, dict(ingresses), lambda: self.leading)
                if self.controller.report is not None and self.leading:
                    await self.events.sync(self.controller.report, dict(ingresses))
            except Exception:  # a bug here must not stop the informers
                log.exception("writing Ingress status or Events failed")
