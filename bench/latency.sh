#!/usr/bin/env bash
# Round trips under network latency, for every store: secret-sidecar and the contenders
# that apply, each with its identity exchange, at K = 1, 10 and 50 secrets, through a
# loopback proxy that adds a round-trip time to every endpoint and terminates TLS behind
# it (bench/latency/proxy.py). Each tool runs at a high and a low RTT; the difference in
# wall time, divided by what the same difference adds to one echo through the proxy, is
# its count of round trips (bench/latency/run.py says why the low RTT is not 0). Prints
# one Markdown table of round trips beside each store's critical-path minimum; raw
# results stay in bench/results-latency/.
#
#   bench/latency.sh                          RTTs 60 and 120 ms, K = 1 10 50, all stores and tools
#   LATENCY_RTT_MS=200 LATENCY_LOW_RTT_MS=100 bench/latency.sh
#   LATENCY_COUNTS="1 10" LATENCY_STORES="aws azure" bench/latency.sh
#   LATENCY_TOOLS="secret-sidecar curl" bench/latency.sh     leave out boto3 and the aws CLI
#   SECRET_SIDECAR_BIN=path bench/latency.sh  time that binary instead of building one
#   AWS_CLI_MAX_K=50 bench/latency.sh         run the aws CLI at K=50 too (about 7 more minutes)
#
# Stores and identities (each endpoint behind its own proxy port, so no two share a
# connection, as on the internet):
#   aws             IRSA: AssumeRoleWithWebIdentity at LocalStack's STS, then Secrets Manager
#                   (LocalStack), both over TLS
#   azure           workload identity: Entra ID's client-assertion grant, then Key Vault
#                   (testkit's fakes, which serve TLS themselves)
#   gcp-metadata    GKE Workload Identity: the metadata server (plain HTTP), then Secret
#                   Manager over TLS (testkit's fakes)
#   gcp-federation  workload identity federation: Google STS token exchange over TLS with a
#                   file-sourced subject token, then Secret Manager (testkit's fakes)
# Contenders: curl (every store: one process for the identity, one for the reads), boto3
# and the aws CLI (aws), teller is not run here (it has no web-identity support to compare).
#
# Everything listens on and connects to 127.0.0.1 only. The runs take about 8 minutes on
# a quiet 2-core machine, 2 of them the aws CLI (one process per secret, the first of
# which exchanges the token at STS); about 5 without boto3 and the aws CLI
# (LATENCY_TOOLS). The first run also builds the fakes (testkit's bench-fakes, a debug
# build) and a release binary unless SECRET_SIDECAR_BIN is given.
set -euo pipefail
cd "$(dirname "$0")/.."

rtt="${LATENCY_RTT_MS:-120}"
low="${LATENCY_LOW_RTT_MS:-60}"
counts="${LATENCY_COUNTS:-1 10 50}"
stores="${LATENCY_STORES:-aws azure gcp-metadata gcp-federation}"
tools="${LATENCY_TOOLS:-secret-sidecar curl boto3 awscli}"
port="${LOCALSTACK_PORT:-4566}"
results=bench/results-latency
cache="${SECRET_SIDECAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secret-sidecar}"
venv="$cache/bench-venv"

for tool in curl openssl python3; do
    command -v "$tool" >/dev/null || { echo "latency: needs $tool" >&2; exit 1; }
done
if [ ! -x "$venv/bin/aws" ]; then
    echo "== installing the aws CLI and boto3 into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check awscli boto3
fi

work="$(mktemp -d /dev/shm/secret-sidecar-latency.XXXXXX)"
proxy_pid="" fakes_pid="" started=no
cleanup() {
    [ -z "$proxy_pid" ] || kill "$proxy_pid" 2>/dev/null || true
    exec 7>&- 2>/dev/null || true # the fakes serve until their stdin closes
    [ -z "$fakes_pid" ] || kill "$fakes_pid" 2>/dev/null || true
    [ "$started" = no ] || scripts/localstack.sh stop
    rm -rf "$work"
}
trap cleanup EXIT
if ! scripts/localstack.sh status; then scripts/localstack.sh start; started=yes; fi

if [ -n "${SECRET_SIDECAR_BIN:-}" ]; then
    bin="$(realpath "$SECRET_SIDECAR_BIN")"
    echo "== secret-sidecar: $bin (SECRET_SIDECAR_BIN, not rebuilt)"
else
    echo "== building secret-sidecar (release)"
    cargo build --release --locked --quiet
    bin="$(realpath "${CARGO_TARGET_DIR:-target}")/release/secret-sidecar"
fi
echo "== building the protocol fakes (testkit's bench-fakes)"
cargo build --locked --quiet -p testkit --features azure,gcp --bin bench-fakes
fakes="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/bench-fakes"

echo "== seeding K = $counts"
"$venv/bin/python" bench/seed.py "http://127.0.0.1:$port" $counts
mkfifo "$work/fakes-stdin"
"$fakes" "$work" $counts <"$work/fakes-stdin" >"$work/fakes.json" &
fakes_pid=$!
exec 7>"$work/fakes-stdin"

# The benchmark's CA and a server certificate for 127.0.0.1, for the proxy's TLS.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -keyout "$work/ca.key" -out "$work/ca.pem" -subj "/CN=secret-sidecar latency bench CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$work/server.key" -out "$work/server.csr" -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$work/server.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 1 -extfile "$work/server.ext" -out "$work/server.pem" 2>/dev/null

# The projected service account token IRSA mounts (LocalStack does not check signatures).
python3 - "$work/aws-token" <<'PY'
import base64, json, sys, time
part = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
token = ".".join([part({"alg": "RS256", "kid": "bench"}), part({
    "iss": "https://oidc.example.test", "sub": "system:serviceaccount:bench:app",
    "aud": ["sts.amazonaws.com"], "exp": int(time.time()) + 3600}), "c2lnbmF0dXJl"])
open(sys.argv[1], "w").write(token)
PY

for _ in $(seq 100); do [ -s "$work/fakes.json" ] && break; sleep 0.1; done
[ -s "$work/fakes.json" ] || { echo "latency: the fakes did not start" >&2; exit 1; }
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/fakes.json" "$1"; }
cat >"$work/proxy.json" <<JSON
{"rtts_ms": [0, $low, $rtt], "cert": "$work/server.pem", "key": "$work/server.key", "routes": [
  {"name": "echo", "mode": "tcp", "upstream": "echo"},
  {"name": "echo-tls", "mode": "tls", "upstream": "echo"},
  {"name": "aws-sts", "mode": "tls", "upstream": "127.0.0.1:$port"},
  {"name": "aws-sm", "mode": "tls", "upstream": "127.0.0.1:$port"},
  {"name": "entra", "mode": "tcp", "upstream": "127.0.0.1:$(field entra_port)"},
  {"name": "vault", "mode": "tcp", "upstream": "127.0.0.1:$(field vault_port)"},
  {"name": "gcp-metadata", "mode": "tcp", "upstream": "127.0.0.1:$(field metadata_port)"},
  {"name": "gcp-sts", "mode": "tls", "upstream": "127.0.0.1:$(field gcp_sts_port)"},
  {"name": "gcp-sm", "mode": "tls", "upstream": "127.0.0.1:$(field secret_manager_port)"}]}
JSON
# As root, the proxy runs at a real-time priority so that other work on the machine
# delays its timers less (it sleeps between chunks and uses little CPU).
realtime=()
if [ "$(id -u)" = 0 ] && command -v chrt >/dev/null; then realtime=(chrt -f 10); fi
"${realtime[@]}" python3 bench/latency/proxy.py "$work/proxy.json" "$work/ports.json" &
proxy_pid=$!
for _ in $(seq 100); do [ -s "$work/ports.json" ] && break; sleep 0.1; done
[ -s "$work/ports.json" ] || { echo "latency: the proxy did not start" >&2; exit 1; }

rm -rf "$results" && mkdir -p "$results"
python3 bench/latency/calibrate.py "$work/ports.json" "$work/ca.pem" "$low" "$rtt" "$results/calibration.json"

to_json() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1].split()))' "$1"; }
cat >"$work/setup.json" <<JSON
{"ports": "$work/ports.json", "fakes": "$work/fakes.json", "bench_ca": "$work/ca.pem",
 "bin": "$bin", "venv": "$venv", "counts": $(to_json "$counts" | sed 's/"//g'),
 "rtts_ms": [$low, $rtt], "stores": $(to_json "$stores"), "tools": $(to_json "$tools"),
 "runs": {"default": 3, "boto3": 3, "awscli": {"default": 1, "1": 3}},
 "work": "$work", "aws_token": "$work/aws-token"}
JSON
python3 bench/latency/run.py "$work/setup.json" "$results/results.json"

echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "Binary: $bin ($(stat -c %s "$bin") bytes)"
echo
python3 bench/latency/report.py "$results"
