#!/usr/bin/env bash
# Benchmark Portway side by side with nginx, HAProxy and Python proxies (the shared harness).
#   bench/run.sh                          # quick: 3 rounds x 3 s at 50 connections
#   bench/run.sh --full                   # 3 rounds x 8 s at 50 and 200 connections
#   bench/run.sh --conns 50,200 --path /slow --targets nginx,uvproxy
#   bench/run.sh --build pure             # Portway candidates: compiled, pure or both (default)
# Portway runs twice by default, side by side: "portway" is the mypyc-compiled build
# (bench/build_compiled.sh builds it when the sources changed, about a minute) and "portway-py" the
# pure-Python package from src/. --build is read here; every other argument goes to compare.py
# unchanged (see ../shared/bench/README.md). The Markdown report lands in bench/results/latest.md
# and the raw runs in latest.json, with a timestamped copy of each beside them.
set -euo pipefail
bench="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$bench")"
shared="$repo/../shared/bench"
results="$bench/results"
if [ ! -f "$shared/compare.py" ]; then
  echo "the shared benchmark harness is not at $shared" >&2
  exit 1
fi

# Portway's upstream pool gets what compare.py gives its peers: --upstream-keepalive if set,
# otherwise max(64, largest --conns) (--full means 50,200).
pool_size() {
  local conns="50" keepalive=0 full=0
  while [ "$#" -gt 0 ]; do
    case "$1" in
      --conns) conns="${2:-}"; shift ;;
      --conns=*) conns="${1#*=}" ;;
      --upstream-keepalive) keepalive="${2:-0}"; shift ;;
      --upstream-keepalive=*) keepalive="${1#*=}" ;;
      --full) full=1 ;;
    esac
    shift
  done
  [ "$full" -eq 1 ] && conns="50,200"
  if [ "$keepalive" -gt 0 ]; then
    echo "$keepalive"
    return
  fi
  local largest=64 count
  for count in ${conns//,/ }; do
    [ "$count" -gt "$largest" ] && largest="$count"
  done
  echo "$largest"
}

build="both"
args=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --build) build="${2:-}"; shift 2 ;;
    --build=*) build="${1#*=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
case "$build" in compiled|pure|both) ;; *) echo "--build: compiled, pure or both" >&2; exit 2 ;; esac
set -- ${args[@]+"${args[@]}"}

pool="$(pool_size "$@")"
bash "$shared/setup.sh"

mkdir -p "$results"
stamp="$(date +%Y%m%d-%H%M%S)"
command="exec $(printf '%q' "$bench/candidate.sh") '{listen}' '{backend}' '{run_dir}' $pool"
candidates=()
if [ "$build" != "pure" ]; then
  compiled="$("$bench/build_compiled.sh")"
  candidates+=(--candidate "PORTWAY_BENCH_BUILD=$(printf '%q' "$compiled") $command"
               --candidate-name portway)
fi
if [ "$build" != "compiled" ]; then
  candidates+=(--candidate "$command" --candidate-name "$([ "$build" = pure ] && echo portway \
    || echo portway-py)")
fi
echo "# portway candidates: ${candidates[*]}" >&2
python3 "$shared/compare.py" "${candidates[@]}" \
  --json "$results/$stamp.json" "$@" | tee "$results/$stamp.md"
cp "$results/$stamp.md" "$results/latest.md"
if [ -f "$results/$stamp.json" ]; then
  cp "$results/$stamp.json" "$results/latest.json"
fi
echo "# written: $results/latest.md and latest.json" >&2
