#!/usr/bin/env bash
# Release-build secret-sidecar with all providers and with each provider alone (all:
# the default features, the webhook mode included; no-webhook: every provider without
# it), and print the size of each binary (the release profile strips them). Each fat-LTO build
# takes minutes; the builds share one target directory, so dependencies compiled with
# the same features are reused.
#
#   bench/sizes.sh                                   all, aws, azure, gcp
#   bench/sizes.sh all no-webhook                    what the webhook mode costs
#   SIZE_TARGET_DIR=/tmp/sizes bench/sizes.sh aws    one build, own target dir
set -euo pipefail
cd "$(dirname "$0")/.."

target="${SIZE_TARGET_DIR:-${CARGO_TARGET_DIR:-target}}"
builds=("$@")
[ "${#builds[@]}" -gt 0 ] || builds=(all aws azure gcp)

rows=()
for build in "${builds[@]}"; do
    case "$build" in
        all) features=() ;;
        no-webhook) features=(--no-default-features --features aws,azure,gcp) ;;
        aws | azure | gcp) features=(--no-default-features --features "$build") ;;
        *) echo "unknown build '$build' (all, no-webhook, aws, azure, gcp)" >&2; exit 2 ;;
    esac
    echo "== building $build (release)" >&2
    CARGO_TARGET_DIR="$target" cargo build --release --locked --quiet "${features[@]}"
    size="$(stat -c %s "$target/release/secret-sidecar")"
    rows+=("| $build | $size bytes ($(numfmt --to=iec-i --format=%.1f "$size")B) |")
done

echo "| build | stripped size |"
echo "|---|---|"
printf '%s\n' "${rows[@]}"
