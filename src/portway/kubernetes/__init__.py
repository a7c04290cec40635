"""Kubernetes Ingress: manifest mode (``portway run --manifests DIR``) and controller mode
(``portway controller``).

The data flows one way: manifest files or the API server's objects -> validated objects (``load``,
``parse``) -> a native ``Config`` (``translate``) -> the existing data plane, which knows nothing
of Kubernetes. The controller keeps the last valid version of each object across rebuilds; the
directory watcher, or in controller mode the informers (``informer``, ``live``), ask the
supervisor to reload when something changed. Controller mode's modules (``api``, ``informer``,
``cluster``, ``election``, ``status``, ``live``) are imported only by ``portway controller``, so
lightkube is loaded only there. See docs/kubernetes.md.
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
