"""ingress-nginx's rewrite and redirect annotations -> native route ``rewrite`` / ``redirect``.

Semantics followed (ingress-nginx docs, "Rewrite" example and the Annotations page):

* ``rewrite-target``: nginx's ``rewrite <path regex> <target> break``: when the path matches, the
  *whole* path is replaced by the target, whose ``$1``..``$9`` insert the path regex's groups. So
  ``/something(/|$)(.*)`` + ``/$2`` sends ``/something/new`` as ``/new``, and a Prefix ``/foo`` +
  ``/`` sends every ``/foo/...`` as ``/``. Natively: ``regex: ^(?:<path>).*`` (the path escaped
  unless it is ImplementationSpecific), ``replacement`` the target with ``\\N`` groups. The query
  string is kept, as nginx keeps it. Other nginx variables (``$host``...) are refused.
* ``permanent-redirect`` (301, or ``permanent-redirect-code``) and ``temporal-redirect`` (302):
  every path of the Ingress answers a redirect to the URL, without the request's path or query;
  ``temporal-redirect`` wins when both are set, as in ingress-nginx.
* ``app-root``: ``/`` (exactly) of each host of the Ingress answers 302 to the app root.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from portway.config.rewrites import RedirectConfig, RewriteConfig

NGINX = "nginx.ingress.kubernetes.io/"
_NGINX_VARIABLE = re.compile(r"\$(?:(\d)|\{(\d)\}|([A-Za-z_][A-Za-z0-9_]*))?")
_GLOBAL_FLAGS = re.compile(r"^\(\?[aiLmsux]+\)")
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})

Report = Callable[..., None]  # _Annotations.report(key, message, severity="error")


def nginx_replacement(target: str) -> str:
    """nginx's rewrite replacement -> Python's: ``$1``/``${1}`` -> ``\\1``; ``ValueError`` for any
    other variable, since serving without its value would send a wrong path."""
    out: list[str] = []
    position = 0
    for match in _NGINX_VARIABLE.finditer(target):
        out.append(target[position : match.start()].replace("\\", "\\\\"))
        group = match.group(1) or match.group(2)
        if group is None:
            name = match.group(3)
            what = f"nginx variable ${name}" if name else "a lone '$'"
            raise ValueError(f"{what} is not supported in rewrite-target (only $1 to $9)")
        out.append("\\" + group)
        position = match.end()
    out.append(target[position:].replace("\\", "\\\\"))
    return "".join(out)


def read_rewrites(annotations: dict[str, str], report: Report) -> dict[str, Any]:
    """The ``Policy`` fields of the rewrite and redirect annotations; problems go to ``report``."""
    fields: dict[str, Any] = {}
    target = annotations.get(NGINX + "rewrite-target")
    if target is not None:
        try:
            fields["rewrite_target"] = nginx_replacement(target.strip())
        except ValueError as exc:
            report(NGINX + "rewrite-target", str(exc))
    root = annotations.get(NGINX + "app-root")
    if root is not None:
        root = root.strip()
        problem = _redirect_problem({"to": root.replace("$", "$$"), "status": 302})
        if not root.startswith("/") or problem is not None:
            report(
                NGINX + "app-root", problem or f"an app root is a path starting with '/': {root!r}"
            )
        else:
            fields["app_root"] = root
    redirect = _redirect(annotations, report)
    if redirect is not None:
        fields["redirect"] = redirect
    return fields


def _redirect(annotations: dict[str, str], report: Report) -> dict[str, Any] | None:
    temporal = annotations.get(NGINX + "temporal-redirect", "").strip()
    permanent = annotations.get(NGINX + "permanent-redirect", "").strip()
    if temporal:
        key, url, status = NGINX + "temporal-redirect", temporal, 302
        if permanent:
            report(NGINX + "permanent-redirect", "temporal-redirect is set too and wins", "warning")
    elif permanent:
        key, url, status = NGINX + "permanent-redirect", permanent, 301
        code = annotations.get(NGINX + "permanent-redirect-code")
        if code is not None:
            code = code.strip()
            if code.isdigit() and int(code) in _REDIRECT_CODES:
                status = int(code)
            else:
                report(NGINX + "permanent-redirect-code",
                       f"expected 301, 302, 303, 307 or 308, got {code!r}: 301 is used", "warning")  # fmt: skip
    else:
        return None
    redirect = {"to": url.replace("$", "$$"), "status": status}
    problem = _redirect_problem(redirect)
    if problem is not None:
        report(key, problem)
        return None
    return redirect


def _redirect_problem(redirect: dict[str, Any]) -> str | None:
    try:
        RedirectConfig.model_validate(redirect)
    except ValidationError as exc:
        return "; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors())
    return None


def route_action(
    rewrite_target: str | None, redirect: dict[str, Any] | None, path_type: str, path: str
) -> dict[str, Any]:
    """The ``rewrite`` or ``redirect`` RouteConfig field of one Ingress path (maybe none)."""
    if redirect is not None:
        return {"redirect": redirect}  # nginx returns before it would rewrite
    if rewrite_target is None:
        return {}
    source = path if path_type == "regex" else re.escape(path)
    flags = _GLOBAL_FLAGS.match(source)
    head = flags.group() if flags else ""
    regex = f"{head}^(?:{source[len(head) :]}).*"
    return {"rewrite": {"regex": regex, "replacement": rewrite_target}}


def action_problem(action: dict[str, Any]) -> str | None:
    """Why the native route would refuse ``action`` (a group the path lacks, a '?' in the target)."""
    rewrite = action.get("rewrite")
    if rewrite is None:
        return None
    try:
        RewriteConfig.model_validate(rewrite)
    except ValidationError as exc:
        message = "; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors())
        return f"rewrite-target cannot apply to this path: {message}"
    return None
