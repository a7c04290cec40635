#!/usr/bin/env bash
# Build the mypyc-compiled package (setup.py, PORTWAY_COMPILE=1) into build/bench-compiled, for the
# benchmarks: a folder put first on PYTHONPATH, so the project's .venv (and its dependencies) runs
# the compiled hot path instead of src/. Rebuilt only when a source file or setup.py changed.
#   bench/build_compiled.sh                 # prints the folder
#   bench/build_compiled.sh --test [ARGS]   # and runs the test suite against it (pytest ARGS)
# Needs a C compiler and the Python headers; pip fetches the build requirements (setuptools, mypy).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$repo/build/bench-compiled"
python="$repo/.venv/bin/python"
stamp="$(cd "$repo" && find setup.py pyproject.toml src/portway -name '*.py' -o -name '*.toml' \
  | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"

if [ ! -f "$out/.stamp" ] || [ "$(cat "$out/.stamp")" != "$stamp" ]; then
  echo "# compiling the hot path with mypyc (about a minute)..." >&2
  wheels="$(mktemp -d)"
  trap 'rm -rf "$wheels"' EXIT
  (cd "$repo" && PORTWAY_COMPILE=1 "$python" -m pip wheel -q --no-deps \
    --disable-pip-version-check -w "$wheels" . >&2)
  rm -rf "$out.new"
  "$python" -m pip install -q --no-deps --disable-pip-version-check --target "$out.new" \
    "$wheels"/portway-*.whl >&2
  echo "$stamp" >"$out.new/.stamp"
  rm -rf "$out"
  mv "$out.new" "$out"
fi
PYTHONPATH="$out" "$python" -c 'import portway.server.http1 as m, sys
sys.exit(0 if m.__file__.endswith(".so") else "the build in '"$out"' is not compiled")'
if [ "${1:-}" = "--test" ]; then
  shift
  cd "$repo"
  PYTHONPATH="$out" exec "$python" -m pytest -p no:cacheprovider "$@"
fi
echo "$out"
