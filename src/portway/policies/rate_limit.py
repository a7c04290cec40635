"""Rate limits: at most N requests per window for each key (client IP, consumer, header, route).

Refused requests answer 429 with ``Retry-After`` (RFC 6585 §4, RFC 9110 §10.2.3). With
``response_headers`` every answer carries the IETF httpapi draft's fields
(draft-ietf-httpapi-ratelimit-headers-09): ``RateLimit-Policy: "<name>";q=<limit>;w=<seconds>`` and
``RateLimit: "<name>";r=<remaining>;t=<seconds to reset>``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from portway.config.policies import RateLimitConfig, RedisConfig
from portway.messages import LocalAnswer, Request
from portway.policies.base import RATE_LIMITED, BuildContext, Policy
from portway.policies.window import LocalWindow

_RATE_LIMITED: Final = RATE_LIMITED.encode()
_time: Final = time.time


class RateLimitPolicy(Policy):
    kind = "rate_limit"

    @classmethod
    def from_config(cls, name: str, config: Any, context: BuildContext) -> Policy:
        return cls(name, config, context.loop, context.redis)

    def __init__(
        self,
        name: str,
        config: RateLimitConfig,
        loop: asyncio.AbstractEventLoop,
        redis: RedisConfig | None,
    ) -> None:
        super().__init__(name)
        self.config = config
        self.key_kind = config.key
        self.header = config.header
        window_seconds = round(config.per) if config.per >= 1 else config.per
        self.policy_header = b'"%s";q=%d;w=%s' % (
            name.encode("ascii"),
            config.requests,
            str(window_seconds).encode("ascii"),
        )
        self.emit = config.response_headers
        self.quoted = name.encode("ascii")  # policy names are checked to be plain ASCII
        if config.store == "redis":
            assert redis is not None  # the config checks refuse a redis store without it
            from portway.policies.redis_window import RedisWindow

            self.window: LocalWindow = RedisWindow(
                name, config.requests, config.per, config.max_keys, redis, loop
            )
        else:
            self.window = LocalWindow(config.requests, config.per, config.max_keys)

    def key_of(self, request: Request) -> str:
        kind = self.key_kind
        if kind == "client_ip":
            return request.client_ip
        if kind == "consumer":
            return request.consumer
        if kind == "header":
            return request.header(self.header or "") or ""  # absent: one shared bucket
        return ""  # the whole route

    def apply(self, request: Request) -> LocalAnswer | None:
        verdict = self.window.hit(self.key_of(request), _time())
        if verdict.allowed:
            if self.emit:
                request.response_headers += [
                    (b"ratelimit-policy", self.policy_header),
                    (b"ratelimit", b'"%s";r=%d;t=%d' % (
                        self.quoted, verdict.remaining, verdict.reset
                    )),
                ]  # fmt: skip
            return None
        headers = [(b"retry-after", b"%d" % verdict.retry_after)]
        if self.emit:
            headers += [
                (b"ratelimit-policy", self.policy_header),
                (b"ratelimit", b'"%s";r=0;t=%d' % (self.quoted, verdict.retry_after)),
            ]
        return LocalAnswer(
            429,
            f"rate limit '{self.name}' of {self.config.requests} requests per "
            f"{self.config.per:g}s exceeded; retry in {verdict.retry_after}s",
            _RATE_LIMITED,
            headers,
        )

    def state(self) -> dict[str, Any]:
        state = self.window.state(_time())
        state["key"] = self.key_kind if self.key_kind != "header" else f"header:{self.header}"
        return state

    def close(self) -> None:
        self.window.close()
