#!/usr/bin/env bash
# The benchmark's Portway: writes a config forwarding everything to the harness's backend, then
# execs `portway run` in the foreground (the harness stops it by its process group).
#   candidate.sh LISTEN BACKEND RUN_DIR MAX_IDLE [OBSERVABILITY]
# OBSERVABILITY: "default" (access log to a file, no tracing), "off" (no access log, no admin
# listener) or "on" (access log to a file, every request traced and exported over OTLP/HTTP to a
# local sink, admin listener).
# LISTEN and BACKEND are HOST:PORT; MAX_IDLE is the upstream pool size, at least the benchmark's
# connection count: a smaller pool closes and reopens upstream connections under load, which
# measures connection setup rather than proxying (see ../shared/bench/README.md).
# Environment: PORTWAY_WORKERS (default 1) worker processes; PORTWAY_BENCH_BUILD, a folder holding
# a compiled build of the package (bench/build_compiled.sh) that is imported instead of src/.
set -euo pipefail
if [ "$#" -lt 4 ] || [ "$#" -gt 5 ]; then
  echo "usage: $0 LISTEN BACKEND RUN_DIR MAX_IDLE [default|off|on]" >&2
  exit 2
fi
listen="$1" backend="$2" run_dir="$3" max_idle="$4" mode="${5:-default}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
portway="$repo/.venv/bin/portway"
[ -x "$portway" ] || portway="portway"

mkdir -p "$run_dir"
config="$run_dir/portway-${mode}-$$.yaml"  # candidates start side by side: one file each
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
admin=(--admin none)
case "$mode" in
  default)
    printf 'server:\n  access_log: {path: "%s/access-'"$mode"'.log"}\n' "$run_dir" >>"$config" ;;
  off)
    printf 'server:\n  access_log: {enabled: false}\n' >>"$config" ;;
  on)
    sink_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    python3 "$repo/bench/otlp_sink.py" "$sink_port" &
    printf 'server:\n  access_log: {path: "%s/access-'"$mode"'.log"}\n  tracing: {enabled: true, otlp_endpoint: "http://127.0.0.1:%s"}\n' \
      "$run_dir" "$sink_port" >>"$config"
    admin=(--admin 127.0.0.1:0) ;;
  *) echo "unknown observability mode: $mode" >&2; exit 2 ;;
esac
if [ -n "${PORTWAY_BENCH_BUILD:-}" ]; then
  export PYTHONPATH="$PORTWAY_BENCH_BUILD${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$portway" run --config "$config" --listen "$listen" --workers "${PORTWAY_WORKERS:-1}" \
  "${admin[@]}"
