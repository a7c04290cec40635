"""Manifest mode's state across rebuilds: last valid versions, the published config, the report.

A build reads the directory, parses every document, and translates. Fault isolation is per object,
as a cluster would give it: an object the API server would refuse (``parse``) or that Portway
refuses (``translate``: a bad regex, a snippet annotation) is replaced by its last valid version
when there is one, so a broken edit of one Ingress never takes down another, nor the edited one's
working routes; the issue is reported until the edit is fixed. An Ingress refused as it was last
served (a Secret it reads, an htpasswd file, was edited into something it cannot use) has the
Secrets of its namespace edited since then put back to their last valid versions, the same way.
A file that stops parsing keeps the objects it last had (an editor's half-written save must not
drop routes); a deleted file or document deletes its objects. Two documents defining one object:
the first in path order wins.

Processes: ``portway run`` forks workers from the supervisor, and each worker reloads on SIGHUP by
calling the loader. Only the supervisor (the process that made the controller) builds; it writes
the resulting config as JSON to the state directory before returning it, and the loader in any
other process reads that file. So every process serves the same config (same fingerprint for the
admin API's readiness) and the per-object memory lives in one place.

``Controller`` is that shared part: objects in, last valid versions substituted, translation,
publication, report. ``ManifestController`` feeds it from a directory; ``cluster.ClusterController``
feeds it from the API server's watch (``portway controller``), so both modes translate the same way.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from portway.config.model import Config
from portway.errors import ConfigError, ConfigIssue
from portway.kubernetes.classes import select_ingresses
from portway.kubernetes.files import SecretFiles
from portway.kubernetes.issues import ManifestIssue, Report, issue_at, log, log_changes
from portway.kubernetes.load import ManifestFile, read_directory
from portway.kubernetes.objects import KubeObject, ObjectKey, Objects, key_of
from portway.kubernetes.parse import parse_object
from portway.kubernetes.translate import Options, Translation, translate

PUBLISHED = "config.json"


Collected = tuple[dict[ObjectKey, KubeObject], set[ObjectKey], set[ObjectKey], list[str]]


class Controller:
    """Builds from the objects a subclass collects: keeps each object's last valid version,
    translates, publishes the config for the other processes and keeps the report."""

    def __init__(self, options: Options, state_dir: Path, origin: str) -> None:
        self.options = options
        self.state_dir = state_dir
        self.origin = origin  # what the objects come from, for build errors
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.files = SecretFiles(state_dir)
        self.owner = os.getpid()
        self.last_good: dict[ObjectKey, KubeObject] = {}
        self.report: Report | None = None
        self.generation = 0
        self.served: frozenset[ObjectKey] = frozenset()  # Ingresses the last build serves

    @property
    def published(self) -> Path:
        return self.state_dir / PUBLISHED

    def read_published(self) -> Config:
        """The config the owner published: what every other process serves."""
        try:
            return Config.model_validate_json(self.published.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError([ConfigIssue(str(self.published), "", str(exc))]) from None

    def stats(self) -> dict[str, Any]:
        """The last build's report for the admin API's metrics."""
        return {"kubernetes": self.report.stats()} if self.report is not None else {}

    def build(self) -> Config:
        """Rebuild from the current objects, publish and return the config; raises
        ``ConfigError`` (and publishes nothing) only when no valid config can be made at all."""
        try:
            return self._build()
        except ConfigError:
            raise
        except Exception as exc:  # a translation bug must not take the supervisor down
            log.exception("%s: the build failed; the running config keeps serving", self.origin)
            raise ConfigError([ConfigIssue(self.origin, "", repr(exc))]) from None

    def collect(self, issues: list[ManifestIssue]) -> Collected:
        """(valid objects, every key seen, keys of invalid objects, kept notes), issues added."""
        raise NotImplementedError

    def _build(self) -> Config:
        issues: list[ManifestIssue] = []
        objects, keys, invalid, kept = self.collect(issues)
        for key in sorted(invalid):
            if key in self.last_good and key not in objects:
                objects[key] = self.last_good[key]
                kept.append(f"{key[0]} {_ref(key)}")
        result = translate(Objects.of(list(objects.values())), self.options, self.files)
        retry = [
            k
            for k in result.rejected
            if k in self.last_good and self.last_good[k] != objects.get(k)
        ]
        # An Ingress refused as it was last served: a Secret it reads (an htpasswd file, a CA) was
        # edited into something it cannot use. The Secrets of its namespace edited since the last
        # build go back to their last valid versions, so the Ingress keeps serving as it did.
        unchanged = {k for k in result.rejected if k in self.last_good and k not in retry}
        namespaces = {key[1] for key in unchanged}
        secrets = [
            k
            for k, obj in objects.items()
            if k[0] == "Secret" and k[1] in namespaces and k in self.last_good
            and self.last_good[k] != obj
        ]  # fmt: skip
        retry += secrets
        if retry:
            for key in retry:
                objects[key] = self.last_good[key]
                kept.append(f"{key[0]} {_ref(key)}")
            refused = {(key[0], _ref(key)) for key in [*retry, *(unchanged if secrets else ())]}
            issues += [i for i in result.issues  # why the current versions were refused
                       if i.severity == "error" and (i.kind, i.name) in refused]  # fmt: skip
            result = translate(Objects.of(list(objects.values())), self.options, self.files)
        for key, obj in objects.items():
            if key not in result.rejected and key not in invalid:
                self.last_good[key] = obj
        for key in list(self.last_good):
            if key not in keys:
                del self.last_good[key]  # deleted: nothing to keep
        self.files.finish_build()
        chosen, _ = select_ingresses(Objects.of(list(objects.values())), self.options.ingress_class)
        self.served = frozenset(key_of(i) for i in chosen) - result.rejected
        return self._publish(result, issues, len(objects), kept)

    def _publish(
        self, result: Translation, issues: list[ManifestIssue], count: int, kept: list[str]
    ) -> Config:
        self.generation += 1
        text = result.config.model_dump_json()
        config = Config.model_validate_json(text)  # exactly what the other processes will read
        temporary = self.published.with_name(f".{PUBLISHED}.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, self.published)
        report = Report(
            issues=tuple(sorted(set(issues + result.issues), key=ManifestIssue.sort_key)),
            objects=count,
            routes=len(config.routes),
            services=len(config.services),
            policies=len(config.policies),
            generation=self.generation,
            kept=tuple(sorted(set(kept))),
        )
        log_changes(self.report, report)
        self.report = report
        log.info("%s build %d: %s", self.origin, self.generation, report.summary())
        return config


class ManifestController(Controller):
    """Manifest mode: the objects are the documents of the files under a directory."""

    def __init__(self, directory: Path, options: Options, state_dir: Path) -> None:
        super().__init__(options, state_dir, "manifests")
        self.directory = directory
        self.parsed: dict[str, ManifestFile] = {}  # last readable version of each file

    def load(self) -> Config:
        """The ``ConfigLoader``: builds in the supervisor, reads the published build elsewhere."""
        if os.getpid() != self.owner:
            return self.read_published()
        return self.build()

    def collect(self, issues: list[ManifestIssue]) -> Collected:
        if not self.directory.is_dir():
            raise ConfigError([ConfigIssue(str(self.directory), "", "not a directory")])
        stale: list[str] = []  # files that no longer parse: they keep their last objects
        files = read_directory(self.directory)
        present = {f.path for f in files}
        self.parsed = {path: f for path, f in self.parsed.items() if path in present}
        objects: dict[ObjectKey, KubeObject] = {}
        seen: dict[ObjectKey, str] = {}
        invalid: set[ObjectKey] = set()
        for manifest in files:
            if manifest.problem is not None:
                issues.append(manifest.problem)
                previous = self.parsed.get(manifest.path)
                if previous is None:
                    continue
                stale.append(f"file {manifest.path}")
                manifest = previous
            self.parsed[manifest.path] = manifest
            for document in manifest.documents:
                obj, key, found = parse_object(document.raw, document.source)
                issues += found
                if key is None:
                    continue
                if key in seen:
                    issues.append(issue_at(document.source, key[0], _ref(key), "",
                                           f"duplicate: also defined in {seen[key]}; that one is used"))  # fmt: skip
                    continue
                seen[key] = f"{document.source.file} document {document.source.document}"
                if obj is None:
                    invalid.add(key)
                else:
                    objects[key] = obj
        return objects, set(seen), invalid, stale


def _ref(key: ObjectKey) -> str:
    return f"{key[1]}/{key[2]}" if key[1] else key[2]


def one_shot(directory: Path, options: Options, state_dir: Path) -> tuple[Config | None, Report]:
    """Build once (``portway validate --manifests``): the config, or None, and the report."""
    controller = ManifestController(directory, options, state_dir)
    try:
        config = controller.build()
    except ConfigError as exc:
        issues = tuple(
            ManifestIssue(i.source, None, "", "", i.field, i.message) for i in exc.issues
        )
        return None, replace(Report(), issues=issues)
    assert controller.report is not None
    return config, controller.report


__all__ = ["Controller", "ManifestController", "key_of", "one_shot"]
