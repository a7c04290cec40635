"""Rules that span fields or sections of a config, checked once the model itself is valid.

Each issue is a field path such as ``("routes", 2, "service")`` and a message; the loader turns the
path into the line and column where the field was written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from portway.config.model import Config, RouteConfig, ServiceConfig, ValueMatch
from portway.config.policy_checks import check_policies
from portway.config.reference import FieldPath
from portway.config.rewrite_checks import check_rewrites
from portway.config.tls_checks import check_tls

Issue = tuple[FieldPath, str]

# Service names become metric labels and log fields, so they are kept to a safe alphabet.
SERVICE_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")
HASHING_ALGORITHMS = frozenset({"ring_hash", "maglev"})


def check(config: Config) -> list[Issue]:
    """Every cross-field problem in ``config``, in the order of the sections."""
    issues = _check_listeners(config)
    for name, service in config.services.items():
        issues.extend(_check_service(name, service))
    issues.extend(_check_routes(config))
    issues.extend(check_policies(config))
    issues.extend(check_rewrites(config))
    issues.extend(check_tls(config))
    return issues


def _check_listeners(config: Config) -> list[Issue]:
    issues: list[Issue] = []
    first_index: dict[str, int] = {}
    for index, listener in enumerate(config.listeners):
        address = listener.address.lower()
        if address in first_index:
            message = (
                f"duplicate listener address '{listener.address}' "
                f"(also listeners[{first_index[address]}])"
            )
            issues.append((("listeners", index, "address"), message))
        else:
            first_index[address] = index
    return issues


def _check_service(name: str, service: ServiceConfig) -> list[Issue]:
    issues: list[Issue] = []
    path: FieldPath = ("services", name)
    if not SERVICE_NAME.match(name):
        issues.append(
            (
                path,
                f"service name '{name}' must be lower-case letters, digits, '.', '_' or '-', "
                "starting and ending with a letter or digit",
            )
        )
    if service.sticky is not None and service.algorithm in HASHING_ALGORITHMS:
        issues.append(
            (
                (*path, "sticky"),
                f"sticky sessions and algorithm '{service.algorithm}' both choose the instance: "
                "pick one",
            )
        )
    if service.hash_on is not None and service.algorithm not in HASHING_ALGORITHMS:
        issues.append(
            (
                (*path, "hash_on"),
                f"hash_on only applies to algorithm ring_hash or maglev, not '{service.algorithm}'",
            )
        )
    first_index: dict[str, int] = {}
    for index, instance in enumerate(service.instances):
        address = instance.address.lower()
        if address in first_index:
            message = (
                f"duplicate instance address '{instance.address}' "
                f"(also instances[{first_index[address]}])"
            )
            issues.append(((*path, "instances", index), message))
        else:
            first_index[address] = index
    return issues


def _check_routes(config: Config) -> list[Issue]:
    return [
        *_check_route_services(config),
        *_check_route_names(config.routes),
        *_check_route_matches(config.routes),
    ]


def _check_route_services(config: Config) -> list[Issue]:
    issues: list[Issue] = []
    defined = ", ".join(config.services)
    known = f"defined: {defined}" if defined else "no services are defined"
    for index, route in enumerate(config.routes):
        if route.service is not None and route.service not in config.services:
            message = f"unknown service '{route.service}' ({known})"
            issues.append((("routes", index, "service"), message))
    return issues


def _check_route_names(routes: Sequence[RouteConfig]) -> list[Issue]:
    issues: list[Issue] = []
    first_index: dict[str, int] = {}
    for index, route in enumerate(routes):
        # Unnamed routes are called "route-<index>" (as the router does): a name can clash with it.
        name = route.name if route.name is not None else f"route-{index}"
        if name not in first_index:
            first_index[name] = index
            continue
        earlier = first_index[name]
        holder = f"routes[{earlier}]"
        if routes[earlier].name is None:
            holder = f"the default name of {holder}"
        if route.name is not None:
            message = f"duplicate route name '{name}' (also {holder})"
            issues.append((("routes", index, "name"), message))
        else:
            message = f"the default name of routes[{index}], '{name}', is taken by {holder}"
            issues.append((("routes", index), message))
    return issues


def _check_route_matches(routes: Sequence[RouteConfig]) -> list[Issue]:
    issues: list[Issue] = []
    first_index: dict[tuple[object, ...], int] = {}
    for index, route in enumerate(routes):
        match = _match_key(route)
        if match not in first_index:
            first_index[match] = index
            continue
        earlier = first_index[match]
        message = (
            f"route '{_label(route, index)}' can never match: "
            f"route '{_label(routes[earlier], earlier)}' has the same match"
        )
        issues.append((("routes", index), message))
    return issues


def _match_key(route: RouteConfig) -> tuple[object, ...]:
    """What a route matches on; order does not matter within hosts, methods and conditions."""
    return (
        frozenset(route.hosts),
        route.path,
        route.path_type,
        frozenset(route.methods),
        _conditions(route.headers),
        _conditions(route.query),
    )


def _conditions(matches: Sequence[ValueMatch]) -> frozenset[tuple[object, ...]]:
    return frozenset((m.name, m.exact, m.regex, m.present) for m in matches)


def _label(route: RouteConfig, index: int) -> str:
    return route.name if route.name is not None else f"routes[{index}]"
