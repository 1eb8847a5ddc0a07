#!/usr/bin/env bash
# The main job, end to end on this machine: start LocalStack (installing it once),
# store a demo secret in it, run secret-sidecar into a tmpfs directory, and show what
# was written (names, sizes, modes; never the values). Stops what it started and
# removes the demo directory, which holds a secret.
set -euo pipefail
cd "$(dirname "$0")/.."

port="${LOCALSTACK_PORT:-4566}"
endpoint="http://127.0.0.1:$port"
out=""
started=no
cleanup() {
    [ -n "$out" ] && rm -rf "$out"
    if [ "$started" = yes ]; then scripts/localstack.sh stop; fi
}
trap cleanup EXIT

if ! scripts/localstack.sh status; then
    scripts/localstack.sh start
    started=yes
fi

echo "== building secret-sidecar"
cargo build --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/debug/secret-sidecar"

echo "== storing the secret demo/db in LocalStack (a random password, never printed)"
# LocalStack does not check request signatures, so a plain JSON call is enough here.
python3 - "$endpoint" <<'PY'
import json, secrets, sys, urllib.request, urllib.error, uuid

def call(action, body):
    request = urllib.request.Request(
        sys.argv[1], data=json.dumps(body).encode(), method="POST",
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"secretsmanager.{action}",
            "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0",
        })
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)

value = json.dumps({"username": "demo", "password": secrets.token_urlsafe(24)})
token = str(uuid.uuid4())  # the idempotency token every SDK sends
try:
    try:
        call("CreateSecret", {"Name": "demo/db", "SecretString": value, "ClientRequestToken": token})
    except urllib.error.HTTPError as err:
        if "ResourceExists" not in err.read().decode(errors="replace"):
            raise
        call("PutSecretValue", {"SecretId": "demo/db", "SecretString": value, "ClientRequestToken": token})
except urllib.error.HTTPError as err:
    sys.exit(f"LocalStack refused the demo secret: HTTP {err.code}: {err.read().decode(errors='replace')}")
PY

if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
    out="$(mktemp -d /dev/shm/secret-sidecar-demo.XXXXXX)"
    extra=()
else
    out="$(mktemp -d)"
    extra=(--allow-non-tmpfs)
    echo "(no tmpfs at /dev/shm here: using $out with --allow-non-tmpfs)"
fi

echo "== running secret-sidecar into $out"
echo "+ AWS_ENDPOINT_URL=$endpoint AWS_REGION=us-east-1 $bin --output-dir $out --secret db.json=aws://demo/db --secret db-password=aws://demo/db#password --mode 0400 ${extra[*]:-}"
AWS_ENDPOINT_URL="$endpoint" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
    "$bin" --output-dir "$out" \
    --secret db.json=aws://demo/db \
    --secret db-password=aws://demo/db#password \
    --mode 0400 "${extra[@]}" 2>&1

echo "== what the application sees in $out (filesystem: $(stat -f -c %T "$out"))"
ls -l "$out"
echo "== the files behind the ..data link"
stat -c '%A  %U:%G  %5s bytes  %n' "$out"/..data/*
echo "== done: the demo directory is removed on exit because it holds a secret"
