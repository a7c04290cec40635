"""The generated reference covers every key of the model, with its type and default."""

from __future__ import annotations

from collections.abc import Iterator
from typing import get_args, get_origin

import pytest
from pydantic import BaseModel

from portway.config import Config, RouteConfig
from portway.config.model import HeaderMatch
from portway.config.reference import model_at, render_reference, unwrap


def leaf_keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every key whose value is not itself a mapping, spelled as the reference spells it."""
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        annotation = unwrap(field.annotation)
        nested_path = path
        while get_origin(annotation) in (list, dict):
            container = get_origin(annotation)
            annotation = unwrap(get_args(annotation)[-1])
            nested_path += "[]" if container is list else ".<name>"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from leaf_keys(annotation, nested_path)
        else:
            yield path


def all_fields(model: type[BaseModel]) -> Iterator[tuple[type[BaseModel], str]]:
    for name, field in model.model_fields.items():
        yield model, name
        annotation = unwrap(field.annotation)
        while get_origin(annotation) in (list, dict):
            annotation = unwrap(get_args(annotation)[-1])
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from all_fields(annotation)


@pytest.fixture(scope="module")
def reference() -> str:
    return render_reference()


def test_every_leaf_key_is_documented(reference: str) -> None:
    keys = list(leaf_keys(Config))
    assert len(keys) > 40
    missing = [key for key in keys if f"| `{key}` |" not in reference]
    assert missing == []


def test_every_field_has_a_description() -> None:
    undescribed = [
        f"{model.__name__}.{name}"
        for model, name in all_fields(Config)
        if not model.model_fields[name].description
    ]
    assert undescribed == []


def row(reference: str, key: str) -> list[str]:
    [line] = [line for line in reference.splitlines() if line.startswith(f"| `{key}` |")]
    return [cell.strip() for cell in line.strip("|").split(" | ")]


@pytest.mark.parametrize(
    ("key", "type_name", "default"),
    [
        ("listeners", "list of mappings", "`[{address: 127.0.0.1:8080}]`"),
        ("listeners[].address", "address", "required"),
        ("server.limits.max_body_bytes", "size", "`100MiB`"),
        ("server.limits.max_request_line", "size", "`8KiB`"),
        ("server.timeouts.header", "duration", "`10s`"),
        ("server.timeouts.keepalive", "duration", "`1m`"),
        ("server.trusted_proxies", "list of CIDRs", "`[]`"),
        ("services", "mapping of names to mappings", "`{}`"),
        ("services.<name>.pool.max_idle", "integer, at least 0", "`256`"),
        ("services.<name>.connect_retries", "integer, 0 to 10", "`2`"),
        ("services.<name>.sticky", "mapping", "`none`"),
        ("services.<name>.sticky.max_age", "duration", "`none`"),
        ("services.<name>.sticky.http_only", "boolean", "`true`"),
        ("services.<name>.instances[].weight", "integer, 1 to 10000", "`1`"),
        ("routes[].path_type", "one of `exact`, `prefix`, `regex`", "`prefix`"),
        ("routes[].service", "string", "`none`"),  # required unless the route redirects
        ("routes[].redirect.to", "string", "required"),
        ("routes[].headers[].present", "boolean", "`none`"),
    ],
)
def test_rows_show_type_and_default(reference: str, key: str, type_name: str, default: str) -> None:
    cells = row(reference, key)
    assert cells[1:3] == [type_name, default]
    assert cells[3]  # a description


def test_sections_carry_the_model_docstrings(reference: str) -> None:
    assert (
        "## `services.<name>.pool`\n\nUpstream connections kept per instance and per worker."
        in (reference)
    )
    assert reference.startswith("# Configuration reference\n")


def test_model_at() -> None:
    assert model_at(()) is Config
    assert model_at(("routes", 3)) is RouteConfig
    assert model_at(("routes", 0, "headers", 1)) is HeaderMatch
    assert model_at(("services", "users", "pool")) is not None
    assert model_at(("routes",)) is None  # a list, not a mapping
    assert model_at(("routes", 0, "path")) is None
    assert model_at(("nope",)) is None
    assert model_at(("routes", "x")) is None
