"""Configuration as users declare it: typed, frozen, validated at load."""

from portway.config.model import (
    Config,
    HashOn,
    HeaderMatch,
    InstanceConfig,
    ListenerConfig,
    PoolConfig,
    QueryMatch,
    RouteConfig,
    ServerConfig,
    ServiceConfig,
    StickyConfig,
)

__all__ = [
    "Config",
    "HashOn",
    "HeaderMatch",
    "InstanceConfig",
    "ListenerConfig",
    "PoolConfig",
    "QueryMatch",
    "RouteConfig",
    "ServerConfig",
    "ServiceConfig",
    "StickyConfig",
]
