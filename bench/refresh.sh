#!/usr/bin/env bash
# Refresh mode's running costs, against LocalStack on loopback, with a release build:
#   idle    CPU used while waiting between cycles: --refresh 60s, K=10, the process's
#           utime+stime (/proc/PID/stat) and its threads' context switches (each a wake-up)
#           over IDLE_SECONDS after the first publish
#   rss     resident memory (VmRSS) after CYCLES no-change cycles at --refresh 100ms, K=10
#           and K=50, and the peak (VmHWM)
#   cycle   one no-change cycle for K=10 and K=50: wall time (the median of the process's
#           own `refresh cycle us=` debug lines) and CPU (utime+stime over the cycles ÷ cycles)
# Prints one Markdown table.
#
#   bench/refresh.sh
#   SECRET_SIDECAR_BIN=path bench/refresh.sh    # time that binary instead of building one
#   CYCLES=300 IDLE_SECONDS=30 bench/refresh.sh
set -euo pipefail
cd "$(dirname "$0")/.."

port="${LOCALSTACK_PORT:-4566}"
endpoint="http://127.0.0.1:$port"
cycles="${CYCLES:-300}"
idle_seconds="${IDLE_SECONDS:-30}"
cache="${SECRET_SIDECAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secret-sidecar}"
venv="$cache/bench-venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check boto3
fi

started=no
cleanup() { if [ "$started" = yes ]; then scripts/localstack.sh stop; fi; }
trap cleanup EXIT
if ! scripts/localstack.sh status; then scripts/localstack.sh start; started=yes; fi

if [ -n "${SECRET_SIDECAR_BIN:-}" ]; then
    bin="$(realpath "$SECRET_SIDECAR_BIN")"
else
    echo "== building secret-sidecar (release)"
    cargo build --release --locked --quiet
    bin="$(realpath "${CARGO_TARGET_DIR:-target}")/release/secret-sidecar"
fi
"$venv/bin/python" bench/seed.py "$endpoint" 10 50

export AWS_ENDPOINT_URL="$endpoint" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test \
    AWS_SECRET_ACCESS_KEY=test AWS_CONFIG_FILE=/nonexistent \
    AWS_SHARED_CREDENTIALS_FILE=/nonexistent AWS_EC2_METADATA_DISABLED=true
tick=$(getconf CLK_TCK)
work="$(mktemp -d /dev/shm/secret-sidecar-refresh-bench.XXXXXX)"
pid=""
finish() { if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; pid=""; }
trap 'finish; rm -rf "$work"; cleanup' EXIT

# start K INTERVAL: runs the sidecar on K secrets into a fresh directory; sets $pid, $log.
start() {
    local k=$1 interval=$2 dir="$work/out-$1-$2" args=()
    mkdir -p "$dir"
    log="$work/log-$1-$2"
    for ((i = 0; i < k; i++)); do args+=(--secret "s$i=aws://bench/$k/$i#password"); done
    RUST_LOG=info,secret_sidecar::refresh=debug "$bin" --output-dir "$dir" "${args[@]}" --refresh "$interval" 2>"$log" &
    pid=$!
    until grep -q 'INFO refreshing' "$log"; do sleep 0.05; done
}
cpu_ms() { awk -v t="$tick" '{print ($14 + $15) * 1000 / t}' "/proc/$pid/stat"; }
status() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$pid/status"; }
# Context switches of all the process's threads: each wake-up of any thread counts.
switches() { cat /proc/"$pid"/task/*/status | awk '/ctxt_switches:/ {n += $2} END {print n}'; }
cycles_done() { grep -c 'refresh cycle' "$log" || true; }

echo "== idle: K=10, --refresh 60s, $idle_seconds s of waiting"
start 10 60s
sleep 1
before=$(cpu_ms); woke_before=$(switches)
sleep "$idle_seconds"
after=$(cpu_ms); woke_after=$(switches)
idle_cpu=$(awk -v a="$before" -v b="$after" 'BEGIN {print b - a}')
idle_rss=$(status VmRSS)
finish

rows=()
for k in 10 50; do
    echo "== no-change cycles: K=$k, --refresh 100ms, $cycles cycles"
    start "$k" 100ms
    until [ "$(cycles_done)" -ge 5 ]; do sleep 0.1; done
    c0=$(cycles_done); t0=$(cpu_ms)
    until [ "$(cycles_done)" -ge $((c0 + cycles)) ]; do sleep 0.2; done
    c1=$(cycles_done); t1=$(cpu_ms)
    rss=$(status VmRSS); hwm=$(status VmHWM)
    finish
    wall=$(grep 'refresh cycle' "$log" | tail -n "$cycles" | sed 's/.*us=\([0-9]*\).*/\1/' | sort -n |
        awk '{a[NR] = $1} END {m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.2f", m / 1000}')
    cpu=$(awk -v a="$t0" -v b="$t1" -v n=$((c1 - c0)) 'BEGIN {printf "%.2f", (b - a) / n}')
    changed=$(grep -c 'changed=true' "$log" || true)
    rows+=("| K=$k | $wall ms | $cpu ms | $((rss / 1024)).$(((rss % 1024) * 10 / 1024)) MiB | $((hwm / 1024)).$(((hwm % 1024) * 10 / 1024)) MiB | $changed |")
done

echo
echo "Idle (K=10, --refresh 60s): ${idle_cpu} ms of CPU (clock tick $((1000 / tick)) ms) and $((woke_after - woke_before)) thread wake-ups in ${idle_seconds} s of waiting; RSS $((idle_rss / 1024)).$(((idle_rss % 1024) * 10 / 1024)) MiB"
echo
echo "| set | no-change cycle, wall (median) | CPU per cycle | RSS after $cycles cycles | peak RSS | cycles that published |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
