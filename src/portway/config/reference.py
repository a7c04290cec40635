"""The config schema described: a Markdown reference of every key, generated from the model.

``render_reference()`` walks the pydantic models from ``Config`` down, so the reference cannot drift
from what the loader accepts. ``model_at()`` answers which model a field path leads to (the loader
uses it to list the keys allowed where an unknown one was found).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Annotated, Literal, get_args, get_origin

from annotated_types import Ge, Le
from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from portway.config.model import Config
from portway.config.types import Address, Cidr, Duration, Size

FieldPath = tuple[str | int, ...]


def _validator_of(alias: object) -> object:
    (validator,) = (m for m in get_args(alias)[1:] if isinstance(m, BeforeValidator))
    return validator.func


# The value types of ``config.types`` are recognized by their parsing function.
_VALUE_TYPE_NAMES = {
    _validator_of(Duration): "duration",
    _validator_of(Size): "size",
    _validator_of(Address): "address",
    _validator_of(Cidr): "CIDR",
}
_PLURALS = {"address": "addresses", "mapping": "mappings", "string": "strings", "CIDR": "CIDRs"}

_INTRO = """\
# Configuration reference

Every key of the native YAML config. Durations are seconds or a number with a unit: `250ms`,
`5s`, `2m`, `1h`. Sizes are bytes or a number with a unit: `64k` and `64KiB` are 65536 bytes,
`10MB` is 10,000,000 bytes and `10MiB` 10,485,760. Addresses are `host:port`, or `[v6]:port`.
Unknown keys are an error.
"""


def model_at(path: FieldPath) -> type[BaseModel] | None:
    """The model of the mapping at ``path`` (e.g. ``("routes", 0, "headers", 1)``), if it is one."""
    annotation: object = Config
    for part in path:
        annotation = unwrap(annotation)
        origin = get_origin(annotation)
        if _is_model(annotation) and isinstance(part, str) and part in annotation.model_fields:
            annotation = annotation.model_fields[part].annotation
        elif origin is list and isinstance(part, int):
            annotation = get_args(annotation)[0]
        elif origin is dict and isinstance(part, str):
            annotation = get_args(annotation)[1]
        else:
            return None
    annotation = unwrap(annotation)
    return annotation if _is_model(annotation) else None


def unwrap(annotation: object) -> object:
    """``Annotated[X, ...]`` and ``X | None`` -> ``X``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (types.UnionType, typing.Union):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def render_reference() -> str:
    """The Markdown reference of every config key: dotted path, type, default and description."""
    sections = "\n".join(_render_section(path, model) for path, model in _sections("", Config))
    return f"{_INTRO}\n{sections}"


def _sections(path: str, model: type[BaseModel]) -> Iterator[tuple[str, type[BaseModel]]]:
    """Each model reachable from ``model`` with the key path it sits at, parents first."""
    yield path, model
    for name, field in model.model_fields.items():
        child_path, child = _nested_model(_join(path, name), field.annotation)
        if child is not None:
            yield from _sections(child_path, child)


def _nested_model(path: str, annotation: object) -> tuple[str, type[BaseModel] | None]:
    annotation = unwrap(annotation)
    origin = get_origin(annotation)
    if origin is list:
        return _nested_model(f"{path}[]", get_args(annotation)[0])
    if origin is dict:
        return _nested_model(f"{path}.<name>", get_args(annotation)[1])
    return path, annotation if _is_model(annotation) else None


def _render_section(path: str, model: type[BaseModel]) -> str:
    title = f"`{path}`" if path else "Top level"
    lines = [f"## {title}", ""]
    doc = model.__dict__.get("__doc__")
    if doc:
        lines += [" ".join(doc.split()), ""]
    lines += ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        cells = (
            f"`{_join(path, name)}`",
            _type_name(field.annotation, field.metadata),
            _default_text(field),
            field.description or "",
        )
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _type_name(annotation: object, metadata: list[object]) -> str:
    if get_origin(annotation) is Annotated:
        base, *extra = get_args(annotation)
        return _type_name(base, [*metadata, *extra])
    for item in metadata:
        if isinstance(item, BeforeValidator) and item.func in _VALUE_TYPE_NAMES:
            return _VALUE_TYPE_NAMES[item.func]
    origin = get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return " or ".join(_type_name(member, metadata) for member in members)
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    if origin is list:
        item_name = _type_name(get_args(annotation)[0], [])
        return f"list of {_PLURALS.get(item_name, item_name)}"
    if origin is dict:
        return f"mapping of names to {_PLURALS['mapping']}"
    if _is_model(annotation):
        return "mapping"
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer" + _bounds(metadata)
    if annotation is float:
        return "number" + _bounds(metadata)
    return "string" if annotation is str else str(annotation)


def _bounds(metadata: list[object]) -> str:
    low = next((m.ge for m in metadata if isinstance(m, Ge)), None)
    high = next((m.le for m in metadata if isinstance(m, Le)), None)
    if low is not None and high is not None:
        return f", {low} to {high}"
    if low is not None:
        return f", at least {low}"
    return f", at most {high}" if high is not None else ""


def _default_text(field: FieldInfo) -> str:
    if field.default is PydanticUndefined:
        return "required"
    kind = _type_name(field.annotation, field.metadata)
    return f"`{_value_text(field.default, kind)}`"


def _value_text(value: object, kind: str) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind.startswith("duration") and isinstance(value, int | float):
        return _duration_text(float(value))
    if kind == "size" and isinstance(value, int):
        return _size_text(value)
    if isinstance(value, BaseModel):
        fields = value.model_dump(exclude_defaults=True)
        return "{" + ", ".join(f"{k}: {_value_text(v, '')}" for k, v in fields.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_value_text(item, "") for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value_text(v, '')}" for k, v in value.items()) + "}"
    return str(value)


def _duration_text(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds * 1000:g}ms"


def _size_text(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _is_model(annotation: object) -> typing.TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
