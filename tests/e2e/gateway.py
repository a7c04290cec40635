"""An in-process gateway on its own event loop thread, for end-to-end tests over real sockets."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Self

from portway.config.model import Config
from portway.gateway import Gateway, new_event_loop
from tests.support.lifecycle import StartStop


class GatewayThread(StartStop):
    """Serve ``config`` on 127.0.0.1 (an ephemeral port) in a background thread.

    ``config`` is a dict in the native format; a missing ``listeners`` defaults to an ephemeral port.
    With ``admin`` the gateway also serves the admin API from a thread, on an ephemeral port unless
    the config names one (``admin_port``).
    """

    def __init__(self, config: dict[str, Any] | Config, *, admin: bool = False) -> None:
        if isinstance(config, dict):
            defaults: dict[str, Any] = {"listeners": [{"address": "127.0.0.1:0"}]}
            if admin:
                defaults["admin"] = {"address": "127.0.0.1:0"}
            config = Config.model_validate({**defaults, **config})
        self.config = config
        self.loop = new_event_loop()
        self.gateway = Gateway(config, self.loop, admin=admin)
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port = 0
        self.admin_port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            addresses = self.loop.run_until_complete(self.gateway.start())
            self.port = addresses[0][1]
            if self.gateway.admin_address is not None:
                self.admin_port = self.gateway.admin_address[1]
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.close()

    def start(self) -> Self:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the gateway's loop and return its result."""

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def policy_rejections(self) -> dict[tuple[str, str, str, str], int]:
        """The worker's refusals by (route, policy, kind, reason), read on its loop."""
        return dict(self.call(lambda: dict(self.gateway.ctx.stats.policy_rejections)))

    def reload(self, config: dict[str, Any]) -> None:
        kept = self.config.model_dump()
        full = Config.model_validate(
            {"listeners": kept["listeners"], "admin": kept["admin"], **config}
        )
        self.call(self.gateway.reload, full)

    def drain(self, timeout: float = 5.0) -> bool:
        future = asyncio.run_coroutine_threadsafe(self.gateway.drain(timeout), self.loop)
        return future.result(timeout + 5)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if not self.gateway.ctx.draining:
            self.drain(1.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
