"""Extra route conditions beyond host and path: method, header, query parameter.

Each matcher is built once from the config and answers three questions: ``matches`` (the hot path,
no string formatting), ``failure`` (why it did not match, asked only when tracing) and ``describe``
(what it requires, for route listings).

Semantics:

- method: the request method must be in the route's set (methods are case-sensitive tokens,
  RFC 9110 §9.1; the config upper-cases them).
- header: the value is ``Request.header(name)``, repeated fields joined with ``", "``
  (RFC 9110 §5.3). ``exact`` compares the whole value; ``regex`` must match the whole value
  (``re.fullmatch``); ``present: true`` needs the field, ``present: false`` needs it absent. An
  empty value is present.
- query: the values are ``Request.query_params()[name]`` (percent-decoded, ``+`` as space,
  blank values kept so ``?debug`` is present). The parameter matches if ANY of its values matches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from portway.config.model import RouteConfig, ValueMatch
from portway.messages import Request


class Matcher(Protocol):
    def matches(self, request: Request) -> bool: ...

    def failure(self, request: Request) -> str:
        """Why ``request`` fails this matcher; only meaningful when ``matches`` returned False."""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class MethodMatcher:
    methods: frozenset[str]

    def matches(self, request: Request) -> bool:
        return request.method in self.methods

    def failure(self, request: Request) -> str:
        return f"method {request.method} not in {self._shown()}"

    def describe(self) -> str:
        return f"method in {self._shown()}"

    def _shown(self) -> str:
        return "{" + ", ".join(sorted(self.methods)) + "}"


@dataclass(frozen=True, slots=True)
class ValueCondition:
    """One of exact / regex / present, as the config's ``ValueMatch`` guarantees."""

    exact: str | None
    pattern: re.Pattern[str] | None
    present: bool | None

    @classmethod
    def from_config(cls, match: ValueMatch) -> ValueCondition:
        pattern = re.compile(match.regex) if match.regex is not None else None
        return cls(exact=match.exact, pattern=pattern, present=match.present)

    def accepts(self, value: str) -> bool:
        """Whether a value that is present satisfies the condition."""
        if self.exact is not None:
            return value == self.exact
        if self.pattern is not None:
            return self.pattern.fullmatch(value) is not None
        return self.present is True

    def describe(self) -> str:
        if self.exact is not None:
            return f"== {self.exact!r}"
        if self.pattern is not None:
            return f"~ /{self.pattern.pattern}/"
        return "present" if self.present else "absent"

    def mismatch(self, shown_value: str) -> str:
        """Why a present value (shown as ``shown_value``) failed."""
        if self.exact is not None:
            return f"{shown_value} != {self.exact!r}"
        if self.pattern is not None:
            return f"{shown_value} does not match /{self.pattern.pattern}/"
        return "present, must be absent"


@dataclass(frozen=True, slots=True)
class HeaderMatcher:
    name: str  # lower-case, as the config stores it
    condition: ValueCondition

    def matches(self, request: Request) -> bool:
        value = request.header(self.name)
        if value is None:
            return self.condition.present is False
        return self.condition.accepts(value)

    def failure(self, request: Request) -> str:
        value = request.header(self.name)
        if value is None:
            return f"header {self.name} absent"
        if self.condition.present is False:
            return f"header {self.name} present, must be absent"
        return f"header {self.name}: {self.condition.mismatch(repr(value))}"

    def describe(self) -> str:
        return f"header {self.name} {self.condition.describe()}"


@dataclass(frozen=True, slots=True)
class QueryMatcher:
    name: str
    condition: ValueCondition

    def matches(self, request: Request) -> bool:
        values = request.query_params().get(self.name)
        if values is None:
            return self.condition.present is False
        accepts = self.condition.accepts
        for value in values:  # noqa: SIM110 - any() would build a generator per request
            if accepts(value):
                return True
        return False

    def failure(self, request: Request) -> str:
        values = request.query_params().get(self.name)
        if values is None:
            return f"query {self.name} absent"
        if self.condition.present is False:
            return f"query {self.name} present, must be absent"
        shown = repr(values[0]) if len(values) == 1 else f"none of {values!r}"
        return f"query {self.name}: {self.condition.mismatch(shown)}"

    def describe(self) -> str:
        return f"query {self.name} {self.condition.describe()}"


def build_matchers(route: RouteConfig) -> tuple[Matcher, ...]:
    """The route's conditions, cheapest first: method, then headers, then query parameters."""
    matchers: list[Matcher] = []
    if route.methods:
        matchers.append(MethodMatcher(frozenset(route.methods)))
    matchers.extend(HeaderMatcher(h.name, ValueCondition.from_config(h)) for h in route.headers)
    matchers.extend(QueryMatcher(q.name, ValueCondition.from_config(q)) for q in route.query)
    return tuple(matchers)
