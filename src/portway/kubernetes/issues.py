"""Problems found in manifests, each pinned to where it was written, and the current set of them.

Every problem is a ``ManifestIssue``: the file, the index of the YAML document in that file (0 for
the first; a JSON ``List`` counts its items; neither for an object read from the API server in
controller mode, which the kind and name identify), the kind and ``namespace/name`` of the object, the
field path as ``kubectl explain`` spells it (``spec.rules[0].http.paths[1].pathType``) and a
message. ``error`` means the object (or the part named) is not served as written; ``warning``
means it is served, but not entirely as asked (an annotation Portway does not support yet, a
backend Service that does not exist and answers 503).

A ``Report`` is the outcome of one build: what the controller logs, what ``portway validate
--manifests`` prints, and what a metric or admin view can read later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger("portway.kubernetes")

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Source:
    """Where an object was read: a file and the document's index in it (0-based); ``""`` and None
    for an object read from the API server (``portway controller``)."""

    file: str
    document: int | None = 0
    line: int | None = None  # 1-based line where the document starts, when known


@dataclass(frozen=True, slots=True)
class ManifestIssue:
    file: str
    document: int | None  # None: the whole file (it could not be parsed)
    kind: str
    name: str  # "namespace/name", "name" for cluster-scoped kinds, "" when unknown
    field: str  # "spec.rules[0].host"; "" for the object as a whole
    message: str
    severity: Severity = "error"
    line: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.document is not None:
            where += f" document {self.document}"
        what = " ".join(part for part in (self.kind, self.name) if part)
        subject = f" {what}" if what else ""
        at = f" {self.field}:" if self.field else (":" if what else "")
        where = f" {where}:" if where else ""  # an object from the API server: no file
        return f"{self.severity}:{where}{subject}{at} {self.message}"

    def sort_key(self) -> tuple[str, int, str, str, str, str]:
        return (
            self.file,
            -1 if self.document is None else self.document,
            self.kind,
            self.name,
            self.field,
            self.message,
        )


def issue_at(
    source: Source,
    kind: str,
    name: str,
    field_path: str,
    message: str,
    severity: Severity = "error",
) -> ManifestIssue:
    return ManifestIssue(
        source.file, source.document, kind, name, field_path, message, severity, source.line
    )


@dataclass(frozen=True, slots=True)
class Report:
    """The issues of one build and what it produced."""

    issues: tuple[ManifestIssue, ...] = ()
    objects: int = 0
    routes: int = 0
    services: int = 0
    policies: int = 0
    generation: int = 0
    # "Kind namespace/name" (or "file PATH") serving its last valid version instead of the current
    kept: tuple[str, ...] = field(default=())

    @property
    def errors(self) -> list[ManifestIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[ManifestIssue]:
        return [i for i in self.issues if i.severity == "warning"]

    def stats(self) -> dict[str, Any]:
        """What the admin API's metrics show of this build (published by the supervisor)."""
        counts: dict[tuple[str, str], int] = {}
        for issue in self.issues:
            key = (issue.kind or "File", issue.severity)
            counts[key] = counts.get(key, 0) + 1
        return {
            "issues": [[kind, severity, n] for (kind, severity), n in sorted(counts.items())],
            "objects": self.objects,
            "kept": len(self.kept),
            "generation": self.generation,
        }

    def summary(self) -> str:
        policies = f", {self.policies} policies" if self.policies else ""
        return (
            f"{self.objects} objects: {self.routes} routes, {self.services} services{policies}; "
            f"{len(self.errors)} errors, {len(self.warnings)} warnings"
        )


def log_changes(previous: Report | None, current: Report) -> None:
    """Log the issues that are new since ``previous`` and those that went away: a watch loop
    rebuilds often, and repeating every standing warning on each rebuild would bury new ones."""
    before = set(previous.issues) if previous is not None else set()
    now = set(current.issues)
    for issue in sorted(now - before, key=ManifestIssue.sort_key):
        log.log(logging.ERROR if issue.severity == "error" else logging.WARNING, "%s", issue)
    for issue in sorted(before - now, key=ManifestIssue.sort_key):
        log.info("resolved: %s", issue)
    for kept in current.kept:
        if previous is None or kept not in previous.kept:
            log.warning("%s is invalid: its last valid version keeps serving", kept)
