"""Routing between services: host -> path -> matchers, compiled once per config."""

from portway.routing.explain import Explanation, explain, render_explanation, render_table
from portway.routing.matchers import (
    HeaderMatcher,
    Matcher,
    MethodMatcher,
    QueryMatcher,
    build_matchers,
)
from portway.routing.normalize import normalize_path
from portway.routing.router import compile_routes
from portway.routing.table import CompiledRoute, HostTable, RouteTable, TraceStep

__all__ = [
    "CompiledRoute",
    "Explanation",
    "HeaderMatcher",
    "HostTable",
    "Matcher",
    "MethodMatcher",
    "QueryMatcher",
    "RouteTable",
    "TraceStep",
    "build_matchers",
    "compile_routes",
    "explain",
    "normalize_path",
    "render_explanation",
    "render_table",
]
