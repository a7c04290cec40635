"""Loads a native YAML config into a validated ``Config``, or reports every problem in it at once.

PyYAML first composes the document into nodes, so that each field path can be traced back to its
line and column; plain data (safe types only) is then built from the nodes and validated by the
pydantic model and by ``config.semantic``. Each problem becomes a ``ConfigIssue`` that names the
file, the line, the column and the field.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from portway.config import semantic
from portway.config.model import Config, ListenerConfig, RouteConfig, ServiceConfig
from portway.config.reference import FieldPath, model_at
from portway.errors import ConfigError, ConfigIssue

Position = tuple[int, int]  # 1-based line and column
# A problem before it becomes an issue; a position of None means "where the field path is".
_Problem = tuple[FieldPath, str, Position | None]
_M = TypeVar("_M", bound=BaseModel)

_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


def load_config(path: str | Path) -> Config:
    """Read, parse and validate the config file at ``path``; ``ConfigError`` lists every issue."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise _file_error(source, "file not found") from None
    except IsADirectoryError:
        raise _file_error(source, "is a directory, not a file") from None
    except PermissionError:
        raise _file_error(source, "permission denied") from None
    except OSError as exc:
        raise _file_error(source, f"cannot read the file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        raise ConfigError(
            [
                ConfigIssue(
                    source,
                    "",
                    f"not valid UTF-8: byte 0x{raw[exc.start]:02x} cannot be decoded",
                    raw.count(b"\n", 0, exc.start) + 1,
                    exc.start - line_start + 1,
                )
            ]
        ) from None
    return load_config_text(text, source, base_dir=Path(path).parent)


def load_config_text(
    text: str, source: str = "<string>", base_dir: str | Path | None = None
) -> Config:
    """Parse and validate config ``text``; ``source`` names it in issues (usually a file name).
    Relative file paths in it (certificates, keys) are relative to ``base_dir``, else to the
    working directory."""
    context = {"base_dir": str(Path(base_dir) if base_dir is not None else Path.cwd())}
    try:
        root = yaml.compose(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_syntax_issue(exc, text, source)]) from None
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL_TAG):
        raise ConfigError([ConfigIssue(source, "", "the file is empty")])
    if not isinstance(root, MappingNode):
        kind = "a list" if isinstance(root, SequenceNode) else f"the single value {root.value!r}"
        message = (
            f"the top level must be a mapping of sections (listeners, services, ...), not {kind}"
        )
        line, column = _position(root)
        raise ConfigError([ConfigIssue(source, "", message, line, column)])

    builder = _DataBuilder()
    data = builder.build(root)
    problems = list(builder.problems)
    config: Config | None = None
    try:
        config = Config.model_validate(data, context=context)
    except ValidationError as exc:
        problems.extend(
            problem
            for problem in _validation_problems(exc, data)
            if not any(problem[0][: len(path)] == path for path in builder.unbuilt)
        )
        # Report cross-section problems too (an unknown service next to a bad duration), from the
        # parts that are valid on their own, so one run lists every problem.
        problems.extend(
            (path, message, None) for path, message in _partial_semantic_issues(data, context)
        )
    if config is not None:
        problems.extend((path, message, None) for path, message in semantic.check(config))
    if problems:
        issues = [_issue(problem, builder.positions, source) for problem in problems]
        issues.sort(key=lambda issue: (issue.line or 0, issue.column or 0))
        raise ConfigError(issues)
    assert config is not None  # no problems means the model validated
    return config


def format_field_path(path: FieldPath) -> str:
    """``("routes", 2, "path")`` -> ``"routes[2].path"``; odd keys are quoted: ``x['a b']``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


class _DataBuilder:
    """Builds plain Python data from a YAML node tree, noting where each field path was written."""

    def __init__(self) -> None:
        self.positions: dict[FieldPath, Position] = {}
        self.problems: list[_Problem] = []
        # Paths whose value could not be built and became None: validating it would say nothing new.
        self.unbuilt: set[FieldPath] = set()
        self._constructor = SafeConstructor()
        # Nodes being built: an alias back into one of them would recurse forever.
        self._open: set[int] = set()
        # Collections already built, shared by every alias to them so that nested aliases
        # ("billion laughs") cannot make the data grow exponentially.
        self._built: dict[int, object] = {}

    def build(self, node: Node, path: FieldPath = ()) -> object:
        self.positions.setdefault(path, _position(node))
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._built:
            return self._built[id(node)]
        if id(node) in self._open:
            self.problems.append((path, "an alias refers to a node that contains it", None))
            self.unbuilt.add(path)
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                value: object = [
                    self._child(item, (*path, i), item) for i, item in enumerate(node.value)
                ]
            else:
                assert isinstance(node, MappingNode)
                value = self._mapping(node, path)
        finally:
            self._open.discard(id(node))
        self._built[id(node)] = value
        return value

    def _child(self, node: Node, path: FieldPath, written_at: Node) -> object:
        # A mapping value is located at its key: that is the line a reader looks for.
        self.positions.setdefault(path, _position(written_at))
        return self.build(node, path)

    def _scalar(self, node: ScalarNode, path: FieldPath) -> object:
        try:
            return self._constructor.construct_object(node, deep=True)
        except ConstructorError as exc:
            message = exc.problem or f"cannot read a value tagged {node.tag!r}"
        except (ValueError, TypeError):
            message = f"{node.value!r} is not a valid {node.tag.rsplit(':', 1)[-1]}"
        self.problems.append((path, message, _position(node)))
        self.unbuilt.add(path)
        return None

    def _mapping(self, node: MappingNode, path: FieldPath) -> dict[str, object]:
        result: dict[str, object] = {}
        key_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, ScalarNode):
                kind = "a list" if isinstance(key_node, SequenceNode) else "a mapping"
                message = f"a key must be a plain name, not {kind}"
                self.problems.append((path, message, _position(key_node)))
                continue
            # Keys are names: keep them as written, so "on" or "1" do not become True or 1.
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in result:
                message = f"duplicate key '{key}' (first at line {key_lines[key]})"
                self.problems.append(((*path, key), message, _position(key_node)))
                continue
            key_lines[key] = line
            result[key] = self._child(value_node, (*path, key), key_node)
        for key_node, value_node in self._merged_pairs(node, path):
            key = key_node.value
            if key not in result:
                result[key] = self._child(value_node, (*path, key), key_node)
        return result

    def _merged_pairs(self, node: MappingNode, path: FieldPath) -> list[tuple[ScalarNode, Node]]:
        """The pairs that ``<<`` merge keys bring in, earlier sources first (YAML merge rules)."""
        pairs: list[tuple[ScalarNode, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, MappingNode):
                    message = "'<<' can only merge mappings"
                    self.problems.append((path, message, _position(source)))
                    continue
                if id(source) in self._open:
                    message = "an alias refers to a node that contains it"
                    self.problems.append((path, message, _position(source)))
                    continue
                self._open.add(id(source))
                pairs.extend(
                    (k, v)
                    for k, v in source.value
                    if isinstance(k, ScalarNode) and k.tag != _MERGE_TAG
                )
                pairs.extend(self._merged_pairs(source, path))
                self._open.discard(id(source))
        return pairs


def _validation_problems(exc: ValidationError, data: object) -> list[_Problem]:
    problems: list[_Problem] = []
    for error in exc.errors(include_url=False):
        path = _data_path(tuple(error["loc"]), data)
        if error["type"] == "extra_forbidden" and path and isinstance(path[-1], str):
            message = _unknown_key_message(path)
        else:
            message = error["msg"]
            for prefix in _PYDANTIC_PREFIXES:
                message = message.removeprefix(prefix)
        problems.append((path, message, None))
    return problems


def _data_path(loc: tuple[str | int, ...], data: object) -> FieldPath:
    """The part of a pydantic error location that exists in the data, plus a missing last key.

    Drops the entries pydantic adds that are not data keys (such as a union member's name), which
    would otherwise keep the location from being found.
    """
    path: list[str | int] = []
    current = data
    for depth, part in enumerate(loc):
        in_mapping = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_mapping or in_list:
            current = current[part]  # type: ignore[index]
        elif depth != len(loc) - 1:
            continue
        path.append(part)
    return tuple(path)


def _unknown_key_message(path: FieldPath) -> str:
    key = str(path[-1])
    model = model_at(path[:-1])
    if model is None:
        return f"unknown key '{key}'"
    allowed = list(model.model_fields)
    hint = difflib.get_close_matches(key, allowed, n=1)
    suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
    return f"unknown key '{key}' (allowed: {', '.join(allowed)}{suggestion})"


def _issue(problem: _Problem, positions: dict[FieldPath, Position], source: str) -> ConfigIssue:
    path, message, position = problem
    if position is None:
        position = _closest_position(path, positions)
    line, column = position if position is not None else (None, None)
    return ConfigIssue(source, format_field_path(path), message, line, column)


def _closest_position(path: FieldPath, positions: dict[FieldPath, Position]) -> Position | None:
    """Where ``path`` was written or, for a key that is missing, its closest written ancestor."""
    for end in range(len(path), -1, -1):
        position = positions.get(path[:end])
        if position is not None:
            return position
    return None


def _position(node: Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _yaml_syntax_issue(exc: yaml.YAMLError, text: str, source: str) -> ConfigIssue:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        message = exc.problem or "invalid YAML"
        if exc.context:
            started = exc.context_mark
            where = (
                f" at line {started.line + 1}"
                if started is not None and started.line != mark.line
                else ""
            )
            message += f" ({exc.context}{where})"
        lines = text.splitlines()
        if mark.line < len(lines) and lines[mark.line][mark.column : mark.column + 1] == "\t":
            message += "; YAML does not allow tabs for indentation"
        return ConfigIssue(
            source, "", f"YAML syntax error: {message}", mark.line + 1, mark.column + 1
        )
    if isinstance(exc, yaml.reader.ReaderError) and isinstance(exc.character, int):
        # The C reader counts bytes, the Python one characters: find the character instead.
        offset = text.find(chr(exc.character))
        if offset < 0:
            offset = exc.position
        line = text.count("\n", 0, offset) + 1
        column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        message = f"YAML syntax error: character U+{exc.character:04X}: {exc.reason}"
        return ConfigIssue(source, "", message, line, column)
    return ConfigIssue(source, "", f"YAML syntax error: {exc}")


def _file_error(source: str, message: str) -> ConfigError:
    return ConfigError([ConfigIssue(source, "", message)])


def _partial_semantic_issues(
    data: object, context: dict[str, str]
) -> list[tuple[FieldPath, str]]:
    """``semantic.check`` on the valid parts of a config whose model did not validate.

    Each listener, service and route that is valid on its own is kept; an invalid service keeps its
    name (routes naming it are not "unknown") behind an empty stand-in. Issue paths are mapped back
    to the positions the items had in the file.
    """
    if not isinstance(data, dict):
        return []
    listeners, listener_index = _valid_items(data.get("listeners"), ListenerConfig, context)
    routes, route_index = _valid_items(data.get("routes"), RouteConfig, context)
    services: dict[str, ServiceConfig] = {}
    raw_services = data.get("services")
    if isinstance(raw_services, dict):
        for name, raw in raw_services.items():
            if not isinstance(name, str):
                continue
            try:
                services[name] = ServiceConfig.model_validate(raw, context=context)
            except ValidationError:
                services[name] = ServiceConfig(instances=[])
    try:
        partial = Config.model_construct(
            listeners=listeners if "listeners" in data else Config().listeners,
            services=services,
            routes=routes,
        )
        issues = semantic.check(partial)
    except Exception:  # a stand-in the checks cannot read: report what the model said only
        return []
    remapped: list[tuple[FieldPath, str]] = []
    for path, message in issues:
        if len(path) > 1 and path[0] == "routes" and isinstance(path[1], int):
            path = ("routes", route_index[path[1]], *path[2:])
        elif len(path) > 1 and path[0] == "listeners" and isinstance(path[1], int):
            path = ("listeners", listener_index[path[1]], *path[2:])
        remapped.append((path, message))
    return remapped


def _valid_items(
    raw: object, model: type[_M], context: dict[str, str]
) -> tuple[list[_M], list[int]]:
    items: list[_M] = []
    positions: list[int] = []
    if isinstance(raw, list):
        for position, item in enumerate(raw):
            try:
                items.append(model.model_validate(item, context=context))
            except ValidationError:
                continue
            positions.append(position)
    return items, positions
