#!/usr/bin/env bash
# The IMDS proxy's cached-token latency and memory: a release binary as `imds-proxy`
# against a local Entra ID stub (HTTPS, self-signed), loaded by bench/imds_load.py with
# N requests one after another and N spread over 8 threads, each on a new connection as
# a legacy IMDS caller makes them. Prints latency percentiles (and the client's own floor,
# against a trivial server) and the proxy's peak and current RSS. Targets (issue 17):
# p99 under 1 ms on a cached token, RSS under 12 MiB.
#
#   bench/imds-proxy.sh                          builds the release binary (Azure only)
#   SECRET_SIDECAR_BIN=path bench/imds-proxy.sh  times that binary instead
#   BENCH_REQUESTS=20000 bench/imds-proxy.sh
set -euo pipefail
cd "$(dirname "$0")/.."

requests="${BENCH_REQUESTS:-5000}"
bin="${SECRET_SIDECAR_BIN:-}"
if [ -z "$bin" ]; then
    echo "== building the release binary (Azure only)" >&2
    cargo build --release --locked --quiet --no-default-features --features azure
    bin="${CARGO_TARGET_DIR:-target}/release/secret-sidecar"
fi
work="$(mktemp -d)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# A CA and a server certificate for 127.0.0.1 (rustls refuses a CA as the end entity).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=bench-ca -keyout "$work/ca-key.pem" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$work/key.pem" -out "$work/req.pem" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$work/ext"
openssl x509 -req -in "$work/req.pem" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
    -CAcreateserial -days 1 -extfile "$work/ext" -out "$work/cert.pem" 2>/dev/null
python3 bench/imds_load.py entra "$work/cert.pem" "$work/key.pem" "$work/entra-port" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/entra-port" ] && break; sleep 0.1; done
printf 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9.c2ln' >"$work/token"

port=18000
AZURE_CLIENT_ID=5c0a5e1b-3f6e-4b8e-9a2d-1f7c2b9e4d11 \
AZURE_TENANT_ID=72f988bf-86f1-41af-91ab-2d7cd011db47 \
AZURE_FEDERATED_TOKEN_FILE="$work/token" \
AZURE_AUTHORITY_HOST="https://127.0.0.1:$(cat "$work/entra-port")/" \
    env -u SECRET_SIDECAR_BIN "$bin" --ca-file "$work/ca.pem" imds-proxy --listen "127.0.0.1:$port" \
    --resource https://vault.azure.net 2>"$work/proxy.log" &
proxy=$!
pids+=("$proxy")
sleep 0.5
kill -0 "$proxy" 2>/dev/null || { cat "$work/proxy.log" >&2; exit 1; }
ready=no
for _ in $(seq 100); do
    if "$bin" imds-proxy --probe --listen "127.0.0.1:$port" --resource https://vault.azure.net 2>/dev/null; then
        ready=yes; break
    fi
    sleep 0.1
done
[ "$ready" = yes ] || { echo "the proxy did not get ready:" >&2; cat "$work/proxy.log" >&2; exit 1; }
rss() { awk -v f="$1" '$1 == f":" {print $2}' "/proc/$proxy/status"; }
idle="$(rss VmRSS)"
results="$(python3 bench/imds_load.py load "$port" "$requests" 8)"
echo "binary: $bin ($(stat -c %s "$bin") bytes)"
echo "proxy RSS: idle after the first token ${idle} KiB; after the load ${rss_now:-$(rss VmRSS)} KiB; peak (VmHWM) $(rss VmHWM) KiB"
echo "latency, $requests cached-token requests each (new connection per request): $results"
