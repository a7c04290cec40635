"""Which Ingresses are Portway's: the Kubernetes rules for choosing an Ingress's controller.

In order (Kubernetes docs, "Ingress class" and "Default IngressClass"):

1. ``spec.ingressClassName`` names an IngressClass whose ``spec.controller`` is
   ``portway.io/ingress-controller``, or names the class Portway is told to serve
   (``--ingress-class``, default ``portway``) when no IngressClass of that name says otherwise;
2. else the deprecated ``kubernetes.io/ingress.class`` annotation, compared the same way;
3. else, with neither, the Ingress belongs to the default IngressClass: the one annotated
   ``ingressclass.kubernetes.io/is-default-class: "true"``. When that class is Portway's, so is
   the Ingress. Two default classes are reported and then none applies, as the admission
   controller would refuse such an Ingress.

Ingresses of other classes are left alone silently (another controller serves them).
"""

from __future__ import annotations

import datetime as dt

from portway.kubernetes.issues import ManifestIssue, issue_at
from portway.kubernetes.objects import (
    CONTROLLER,
    DEFAULT_CLASS_ANNOTATION,
    LEGACY_CLASS_ANNOTATION,
    Ingress,
    Objects,
)


def select_ingresses(
    objects: Objects, class_name: str
) -> tuple[list[Ingress], list[ManifestIssue]]:
    """The Ingresses Portway serves, oldest first (see ``precedence``), and class problems."""
    issues: list[ManifestIssue] = []
    classes = {c.meta.name: c for c in objects.classes}
    ours = {name for name, c in classes.items() if c.controller == CONTROLLER}
    if class_name not in classes:
        ours.add(class_name)
    defaults = sorted(name for name, c in classes.items() if c.is_default)
    if len(defaults) > 1:
        for name in defaults:
            item = classes[name]
            issues.append(
                issue_at(
                    item.source,
                    "IngressClass",
                    name,
                    f"metadata.annotations[{DEFAULT_CLASS_ANNOTATION}]",
                    f"more than one default IngressClass ({', '.join(defaults)}): Ingresses "
                    "without a class get none",
                    "warning",
                )
            )
    default = defaults[0] if len(defaults) == 1 else None
    selected = []
    for ingress in objects.ingresses:
        legacy = ingress.meta.annotations.get(LEGACY_CLASS_ANNOTATION)
        chosen = ingress.class_name or legacy or default
        if chosen is not None and chosen in ours:
            selected.append(ingress)
    return sorted(selected, key=precedence), issues


def precedence(ingress: Ingress) -> tuple[bool, str, str, str]:
    """Older first: by creationTimestamp (objects without one come after those with one), then
    namespace and name. Conflicts between Ingresses go to the one that sorts first."""
    created = ingress.meta.created
    stamp = created.astimezone(dt.UTC).isoformat() if created is not None else ""
    return (created is None, stamp, ingress.meta.namespace, ingress.meta.name)
