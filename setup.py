"""Optional compiled build of the data plane's hot path with mypyc (docs/performance.md).

The package is pure Python; the modules in ``COMPILED`` can also be compiled to C extensions by
mypyc, which roughly divides their cost by three. Compiled modules sit next to their sources and
win the import; absent, the sources run unchanged. What ``PORTWAY_COMPILE`` says:

* unset: a regular install (``pip install .``, a wheel) compiles when it can, and falls back to the
  pure-Python package with a warning when it cannot (no C compiler, no Python headers, mypyc
  refusing the code). An editable install (``pip install -e .``, scripts/bootstrap) does not
  compile: extensions built in place would shadow the sources a developer edits.
* ``1``: compile, also in place for an editable install; a failure fails the install.
* ``0``: never compile.

mypy (which ships mypyc) is then a build requirement, fetched into the isolated build environment
like setuptools; the compiled package does not need it at run time.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The hot path, and what it calls per request. Kept to modules whose every class may be native: no
# monkeypatching of their functions, no subclassing from uncompiled code (see docs/performance.md).
COMPILED = [
    "src/portway/messages.py",
    "src/portway/write_batch.py",
    "src/portway/deadlines.py",
    "src/portway/routing/normalize.py",
    "src/portway/routing/table.py",
    "src/portway/balancing/endpoint.py",
    "src/portway/balancing/base.py",
    "src/portway/balancing/round_robin.py",
    "src/portway/balancing/least_request.py",
    "src/portway/balancing/random_choice.py",
    "src/portway/balancing/weighted.py",
    "src/portway/balancing/hashing.py",
    "src/portway/balancing/sticky.py",
    "src/portway/balancing/ramp.py",
    "src/portway/balancing/health.py",
    "src/portway/balancing/outlier.py",
    "src/portway/observability/stats.py",
    "src/portway/observability/access_log.py",
    "src/portway/observability/log_lines.py",
    "src/portway/observability/trace_context.py",
    "src/portway/upstream/connection.py",
    "src/portway/upstream/pool.py",
    "src/portway/upstream/forward.py",
    "src/portway/proxy/accounting.py",
    "src/portway/proxy/response_head.py",
    "src/portway/proxy/service.py",
    "src/portway/proxy/client.py",
    "src/portway/proxy/exchange_state.py",  # the base of Exchange: compiled with it, or not at all
    "src/portway/proxy/exchange.py",
    "src/portway/proxy/tries.py",  # functions of Exchange: compiled with it, so calls stay native
    "src/portway/proxy/upgrade.py",  # subclasses Exchange: compiled with it, or not at all
    "src/portway/server/http1.py",
    # What http1 reads per request: the worker's context and its snapshot (native attribute reads
    # instead of the object protocol's).
    "src/portway/server/context.py",
    "src/portway/dataplane.py",
    # Plain functions of http1's connection on its per-request path: compiled with it, so the calls
    # stay native.
    "src/portway/server/exchange_builder.py",
    "src/portway/server/local_answers.py",
    "src/portway/server/policy_wait.py",
]
# mypyc type-checks what it compiles. Its own settings rather than pyproject's [tool.mypy]: that
# one loads the pydantic plugin and checks everything strictly, which an isolated build
# environment (setuptools, wheel, mypy) cannot do. Imports it cannot resolve are typed Any.
MYPY_OPTIONS = [
    "--config-file",
    os.devnull,
    "--python-version",
    f"{sys.version_info.major}.{sys.version_info.minor}",
    "--ignore-missing-imports",
    "--follow-imports=silent",
]
MYPY_REQUIREMENT = "mypy>=1.16"  # the mypyc that built and tested this code

setting = os.environ.get("PORTWAY_COMPILE", "").strip()
required = setting == "1"
editable = "editable_wheel" in sys.argv
wanted = required or (setting != "0" and not editable)
# setup.py also runs to list build requirements and metadata (egg_info, dist_info): compile only
# for a command that builds.
BUILDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "install", "develop"}
building = any(argument in BUILDS for argument in sys.argv[1:])


def _warn(message: str) -> None:
    if len(message) > 300:
        message = message[:300] + "..."
    print(f"portway: {message}; installing the pure-Python package", file=sys.stderr)


def _extensions() -> list[object]:
    if not (wanted and building):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        if required:
            raise
        _warn(f"mypyc is not installed ({MYPY_REQUIREMENT})")
        return []
    try:
        return list(
            mypycify(
                COMPILED + MYPY_OPTIONS,
                opt_level="3",
                debug_level="0",
                target_dir="build/mypyc",
            )
        )
    except BaseException as exc:  # mypyc reports type errors with SystemExit
        if required:
            raise
        _warn(f"mypyc could not compile the hot path ({type(exc).__name__}: {exc})")
        return []


class OptionalBuildExt(build_ext):
    """Build the compiled modules, or none of them: a partial set would not import."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            if required:
                raise
            for output in self.get_outputs():
                if os.path.exists(output):
                    os.remove(output)
            _warn(f"the C compiler failed ({exc})")


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    setup_requires=[MYPY_REQUIREMENT] if wanted else [],
)
