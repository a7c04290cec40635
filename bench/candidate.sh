#!/usr/bin/env bash
# The benchmark's Portway: writes a config forwarding everything to the harness's backend, then
# execs `portway run` in the foreground (the harness stops it by its process group).
#   candidate.sh LISTEN BACKEND RUN_DIR MAX_IDLE
# LISTEN and BACKEND are HOST:PORT; MAX_IDLE is the upstream pool size, at least the benchmark's
# connection count: a smaller pool closes and reopens upstream connections under load, which
# measures connection setup rather than proxying (see ../shared/bench/README.md).
set -euo pipefail
if [ "$#" -ne 4 ]; then
  echo "usage: $0 LISTEN BACKEND RUN_DIR MAX_IDLE" >&2
  exit 2
fi
listen="$1" backend="$2" run_dir="$3" max_idle="$4"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
portway="$repo/.venv/bin/portway"
[ -x "$portway" ] || portway="portway"

mkdir -p "$run_dir"
config="$run_dir/portway.yaml"
cat >"$config" <<YAML
# Written by bench/candidate.sh for one benchmark run.
listeners:
  - address: "$listen"
services:
  bench:
    instances: ["$backend"]
    pool:
      max_idle: $max_idle
routes:
  - path: /
    service: bench
YAML
exec "$portway" run --config "$config" --listen "$listen" --workers 1
