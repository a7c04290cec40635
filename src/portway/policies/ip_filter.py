"""Client address allow and deny lists (ingress-nginx's whitelist-source-range and
denylist-source-range).

The address is ``request.client_ip``: the TCP peer, or behind ``server.trusted_proxies`` the client
they name in X-Forwarded-For. Each address's verdict is remembered (bounded), since parsing an
address and testing it against every network costs more than the rest of the policy.
"""

from __future__ import annotations

from typing import Final

from portway.config.policies import IpFilterConfig
from portway.config.types import ip_in, networks
from portway.messages import LocalAnswer, Request
from portway.policies.base import ADDRESS_REFUSED, Policy

_REFUSED: Final = ADDRESS_REFUSED.encode()
MAX_REMEMBERED: Final = 65_536


class IpFilterPolicy(Policy):
    kind = "ip_filter"

    def __init__(self, name: str, config: IpFilterConfig) -> None:
        super().__init__(name)
        self.allow = networks(config.allow)
        self.deny = networks(config.deny)
        self.verdicts: dict[str, bool] = {}  # address -> allowed

    def allowed(self, ip: str) -> bool:
        verdict = self.verdicts.get(ip)
        if verdict is None:
            verdict = not ip_in(ip, self.deny) and (not self.allow or ip_in(ip, self.allow))
            if len(self.verdicts) >= MAX_REMEMBERED:
                self.verdicts.clear()  # a cheap bound: verdicts are recomputed on demand
            self.verdicts[ip] = verdict
        return verdict

    def apply(self, request: Request) -> LocalAnswer | None:
        if self.allowed(request.client_ip):
            return None
        return LocalAnswer(403, "this client address may not use this route", _REFUSED)
