"""Kubernetes Ingress in manifest mode: ``portway run --manifests DIR``.

The data flows one way: manifest files -> validated objects (``load``, ``parse``) -> a native
``Config`` (``translate``) -> the existing data plane, which knows nothing of Kubernetes. The
controller keeps the last valid version of each object across rebuilds; the watcher asks the
supervisor to reload when the directory changes. See docs/kubernetes.md.
"""

from portway.kubernetes.controller import ManifestController, one_shot
from portway.kubernetes.issues import ManifestIssue, Report, Source
from portway.kubernetes.translate import Options, Translation, parse_default_backend, translate
from portway.kubernetes.watch import DirectoryWatcher

__all__ = [
    "DirectoryWatcher",
    "ManifestController",
    "ManifestIssue",
    "Options",
    "Report",
    "Source",
    "Translation",
    "one_shot",
    "parse_default_backend",
    "translate",
]
