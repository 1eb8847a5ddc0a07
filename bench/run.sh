#!/usr/bin/env bash
# Benchmark secret-sidecar against what users run today, side by side in one run, on
# this machine, against LocalStack on loopback:
#   - the aws CLI, one call per secret (shell-script init containers)
#   - a boto3 script, one process
#   - teller (Rust, one GetSecretValue per secret, one after another), when a teller
#     binary is on PATH or named by TELLER=path; skipped with a message otherwise
#   - one curl process with one kept-alive connection (a raw floor), GetSecretValue
#   - one curl process, BatchGetSecretValue with 20 ids per call (the batch floor)
# and, for Parameter Store (SecureString parameters /bench/K/i, decrypted):
#   - secret-sidecar reading ssm:///bench/K/i
#   - one curl process, one kept-alive connection, GetParameter per parameter (floor)
#   - one curl process, GetParameters with 10 names per call (the batch floor)
# Wall time with hyperfine, CPU time and peak RSS with /usr/bin/time -v, for K = 1, 10
# and 50 secrets. Prints one Markdown table; raw results stay in bench/results/.
#
#   bench/run.sh                 all tools, K = 1 10 50
#   BENCH_COUNTS="1 10" bench/run.sh
#   BENCH_TOOLS="secret-sidecar-ssm curl-ssm-batch curl-ssm" bench/run.sh   some tools only
#   TELLER=~/.cargo/bin/teller bench/run.sh
#   SECRET_SIDECAR_BIN=path bench/run.sh   time that binary instead of building one
#
# teller is not installed by this script: it builds from crates.io in about 17 minutes
# (apt-get install protobuf-compiler; cargo install --locked teller).
set -euo pipefail
cd "$(dirname "$0")/.."

counts="${BENCH_COUNTS:-1 10 50}"
port="${LOCALSTACK_PORT:-4566}"
endpoint="http://127.0.0.1:$port"
results=bench/results
cache="${SECRET_SIDECAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secret-sidecar}"
venv="$cache/bench-venv"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need hyperfine || [ ! -x /usr/bin/time ]; then
    echo "== installing hyperfine and time (Debian packages)"
    apt-get update -qq && apt-get install -y -qq hyperfine time >/dev/null
fi
if [ ! -x "$venv/bin/aws" ]; then
    echo "== installing the aws CLI and boto3 into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check awscli boto3
fi

teller="${TELLER:-$(command -v teller || true)}"
if [ -n "$teller" ] && [ -x "$teller" ]; then
    teller="$(realpath "$teller")"
    echo "== teller: $teller ($("$teller" --version 2>/dev/null || echo 'version unknown'))"
else
    echo "== teller: not found on PATH and TELLER is not set to an executable; its row is skipped"
    echo "   (apt-get install protobuf-compiler; cargo install --locked teller; then TELLER=path)"
    teller=""
fi

started=no
cleanup() { if [ "$started" = yes ]; then scripts/localstack.sh stop; fi; }
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

echo "== seeding K = $counts"
"$venv/bin/python" bench/seed.py "$endpoint" $counts

export AWS_ENDPOINT_URL="$endpoint" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_PAGER="" \
    AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent AWS_EC2_METADATA_DISABLED=true
rm -rf "$results" && mkdir -p "$results"
out="$(mktemp -d /dev/shm/secret-sidecar-bench.XXXXXX)"
trap 'rm -rf "$out"; cleanup' EXIT

# One curl process per run, driven by a config file: one request per block, `next`
# between them, so the connection is kept alive across requests.
curl_config() { # $1 = output prefix, $2 = X-Amz-Target, then one JSON body per request
    local prefix=$1 target=$2 n=0 body service=secretsmanager
    shift 2
    case "$target" in AmazonSSM.*) service=ssm ;; *) target="secretsmanager.$target" ;; esac
    for body in "$@"; do
        [ "$n" = 0 ] || echo next
        cat <<CFG
silent
output = "$out/$prefix-$n"
aws-sigv4 = "aws:amz:us-east-1:$service"
user = "test:test"
header = "Content-Type: application/x-amz-json-1.1"
header = "X-Amz-Target: $target"
data = "${body//\"/\\\"}"
url = "$endpoint/"
CFG
        n=$((n + 1))
    done
}

for k in $counts; do
    ids=(); sidecar=()
    for ((i = 0; i < k; i++)); do ids+=("bench/$k/$i"); sidecar+=(--secret "s$i=aws://bench/$k/$i"); done
    bodies=(); batches=()
    for ((i = 0; i < k; i++)); do bodies+=("{\"SecretId\":\"bench/$k/$i\"}"); done
    for ((start = 0; start < k; start += 20)); do
        list=""
        for ((i = start; i < k && i < start + 20; i++)); do list+="${list:+,}\"bench/$k/$i\""; done
        batches+=("{\"SecretIdList\":[$list]}")
    done
    curl_config curl GetSecretValue "${bodies[@]}" >"$results/curl-$k.args"
    curl_config batch BatchGetSecretValue "${batches[@]}" >"$results/curl-batch-$k.args"
    # Parameter Store: the same K values as SecureString parameters /bench/K/i.
    ssm=(); ssm_bodies=(); ssm_batches=()
    for ((i = 0; i < k; i++)); do
        ssm+=(--secret "s$i=ssm:///bench/$k/$i")
        ssm_bodies+=("{\"Name\":\"/bench/$k/$i\",\"WithDecryption\":true}")
    done
    for ((start = 0; start < k; start += 10)); do
        list=""
        for ((i = start; i < k && i < start + 10; i++)); do list+="${list:+,}\"/bench/$k/$i\""; done
        ssm_batches+=("{\"Names\":[$list],\"WithDecryption\":true}")
    done
    curl_config ssm AmazonSSM.GetParameter "${ssm_bodies[@]}" >"$results/curl-ssm-$k.args"
    curl_config ssm-batch AmazonSSM.GetParameters "${ssm_batches[@]}" >"$results/curl-ssm-batch-$k.args"
    printf '%s\n' "${ids[@]}" >"$results/ids-$k"
    # teller 2.x reads one secret per map and takes its value as a JSON object; each
    # seeded secret holds {"username", "password"}, mapped to S<i>_USERNAME and
    # S<i>_PASSWORD so that all K secrets land in the export under distinct names.
    # Endpoint, region and credentials come from the same environment as the others.
    {
        echo "providers:"
        echo "  aws:"
        echo "    kind: aws_secretsmanager"
        echo "    maps:"
        for ((i = 0; i < k; i++)); do
            printf '      - id: s%d\n        path: bench/%d/%d\n        keys:\n' "$i" "$k" "$i"
            printf '          username: S%d_USERNAME\n          password: S%d_PASSWORD\n' "$i" "$i"
        done
    } >"$results/teller-$k.yml"

    declare -A commands=(
        [secret-sidecar]="$bin --output-dir $out --log-format json ${sidecar[*]}"
        [secret-sidecar-ssm]="$bin --output-dir $out --log-format json ${ssm[*]}"
        [curl-ssm]="curl -K $results/curl-ssm-$k.args"
        [curl-ssm-batch]="curl -K $results/curl-ssm-batch-$k.args"
        [curl]="curl -K $results/curl-$k.args"
        [teller]="$teller -c $results/teller-$k.yml export json"
        [curl-batch]="curl -K $results/curl-batch-$k.args"
        [boto3]="$venv/bin/python bench/boto3_fetch.py $out ${ids[*]}"
        [awscli]="sh -c 'i=0; while read -r id; do $venv/bin/aws secretsmanager get-secret-value --secret-id \$id --query SecretString --output text > $out/cli-\$i; i=\$((i+1)); done < $results/ids-$k'"
    )
    tools=(secret-sidecar curl-batch curl boto3 awscli secret-sidecar-ssm curl-ssm-batch curl-ssm)
    if [ -n "$teller" ]; then
        # Check once, before timing, that teller really read every secret from LocalStack.
        sh -c "${commands[teller]}" >"$out/teller.json" 2>"$results/teller-$k.check.err" || {
            echo "teller failed at K=$k; see $results/teller-$k.check.err" >&2; exit 1; }
        got="$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(1 for key, value in d.items() if key.endswith("_PASSWORD") and value.startswith("bench-password-")))' "$out/teller.json")"
        if [ "$got" != "$k" ]; then
            echo "teller exported $got of $k secrets at K=$k" >&2; exit 1
        fi
        tools=(secret-sidecar curl-batch curl teller boto3 awscli secret-sidecar-ssm curl-ssm-batch curl-ssm)
    fi
    if [ -n "${BENCH_TOOLS:-}" ]; then read -r -a tools <<<"$BENCH_TOOLS"; fi
    for tool in "${tools[@]}"; do
        runs=40
        case "$tool" in awscli) runs=$(( k >= 50 ? 2 : (k >= 10 ? 3 : 5) )) ;; boto3) runs=5 ;; esac
        echo "== K=$k $tool ($runs runs)"
        # --shell=none: through a shell, hyperfine would subtract an estimate of the
        # shell's start-up, itself noisy at these times (the aws CLI loop is its own sh).
        hyperfine --style none --shell=none --warmup 1 --runs "$runs" --export-json "$results/$tool-$k.json" \
            "${commands[$tool]}" >/dev/null 2>"$results/$tool-$k.hyperfine.err" || {
            echo "   failed; see $results/$tool-$k.hyperfine.err"; continue; }
        for n in 1 2 3; do
            /usr/bin/time -v -o "$results/$tool-$k.time.$n" sh -c "${commands[$tool]}" >/dev/null 2>&1
        done
    done
    unset commands
done

echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -sr)"
echo "LocalStack $(curl -s "$endpoint/_localstack/health" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("version","?"))' 2>/dev/null)"
echo "Binary: $(stat -c %s "$bin") bytes ($(numfmt --to=iec "$(stat -c %s "$bin")"))"
echo
python3 bench/report.py "$results" "$counts"
