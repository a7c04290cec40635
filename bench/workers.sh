#!/usr/bin/env bash
# --workers 2 against --workers 1 on this machine, unpinned: the kernel places the workers, wrk
# (2 threads) and the backend. Both Portway candidates are the compiled build (build_compiled.sh);
# uvproxy-2w (two bare Python processes on one SO_REUSEPORT port) and nginx run beside them.
#   bench/workers.sh                    # 3 rounds x 8 s at 50 and 200 connections
#   bench/workers.sh --conns 50 --duration 3
# Arguments go to compare.py. The report lands in bench/results/workers.md (and workers.json).
set -euo pipefail
bench="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
shared="$(dirname "$bench")/../shared/bench"
results="$bench/results"
bash "$shared/setup.sh"
compiled="$("$bench/build_compiled.sh")"
mkdir -p "$results"
command="exec $(printf '%q' "$bench/candidate.sh") '{listen}' '{backend}' '{run_dir}' 200"
build="PORTWAY_BENCH_BUILD=$(printf '%q' "$compiled")"
python3 "$shared/compare.py" --no-pin --targets nginx,uvproxy,uvproxy-2w \
  --candidate "$build PORTWAY_WORKERS=1 $command" --candidate-name portway-1w \
  --candidate "$build PORTWAY_WORKERS=2 $command" --candidate-name portway-2w \
  --conns 50,200 --duration 8 --rounds 3 --upstream-keepalive 200 \
  --json "$results/workers.json" "$@" | tee "$results/workers.md"
