"""Cross-field rules of rewrites and redirects: what a route's ``rewrite`` or ``redirect`` needs
from the rest of the route and from its service (``config.rewrites`` checks each field alone)."""

from __future__ import annotations

from portway.config.model import Config
from portway.config.reference import FieldPath
from portway.config.rewrites import redirect_parts

Issue = tuple[FieldPath, str]


def check_rewrites(config: Config) -> list[Issue]:
    issues: list[Issue] = []
    for index, route in enumerate(config.routes):
        at: FieldPath = ("routes", index)
        rewrite, redirect = route.rewrite, route.redirect
        if rewrite is not None and rewrite.prefix is not None and route.path_type != "prefix":
            issues.append(
                (
                    (*at, "rewrite", "prefix"),
                    f"a prefix rewrite replaces the matched prefix: it needs path_type prefix, "
                    f"not {route.path_type} (use regex and replacement)",
                )
            )
        if rewrite is not None and rewrite.host is not None and route.service is not None:
            service = config.services.get(route.service)
            if service is not None and service.rewrite_host:
                issues.append(
                    (
                        (*at, "rewrite", "host"),
                        f"service '{route.service}' sends each instance's host:port as Host "
                        "(rewrite_host): a route's Host rewrite would be ignored",
                    )
                )
        if redirect is None:
            continue
        if "$rest" in redirect_parts(redirect.to) and route.path_type != "prefix":
            issues.append(
                (
                    (*at, "redirect", "to"),
                    f"$rest is the path after the matched prefix: it needs path_type prefix, "
                    f"not {route.path_type}",
                )
            )
        if route.policies:
            # The redirect is answered before any policy would run (it forwards nothing to guard).
            issues.append(
                (
                    (*at, "policies"),
                    "a redirect route answers before policies run: they would never apply",
                )
            )
    return issues
