"""Controller mode's builds: the informers' objects through manifest mode's translation.

The objects come from the API server's stores instead of files; everything after that is
``Controller``'s: the same validation (``parse``), the last valid version of each object kept
when an edit breaks it, the same translation, the config published as JSON for the workers.

A build is skipped when the parsed objects are those of the last build: the controller's own
status writes, and every change of a field Portway does not read (a Service's status, an
EndpointSlice's hints), come back through the watch and must not reload the workers. Parsing is
cached per object and ``resourceVersion``, so an unchanged cluster costs a dictionary lookup per
object.

Unlike manifest mode, the build runs in the controller's thread, not in the supervisor's loader:
the loader in the supervisor returns the config the last build published (``load``), and the
controller sends SIGHUP after each build that changed it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

from portway.config.model import Config
from portway.errors import ConfigError, ConfigIssue
from portway.kubernetes.controller import Collected, Controller
from portway.kubernetes.informer import RawObject, version_of
from portway.kubernetes.issues import ManifestIssue, Source
from portway.kubernetes.objects import KubeObject, ObjectKey
from portway.kubernetes.parse import Parsed, parse_object
from portway.kubernetes.translate import Options

API_SOURCE = Source("", None)  # objects read from the API server: no file, no document


class ClusterController(Controller):
    """Builds from raw API objects (``rebuild``); see the module docstring."""

    def __init__(self, options: Options, state_dir: Path) -> None:
        super().__init__(options, state_dir, "cluster")
        self.config: Config | None = None  # the last published config
        self.builds = 0  # builds made (skipped ones not counted)
        self._lock = threading.Lock()
        self._raw: list[RawObject] = []
        self._parsed: dict[tuple[str, str, str, str], Parsed] = {}
        self._last_input: tuple[dict[ObjectKey, KubeObject], frozenset[ObjectKey]] | None = None

    def load(self) -> Config:
        """The ``ConfigLoader``: the last published config in the supervisor (the controller
        thread built it), the published file in the other processes."""
        if os.getpid() != self.owner:
            return self.read_published()
        with self._lock:
            if self.config is None:
                raise ConfigError([ConfigIssue(self.origin, "", "no build yet")])
            return self.config

    def rebuild(self, raw: Iterable[RawObject]) -> Config | None:
        """Build from ``raw`` unless it parses to what the last build had: the new config, or
        None when nothing a build reads changed. Raises ``ConfigError`` as ``build`` does."""
        self._raw = list(raw)
        issues: list[ManifestIssue] = []
        objects, _, invalid, _ = self.collect(issues)
        snapshot = (objects, frozenset(invalid))
        if self._last_input is not None and snapshot == self._last_input and self.report:
            return None
        config = self.build()
        self._last_input = snapshot
        self.builds += 1
        with self._lock:
            self.config = config
        return config

    def collect(self, issues: list[ManifestIssue]) -> Collected:
        objects: dict[ObjectKey, KubeObject] = {}
        keys: set[ObjectKey] = set()
        invalid: set[ObjectKey] = set()
        cache: dict[tuple[str, str, str, str], Parsed] = {}
        for raw in self._raw:
            meta = raw.get("metadata") or {}
            cached = (str(raw.get("kind")), str(meta.get("namespace") or ""),
                      str(meta.get("name")), version_of(raw) or "")  # fmt: skip
            parsed = self._parsed.get(cached) or parse_object(raw, API_SOURCE)
            cache[cached] = parsed
            obj, key, found = parsed
            issues += found
            if key is None:
                continue
            keys.add(key)
            if obj is None:
                invalid.add(key)
            else:
                objects[key] = obj
        self._parsed = cache  # only the current versions: the cache never outgrows the cluster
        return objects, keys, invalid, []
