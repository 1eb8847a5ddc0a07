#!/usr/bin/env bash
# The admission webhook's certificate without cert-manager: a CA of its own and a serving
# certificate for the webhook Service's names, made with openssl, then the two kubectl
# commands that hand them to the cluster (printed, not run).
#
#   scripts/webhook-certs.sh DIR [NAMESPACE]
#
# DIR keeps the CA (ca.crt, ca.key: guard ca.key, it can sign for the webhook) and reuses it
# on every later run, which only makes a new key and certificate (tls.key, tls.crt, valid
# 90 days). To renew, run it again and re-create the Secret: the caBundle stays the same,
# the kubelet updates the mounted files and the webhook serves the new pair without a
# restart. The names must be those of kubernetes-manifests/webhook/base (tests/deploy.rs
# checks that they are).
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 DIR [NAMESPACE]" >&2
    exit 2
fi
dir="$1"
namespace="${2:-secret-sidecar-webhook}"
service=secret-sidecar-webhook
secret=secret-sidecar-webhook-tls
configuration=0-secret-sidecar
days=90

command -v openssl >/dev/null || { echo "webhook-certs: needs openssl" >&2; exit 1; }
mkdir -p "$dir"
umask 077
curve=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)

if [ ! -s "$dir/ca.key" ] || [ ! -s "$dir/ca.crt" ]; then
    openssl req -x509 "${curve[@]}" -days 3650 -keyout "$dir/ca.key" -out "$dir/ca.crt" \
        -subj "/CN=secret-sidecar-webhook-ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    echo "webhook-certs: made a CA in $dir (ca.crt, ca.key)" >&2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat >"$work/ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:$service.$namespace.svc, DNS:$service.$namespace.svc.cluster.local
EOF
openssl req "${curve[@]}" -keyout "$work/tls.key" -out "$work/tls.csr" \
    -subj "/CN=$service.$namespace.svc" 2>/dev/null
openssl x509 -req -in "$work/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$days" -extfile "$work/ext" \
    -out "$work/tls.crt" 2>/dev/null
# Key first, then certificate: a reader between the two sees a pair that does not match
# and keeps the previous one.
mv "$work/tls.key" "$dir/tls.key"
mv "$work/tls.crt" "$dir/tls.crt"
echo "webhook-certs: made $dir/tls.crt and tls.key for $service.$namespace.svc, valid $days days" >&2

ca_bundle="$(base64 -w0 <"$dir/ca.crt")"
cat <<EOF
# After kubectl apply -k kubernetes-manifests/webhook/base:
kubectl -n $namespace create secret tls $secret --cert=$dir/tls.crt --key=$dir/tls.key \\
    --dry-run=client -o yaml | kubectl apply -f -
kubectl patch mutatingwebhookconfiguration $configuration --type=json \\
    -p '[{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "$ca_bundle"}]'
EOF
