"""API keys: a client names itself with a secret key in a header (or a query parameter).

Keys are held as SHA-256 digests only, whether the config gave the key or its digest, and a
presented key is looked up by its digest: the lookup time depends on the digest, which the client
cannot steer toward a valid key, so no constant-time comparison is needed.
"""

from __future__ import annotations

import hashlib

from portway.config.policies import ApiKeyConfig
from portway.messages import LocalAnswer, Request
from portway.policies.base import INVALID, MISSING, Policy


class ApiKeyPolicy(Policy):
    kind = "api_key"

    def __init__(self, name: str, config: ApiKeyConfig) -> None:
        super().__init__(name)
        self.header = config.header
        self.query = config.query
        self.strip = config.strip_credentials
        self.consumers: dict[str, str] = {}
        for entry in config.keys:
            digest = entry.key_sha256 or hashlib.sha256(entry.key.encode()).hexdigest()  # type: ignore[union-attr]
            self.consumers[digest] = entry.consumer

    def apply(self, request: Request) -> LocalAnswer | None:
        key = request.header(self.header)
        if key is None and self.query is not None:
            values = request.query_params().get(self.query)
            key = values[0] if values else None
        if not key:
            where = f"the {self.header} header"
            if self.query is not None:
                where += f" or the {self.query} query parameter"
            return LocalAnswer(401, f"an API key is required in {where}", MISSING.encode())
        consumer = self.consumers.get(hashlib.sha256(key.encode("utf-8", "replace")).hexdigest())
        if consumer is None:
            return LocalAnswer(401, "the API key is not valid", INVALID.encode())
        request.consumer = consumer
        return None

    def drops(self) -> frozenset[bytes]:
        return frozenset({self.header.encode("ascii")}) if self.strip else frozenset()
