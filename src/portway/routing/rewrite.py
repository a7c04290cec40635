"""A route's rewrite and redirect, compiled once per config, applied per request.

Only routes that have one carry one (``CompiledRoute.action``); the request path tests that
attribute and nothing more for every other route. The semantics (README, "Rewrites and redirects"):

* Prefix rewrite: the matched prefix (the route path without its trailing ``/``) is replaced by
  the replacement without its trailing ``/``, and an empty result is ``/``: the Gateway API's
  ``ReplacePrefixMatch``. Route ``/api`` + ``prefix: /``: ``/api`` and ``/api/`` go up as ``/``,
  ``/api/x`` as ``/x``; with ``prefix: /v2``: ``/api`` -> ``/v2``, ``/api/`` -> ``/v2/``.
* Regex rewrite: ``re.sub(regex, replacement, path, count=1)`` on the normalized path (a search:
  anchor with ``^``/``$`` to match the whole path). No match: the path is unchanged. A result
  without a leading ``/`` gets one, and the result is normalized again (dot segments, and
  ``merge_slashes`` when on); one that cannot be (a group split a ``%XX``) raises ``ValueError``,
  which the server answers 500 ``rewrite_failed``.
* The query string goes up unchanged; percent-encoded octets (``%2F``) stay encoded, as routing
  saw them.
* Redirect: ``$host`` is the Host the client sent (port included), ``$path`` the normalized path,
  ``$rest`` what follows the matched prefix ("" or ``/...``). A backslash in a substituted path
  is sent as ``%5C`` and a target that starts with a substituted path never starts with ``//``, so
  a crafted path (``//evil.example``, ``/\\evil.example``) cannot make the Location another site.
"""

from __future__ import annotations

import re

from portway.config.rewrites import RedirectConfig, RewriteConfig, redirect_parts
from portway.messages import LocalAnswer
from portway.routing.normalize import normalize_path


class Rewrite:
    """The path and Host a route's requests are sent upstream with."""

    __slots__ = ("host", "merge_slashes", "pattern", "prefix_key", "replacement", "with_prefix")

    def __init__(self, config: RewriteConfig, prefix_key: str, merge_slashes: bool) -> None:
        self.prefix_key = prefix_key  # the route's matched prefix: path without trailing "/"
        self.merge_slashes = merge_slashes
        self.with_prefix: str | None = None
        if config.prefix is not None:
            self.with_prefix = normalize_path(config.prefix, merge_slashes).rstrip("/")
        self.pattern = re.compile(config.regex) if config.regex is not None else None
        self.replacement = config.replacement or ""
        self.host = config.host.encode("ascii") if config.host is not None else None

    def path(self, path: str) -> str:
        """The path sent upstream for the normalized request ``path``; ``ValueError`` if invalid."""
        replaced = self.with_prefix
        if replaced is not None:
            key = self.prefix_key
            if not path.startswith(key):  # cannot happen: the route matched this prefix
                return path
            return replaced + path[len(key) :] or "/"
        pattern = self.pattern
        if pattern is None:
            return path
        new = pattern.sub(self.replacement, path, count=1)
        if new == path:
            return path
        if not new.startswith("/"):
            new = "/" + new
        return normalize_path(new, self.merge_slashes)

    def target(self, path: str, query: str) -> bytes:
        """The request-target sent upstream (origin form, query as received)."""
        new = self.path(path)
        return (new + "?" + query if query else new).encode("ascii")

    def describe(self) -> str:
        parts = []
        if self.with_prefix is not None:
            parts.append(f"prefix {self.prefix_key or '/'} -> {self.with_prefix or '/'}")
        if self.pattern is not None:
            parts.append(f"regex {self.pattern.pattern} -> {self.replacement}")
        if self.host is not None:
            parts.append(f"host -> {self.host.decode('ascii')}")
        return "rewrite " + ", ".join(parts)


class Redirect:
    """The redirect a route answers with instead of forwarding."""

    __slots__ = ("keep_query", "parts", "prefix_key", "status", "to")

    def __init__(self, config: RedirectConfig, prefix_key: str) -> None:
        self.to = config.to
        self.parts = tuple(redirect_parts(config.to))
        self.status: int = config.status
        self.keep_query = config.keep_query
        self.prefix_key = prefix_key

    def location(self, host: str, path: str, query: str) -> str:
        """The Location for a request to ``host`` (as sent), ``path`` (normalized), ``query``."""
        pieces = []
        for part in self.parts:
            if part == "$host":
                pieces.append(host)
            elif part == "$path":
                pieces.append(path.replace("\\", "%5C"))
            elif part == "$rest":
                pieces.append(path[len(self.prefix_key) :].replace("\\", "%5C"))
            else:
                pieces.append(part)
        location = "".join(pieces)
        if self.parts and self.parts[0] in ("$path", "$rest"):
            # A path from the request must not turn into a network-path reference ("//host").
            location = "/" + location.lstrip("/")
        elif not location:
            location = "/"
        if self.keep_query and query:
            location += ("&" if "?" in location else "?") + query
        return location

    def answer(self, host: str, path: str, query: str) -> LocalAnswer:
        location = self.location(host, path, query)
        return LocalAnswer(
            self.status,
            f"moved to {location}",
            None,
            [(b"location", location.encode("ascii", "replace"))],
        )

    def describe(self) -> str:
        query = ", keep query" if self.keep_query else ""
        return f"redirect {self.status} {self.to}{query}"


RouteAction = Rewrite | Redirect
