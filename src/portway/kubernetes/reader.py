"""Reading typed fields of one raw object, with each problem pinned to its field path.

Manifests arrive as plain data (YAML or JSON); a field of the wrong type is reported the way the
API server's decoder would refuse it, and reading goes on with an empty value, so that one run
reports every problem of an object rather than the first.
"""

from __future__ import annotations

from typing import cast

from portway.kubernetes import names
from portway.kubernetes.issues import ManifestIssue, Source, issue_at


class Reader:
    """Reads typed fields of one object, collecting problems with their field paths."""

    def __init__(self, source: Source, kind: str) -> None:
        self.source, self.kind, self.name = source, kind, ""
        self.issues: list[ManifestIssue] = []

    def error(self, at: str, message: str) -> None:
        self.issues.append(issue_at(self.source, self.kind, self.name, at, message))

    def typed(self, value: object, at: str, kind: type, what: str) -> object:
        if value is None or (isinstance(value, kind) and (kind is bool or type(value) is not bool)):
            return value
        self.error(at, f"expected {what}, got {type(value).__name__} {value!r}")
        return None

    def mapping(self, value: object, at: str) -> dict[str, object]:
        return cast(dict[str, object], self.typed(value, at, dict, "a mapping") or {})

    def items(self, value: object, at: str) -> list[object]:
        return cast(list[object], self.typed(value, at, list, "a list") or [])

    def text(self, value: object, at: str, required: bool = False) -> str | None:
        text = cast("str | None", self.typed(value, at, str, "a string"))
        if required and not text:
            self.error(at, "Required value")
        return text

    def integer(self, value: object, at: str) -> int | None:
        return cast("int | None", self.typed(value, at, int, "an integer"))

    def flag(self, value: object, at: str) -> bool | None:
        return cast("bool | None", self.typed(value, at, bool, "true or false"))

    def check(self, problems: list[str], at: str, value: object) -> None:
        for problem in problems:
            self.error(at, f"Invalid value: {value!r}: {problem}")

    def strings(self, value: object, at: str) -> dict[str, str]:
        result = {}
        for key, item in self.mapping(value, at).items():
            self.check(names.qualified_name(str(key)), f"{at}[{key}]", key)
            if isinstance(item, str):
                result[str(key)] = item
            else:
                self.error(
                    f"{at}[{key}]",
                    f"expected a string, got {type(item).__name__} {item!r} (quote it: "
                    f'"{str(item).lower() if isinstance(item, bool) else item}")',
                )
        return result
