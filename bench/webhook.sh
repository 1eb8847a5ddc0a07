#!/usr/bin/env bash
# The admission webhook under load on this machine: the release binary serving TLS on
# loopback, a kubectl-rendered pod with three secret annotations sent as an AdmissionReview
# by bench/webhook_load.py over kept-alive connections (as the API server does).
#
#   - steady: 200 requests/s (then 400) for 30 s, open loop; p50/p90/p99/max latency
#     measured from each request's scheduled start;
#   - max: 4 connections back to back for 15 s: the throughput;
#   - the webhook's RSS after the runs, and its peak (VmHWM).
#
#   bench/webhook.sh                      builds the release binary if needed
#   SECRET_SIDECAR_BIN=path bench/webhook.sh
#   WEBHOOK_BENCH_SECONDS=4 bench/webhook.sh   a quick check of the script
#
# The load generator is Python and shares the 2 cores with the webhook: the latencies
# include its own time per request. Logs at the default level (info), JSON, as deployed.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${SECRET_SIDECAR_BIN:-${CARGO_TARGET_DIR:-target}/release/secret-sidecar}"
if [ -z "${SECRET_SIDECAR_BIN:-}" ]; then
    echo "== cargo build --release" >&2
    cargo build --release --locked --quiet
fi
port="${WEBHOOK_BENCH_PORT:-18443}"
seconds="${WEBHOOK_BENCH_SECONDS:-30}"   # each steady run; the max run takes half
command -v kubectl >/dev/null || { echo "webhook bench: needs kubectl" >&2; exit 1; }
command -v openssl >/dev/null || { echo "webhook bench: needs openssl" >&2; exit 1; }

work="$(mktemp -d)"
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# A CA and a serving certificate for 127.0.0.1.
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${ec[@]}" -days 1 -keyout "$work/ca.key" -out "$work/ca.crt" \
    -subj "/CN=bench-ca" -addext "basicConstraints=critical,CA:TRUE" 2>/dev/null
openssl req "${ec[@]}" -keyout "$work/tls.key" -out "$work/tls.csr" -subj "/CN=webhook" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$work/ext"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
    -CAcreateserial -days 1 -extfile "$work/ext" -out "$work/tls.crt" 2>/dev/null

# The pod of a kubectl-rendered Deployment, opted in, as the API server sends it.
kubectl create deployment shop --image=registry.example.com/shop:1.4.2 \
    --dry-run=client -o json >"$work/deployment.json"
python3 - "$work/deployment.json" "$work/review.json" <<'PY'
import json, sys
deployment = json.load(open(sys.argv[1]))
template = deployment["spec"]["template"]
pod = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"generateName": "shop-7d4b9c6f5-", "namespace": "team-a",
                    "labels": dict(template["metadata"]["labels"],
                                   **{"secret-sidecar.io/inject": "true"}),
                    "annotations": {
                        "secret-sidecar.io/secret-db-password": "aws://prod/db#password",
                        "secret-sidecar.io/secret-api-key": "aws://prod/api-key",
                        "secret-sidecar.io/secret-tls.key": "aws://prod/tls#key",
                        "secret-sidecar.io/aws-region": "eu-west-1"}},
       "spec": dict(template["spec"], serviceAccountName="shop",
                    securityContext={"fsGroup": 65532})}
kind = {"group": "", "version": "v1", "kind": "Pod"}
resource = {"group": "", "version": "v1", "resource": "pods"}
review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
          "request": {"uid": "0f0c3a1e-bench", "kind": kind, "resource": resource,
                      "requestKind": kind, "requestResource": resource, "name": "",
                      "namespace": "team-a", "operation": "CREATE",
                      "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                      "object": pod, "oldObject": None, "dryRun": False}}
json.dump(review, open(sys.argv[2], "w"))
PY

SECRET_SIDECAR_LOG_FORMAT=json "$bin" webhook --listen "127.0.0.1:$port" \
    --tls-cert-file "$work/tls.crt" --tls-key-file "$work/tls.key" \
    --image registry.example.com/secret-sidecar:0.1.0 2>"$work/webhook.log" &
pid=$!
for _ in $(seq 100); do
    curl -fsS --cacert "$work/ca.crt" "https://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS --cacert "$work/ca.crt" "https://127.0.0.1:$port/readyz" >/dev/null
rss_kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$pid/status"; }
start_rss="$(rss_kib VmRSS)"

load() { python3 bench/webhook_load.py --port "$port" --cafile "$work/ca.crt" --body "$work/review.json" "$@"; }
results="$work/results.jsonl"
echo "== steady 200/s, $seconds s" >&2
load --mode steady --rate 200 --duration "$seconds" --connections 8 >>"$results"
echo "== steady 400/s, $seconds s" >&2
load --mode steady --rate 400 --duration "$seconds" --connections 8 >>"$results"
echo "== max, 4 connections, $((seconds / 2)) s" >&2
load --mode max --duration "$((seconds / 2))" --connections 4 >>"$results"
end_rss="$(rss_kib VmRSS)"
peak_rss="$(rss_kib VmHWM)"

python3 - "$results" <<'PY'
import json, sys
print("| run | requests | errors | achieved rate/s | p50 ms | p90 ms | p99 ms | max ms |")
print("|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["mode"] == "steady":
        name = "steady %g/s" % r["target_rate"]
    else:
        name = "max, %d connections" % r["connections"]
    print("| %s | %d | %d | %s | %s | %s | %s | %s |" % (
        name, r["count"], r["errors"], r["rate"], r["p50_ms"], r["p90_ms"],
        r["p99_ms"], r["max_ms"]))
PY
echo
echo "webhook RSS: $((start_rss / 1024)) MiB after start-up, $((end_rss / 1024)) MiB after the runs, peak (VmHWM) $((peak_rss / 1024)) MiB ($peak_rss KiB)"
