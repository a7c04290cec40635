#!/usr/bin/env bash
# What observability costs on the hot path: Portway with it all off, with the defaults (access
# log to a file) and with it all on (access log, every request traced and exported over OTLP/HTTP,
# admin listener), side by side with nginx in the same rounds of the shared harness.
#   bench/overhead.sh [compare.py args, e.g. --conns 50,200 --rounds 3]
set -euo pipefail
bench="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
shared="$bench/../../shared/bench"
results="$bench/results"
bash "$shared/setup.sh" >/dev/null
mkdir -p "$results"
cand="$(printf '%q' "$bench/candidate.sh")"
# "direct" first: rounds rotate the order cyclically, so whatever follows portway-on runs while
# its worker finishes making the spans of its turn (up to tracing.MAX_BACKLOG exchanges, about a
# second of CPU 1). direct (wrk to the backend, on CPU 0) is the one target that does not mind.
python3 "$shared/compare.py" --targets direct,nginx \
  --candidate "exec $cand '{listen}' '{backend}' '{run_dir}' 256 off" --candidate-name portway-off \
  --candidate "exec $cand '{listen}' '{backend}' '{run_dir}' 256 default" --candidate-name portway-default \
  --candidate "exec $cand '{listen}' '{backend}' '{run_dir}' 256 on" --candidate-name portway-on \
  "$@" | tee "$results/overhead.md"
