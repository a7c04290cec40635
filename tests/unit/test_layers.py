"""Imports point down the pipeline: the layering of docs/architecture.md, enforced.

Every ``src/portway/**/*.py`` is parsed (never imported) and every import of a ``portway`` module is
collected: at module level, inside functions, and under ``if TYPE_CHECKING:`` (each is a
dependency, so each obeys the same rule). A module belongs to a *unit*, normally its package
(``portway.routing.table`` -> ``routing``; a top-level module such as ``portway.dataplane`` is its
own unit). The rule:

* a module may import its own unit, or a unit in a lower layer;
* units of one layer (``routing`` and ``balancing``) do not import each other.

A module may sit in a different layer than its package: ``PLACED_APART`` names it with the reason
(today none), and a test keeps that list honest: each entry must still exist and still be needed.

``python -m tests.unit.test_layers`` prints the unit-level import graph.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src"
PACKAGE = "portway"

# Lowest first. A unit may import the units of the layers before its own.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),  # the error tree
    ("messages",),  # Request: what routing and balancing see of a request
    ("pki",),  # certificates and keys read from files and checked; no sockets
    ("config",),  # the declared config: model, loader, reference
    ("kubernetes",),  # Ingress manifests -> a native Config; never the data plane
    ("routing", "balancing"),  # generic over their targets; siblings, never importing each other
    ("write_batch",),  # a worker's socket writes held to the end of a loop iteration
    ("deadlines",),  # the per-worker Sweeper: runtime machinery for connections
    ("observability",),  # request statistics and the access log: written by proxy and server
    ("tls",),  # SSL contexts, certificates by SNI and their reload, client identity, ClientHello
    ("acme",),  # ACME account, orders and renewals (certbot's acme library); the ACME process
    ("health",),  # active health checks: probes, the shared board, the prober; set Endpoint.healthy
    ("upstream",),  # pools and connections to instances, forwarding headers
    ("proxy", "policies"),  # Service and Exchange: pick, connect, relay | auth, rate limits
    ("dataplane",),  # Config -> Snapshot
    ("server",),  # the client-side protocol and the worker's shared context
    ("admin",),  # the admin API: reads workers' reports and the boards; served by a gateway or
    # by its own process
    ("gateway",),  # one worker's composition root
    ("supervisor",),  # forks workers that each run a Gateway
    ("demo",),
    ("cli",),
    ("__main__", ""),  # ``python -m portway`` and the package root
)

# Modules whose layer is not their package's, and why; a test says when an entry is obsolete.
PLACED_APART: dict[str, str] = {}

RANK: dict[str, int] = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


@dataclass(frozen=True, slots=True)
class Import:
    importer: str  # dotted module name
    path: str  # the importing file, relative to the repository
    line: int
    target: str  # the imported portway module, resolved
    kind: str  # "module level", "function level" or "TYPE_CHECKING"


def module_name(path: Path) -> tuple[str, bool]:
    """Dotted name of ``path`` under src/, and whether it is a package (``__init__.py``)."""
    parts = path.relative_to(SOURCE).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def source_files() -> list[Path]:
    return sorted((SOURCE / PACKAGE).rglob("*.py"))


def known_modules() -> frozenset[str]:
    return frozenset(module_name(path)[0] for path in source_files())


def unit_of(module: str) -> str:
    """The unit whose layer ``module`` is in: a ``PLACED_APART`` entry, else its package."""
    for placed in PLACED_APART:
        if module == placed or module.startswith(placed + "."):
            return placed.removeprefix(PACKAGE + ".")
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, path: str, known: frozenset[str]) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.path = path
        self.known = known
        self.imports: list[Import] = []
        self._functions = 0
        self._type_checking = 0

    def _kind(self) -> str:
        if self._type_checking:
            return "TYPE_CHECKING"
        return "function level" if self._functions else "module level"

    def _add(self, node: ast.AST, target: str) -> None:
        if target == PACKAGE or target.startswith(PACKAGE + "."):
            line = getattr(node, "lineno", 0)
            self.imports.append(Import(self.module, self.path, line, target, self._kind()))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.visit(node.test)
        self._type_checking += 1
        for child in node.body:
            self.visit(child)
        self._type_checking -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base_parts = self.package.split(".")
            if node.level > 1:
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join([*base_parts, node.module] if node.module else base_parts)
        else:
            base = node.module or ""
        for alias in node.names:
            # ``from portway.server import http1`` imports the module portway.server.http1.
            candidate = f"{base}.{alias.name}"
            self._add(node, candidate if candidate in self.known else base)


def imports_in(
    source: str, module: str, *, is_package: bool = False, path: str = "", known: frozenset[str]
) -> list[Import]:
    """Every portway import in ``source``, the text of module ``module``."""
    collector = _Collector(module, is_package, path or module, known)
    collector.visit(ast.parse(source, filename=path or module))
    return collector.imports


def all_imports() -> list[Import]:
    known = known_modules()
    found: list[Import] = []
    for path in source_files():
        module, is_package = module_name(path)
        found += imports_in(
            path.read_text(encoding="utf-8"),
            module,
            is_package=is_package,
            path=str(path.relative_to(ROOT)),
            known=known,
        )
    return found


def violation(imp: Import) -> str | None:
    """Why ``imp`` breaks the layering, naming the file and the forbidden module; None if it is fine."""
    importer, imported = unit_of(imp.importer), unit_of(imp.target)
    where = f"{imp.path}:{imp.line}: {imp.importer} imports {imp.target} ({imp.kind})"
    for unit, module in ((importer, imp.importer), (imported, imp.target)):
        if unit not in RANK:
            return f"{where}: {module} is in no layer; add '{unit}' to LAYERS in {__name__}"
    if importer == imported:
        return None
    low, high = RANK[imported], RANK[importer]
    if low < high:
        return None
    allowed = [u or "(root)" for units in LAYERS[:high] for u in units]
    if low == high:
        why = f"'{importer}' and '{imported}' are in the same layer and must not import each other"
    else:
        why = f"'{imported}' is above '{importer}', which may import only: {', '.join(allowed)}"
    return f"{where}: {why}"


def violations(imports: list[Import]) -> list[str]:
    return [message for imp in imports if (message := violation(imp)) is not None]


def unit_graph(imports: list[Import]) -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> the importing modules (other units only)."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for imp in imports:
        importer, imported = unit_of(imp.importer), unit_of(imp.target)
        if importer != imported:
            suffix = "" if imp.kind == "module level" else f" [{imp.kind}]"
            graph[importer][imported].add(imp.importer + suffix)
    return {
        unit: {target: sorted(graph[unit][target]) for target in sorted(graph[unit])}
        for unit in sorted(graph, key=lambda u: RANK.get(u, -1))
    }


# -- the code as it is ---------------------------------------------------------------------------


def test_the_scan_sees_every_kind_of_import() -> None:
    """A scan that silently found nothing would pass everything: check what it finds."""
    found = all_imports()
    assert {imp.kind for imp in found} == {"module level", "function level", "TYPE_CHECKING"}
    edges = {(imp.importer, imp.target, imp.kind) for imp in found}
    assert ("portway.dataplane", "portway.proxy.service", "module level") in edges
    assert len({imp.importer for imp in found}) >= 30


def test_every_module_is_in_a_layer() -> None:
    missing = sorted({m for m in known_modules() if unit_of(m) not in RANK})
    assert not missing, f"modules in no layer (add their package to LAYERS): {missing}"


def test_imports_point_down_the_layers() -> None:
    problems = violations(all_imports())
    assert not problems, "layering violations:\n" + "\n".join(problems)


EXPLICIT_RULES: list[tuple[str, frozenset[str]]] = [
    # (unit, units it must never import): stated without LAYERS, so reordering LAYERS cannot
    # quietly allow them.
    (
        "config",
        frozenset({"proxy", "server", "supervisor", "upstream", "routing", "balancing"}),
    ),
    ("routing", frozenset(RANK) - {"routing", "config", "messages", "errors"}),
    ("balancing", frozenset(RANK) - {"balancing", "config", "messages", "errors"}),
    # Health checks see services only through the HasEndpoints protocol, never the data plane.
    ("health", frozenset({"upstream", "proxy", "dataplane", "server", "gateway", "supervisor"})),
    # Manifest mode only produces a native Config: the data flows one way, never back.
    ("kubernetes", frozenset(RANK) - {"kubernetes", "config", "pki", "messages", "errors"}),
    ("errors", frozenset(RANK) - {"errors"}),
    ("messages", frozenset(RANK) - {"messages", "errors"}),
]


@pytest.mark.parametrize(("unit", "forbidden"), EXPLICIT_RULES, ids=[r[0] for r in EXPLICIT_RULES])
def test_lower_packages_never_import_what_is_above_them(
    unit: str, forbidden: frozenset[str]
) -> None:
    bad = [
        f"{imp.path}:{imp.line}: {imp.importer} imports {imp.target} ({imp.kind})"
        for imp in all_imports()
        if unit_of(imp.importer) == unit and unit_of(imp.target) in forbidden
    ]
    assert not bad, "\n".join(bad)


def test_each_module_placed_apart_exists_and_still_needs_it() -> None:
    """An entry for a moved module, or one the package's own layer would accept, is stale."""
    for module in sorted(PLACED_APART):
        assert module in known_modules(), f"{module} no longer exists: remove it from PLACED_APART"
        saved = PLACED_APART.pop(module)
        try:
            needed = [
                message
                for imp in all_imports()
                if module in (imp.importer, imp.target) and (message := violation(imp)) is not None
            ]
        finally:
            PLACED_APART[module] = saved
        assert needed, f"{module} obeys its package's layer now: remove it from PLACED_APART"


# -- the checker itself --------------------------------------------------------------------------

KNOWN = known_modules()


def check_source(module: str, source: str) -> list[str]:
    path = "src/" + module.replace(".", "/") + ".py"
    return violations(imports_in(source, module, path=path, known=KNOWN))


@pytest.mark.parametrize(
    ("module", "source", "forbidden", "kind"),
    [
        (
            "portway.config.fake",
            "from portway.proxy.exchange import Exchange\n",
            "portway.proxy.exchange",
            "module level",
        ),
        (
            "portway.config.fake",
            "import portway.server.http1 as http1\n",
            "portway.server.http1",
            "module level",
        ),
        (
            "portway.routing.fake",
            "def pick():\n    from portway.balancing import make_balancer\n    return make_balancer\n",
            "portway.balancing",
            "function level",
        ),
        (
            "portway.balancing.fake",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from portway.routing.table import RouteTable\n",
            "portway.routing.table",
            "TYPE_CHECKING",
        ),
        (
            "portway.upstream.fake",
            "from ..server import http1\n",  # relative: resolves to portway.server.http1
            "portway.server.http1",
            "module level",
        ),
        (
            "portway.upstream.fake",
            "from portway.server import context\n",  # server/ is above upstream
            "portway.server.context",
            "module level",
        ),
        (
            "portway.server.fake",
            "async def later():\n    import portway.gateway\n",
            "portway.gateway",
            "function level",
        ),
        (
            "portway.gateway",
            "from portway import supervisor\n",
            "portway.supervisor",
            "module level",
        ),
        (
            "portway.messages",
            "from portway.config.model import Config\n",
            "portway.config.model",
            "module level",
        ),
        (
            "portway.server.fake",
            "from portway.supervisor import Supervisor\n",
            "portway.supervisor",
            "module level",
        ),
    ],
)
def test_the_checker_reports_a_violation_naming_file_and_module(
    module: str, source: str, forbidden: str, kind: str
) -> None:
    problems = check_source(module, source)
    assert len(problems) == 1, problems
    path = "src/" + module.replace(".", "/") + ".py"
    assert problems[0].startswith(f"{path}:"), problems[0]
    assert forbidden in problems[0] and f"({kind})" in problems[0], problems[0]


@pytest.mark.parametrize(
    ("module", "source"),
    [
        (
            "portway.proxy.fake",
            "from portway.upstream.pool import Pool\nfrom portway import errors\n",
        ),
        (
            "portway.routing.fake",
            "from .table import RouteTable\nfrom ..config.model import Config\n",
        ),
        ("portway.upstream.fake", "from portway.deadlines import Sweeper\n"),
        ("portway.server.fake", "from portway.server.http1 import ClientConnection\n"),
        ("portway.cli", "def f():\n    from portway.demo.runner import run_demo\n"),
        ("portway.config.fake", "import os\nfrom typing import TYPE_CHECKING\n"),  # not portway
    ],
)
def test_the_checker_accepts_allowed_imports(module: str, source: str) -> None:
    assert check_source(module, source) == []


def test_the_checker_reports_a_package_in_no_layer() -> None:
    problems = check_source("portway.plugins.api", "from portway.errors import ConfigError\n")
    assert problems == [
        "src/portway/plugins/api.py:1: portway.plugins.api imports portway.errors (module level): "
        f"portway.plugins.api is in no layer; add 'plugins' to LAYERS in {__name__}"
    ]


def test_relative_imports_resolve_from_a_package_init() -> None:
    found = imports_in(
        "from . import table\nfrom .. import errors\n",
        "portway.routing",
        is_package=True,
        known=KNOWN,
    )
    assert [imp.target for imp in found] == ["portway.routing.table", "portway.errors"]


if __name__ == "__main__":
    graph = unit_graph(all_imports())
    for unit, targets in graph.items():
        print(f"{unit or '(root)'} (layer {RANK.get(unit, '?')}):")
        for target, importers in targets.items():
            print(f"  -> {target or '(root)'}: {', '.join(importers)}")
